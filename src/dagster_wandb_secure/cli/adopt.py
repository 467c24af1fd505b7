"""``adopt``: migrate legacy unsigned upstream pickles, after a static scan, on confirmation."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from ..core.errors import SecureArtifactError
from ..maintenance.adopt import adopt_version, find_candidates
from ._common import (
    EXIT_FAILED,
    DigestOption,
    KeyStoreOption,
    LedgerOption,
    emit_json,
    err_console,
    error_doc,
    handle_errors,
    open_key_store,
    out_console,
    usage_error,
)
from ._stores import (
    EntityOption,
    NameOption,
    ProjectOption,
    StoreChoice,
    StoreDirOption,
    StoreKindOption,
    listing_filter,
    open_cli_store,
)

OVERRIDE_FLAG = "--i-accept-the-risk-of-running-flagged-pickles"

VersionOption = typer.Option(None, "--version", help="Only this version (vN).")
AllVersionsOption = typer.Option(
    False, "--all-versions", help="Also versions `latest` does not point to (oldest first)."
)
YesOption = typer.Option(False, "--yes", "-y", help="Adopt clean artifacts without asking.")
OverrideOption = typer.Option(
    False,
    OVERRIDE_FLAG,
    help="Adopt artifacts the static scan FLAGGED. Dangerous: signing them makes every reader "
    "trust them.",
)
AssetKeyOption = typer.Option(
    None,
    "--asset-key",
    help="Asset key to bind in the signed context (default: the artifact name; '' for an op "
    "output).",
)
PartitionOption = typer.Option(None, "--partition", help="Partition key to bind, if any.")


def register(app: typer.Typer) -> None:
    app.command("adopt")(adopt_cmd)


@handle_errors
def adopt_cmd(
    key_store: Path = KeyStoreOption,
    ledger: str | None = LedgerOption,
    digest_algorithm: str = DigestOption,
    store: StoreChoice = StoreKindOption,
    store_dir: Path | None = StoreDirOption,
    entity: str | None = EntityOption,
    project: str | None = ProjectOption,
    name: str | None = NameOption,
    version: str | None = VersionOption,
    all_versions: bool = AllVersionsOption,
    scan_only: bool = typer.Option(False, "--scan-only", help="Scan and report; change nothing."),
    yes: bool = YesOption,
    accept_flagged: bool = OverrideOption,
    asset_key: str | None = AssetKeyOption,
    partition: str | None = PartitionOption,
    json_out: bool = typer.Option(False, "--json", help="JSON output (needs --yes to adopt)."),
) -> None:
    """Scan unsigned legacy artifacts (output.pickle/.dill/.cloudpickle/.joblib) statically with
    fickling - nothing is loaded - show the findings, and re-publish clean ones as new signed
    versions after confirmation. Flagged ones need the loudly named override flag."""

    ks = open_key_store(key_store, ledger=ledger)
    art_store, label = open_cli_store(store, store_dir, entity, project)
    filt_entity, filt_project = listing_filter(store, entity, project)
    cands = find_candidates(
        art_store, entity=filt_entity, project=filt_project, name=name, version=version
    )
    if not all_versions and version is None:
        cands = [c for c in cands if "latest" in c.version.aliases]
    cands.sort(key=lambda c: (c.version.name, "latest" in c.version.aliases, c.version.version))
    if not json_out:
        _print_candidates(cands, label)
    results: list[dict[str, object]] = []
    refused = 0
    for cand in cands:
        doc = cand.as_dict()
        if scan_only or not cand.adoptable:
            doc["outcome"] = "scanned" if cand.adoptable else "not-adoptable"
            results.append(doc)
            continue
        if cand.flagged and not accept_flagged:
            doc["outcome"] = "refused-flagged"
            refused += 1
            results.append(doc)
            if not json_out:
                err_console().print(
                    f"refused {doc['artifact']}:{doc['version']}: the scan flagged it "
                    f"(override: {OVERRIDE_FLAG})",
                    markup=False,
                )
            continue
        if not yes:
            if json_out or not sys.stdin.isatty():
                usage_error("adopting needs confirmation: pass --yes", as_json=json_out)
            warn = " FLAGGED by the scan!" if cand.flagged else ""
            if not typer.confirm(
                f"Sign {doc['artifact']}:{doc['version']} ({cand.serializer}) as a new version?"
                + warn,
                default=False,
            ):
                doc["outcome"] = "declined"
                results.append(doc)
                continue
        try:
            new = adopt_version(
                art_store,
                ks,
                cand,
                allow_flagged=accept_flagged,
                asset_key=(asset_key or None) if asset_key is not None else cand.version.name,
                partition=partition,
                digest_alg=digest_algorithm,
            )
        except SecureArtifactError as exc:
            doc["outcome"] = "refused"
            doc["error"] = error_doc(exc)
            refused += 1
            results.append(doc)
            if not json_out:
                err_console().print(f"error: {exc}", markup=False)
            continue
        doc["outcome"] = "adopted"
        doc["new_version"] = new.version_label
        results.append(doc)
        if not json_out:
            out_console().print(
                f"adopted {doc['artifact']}:{doc['version']} as {new.version_label} "
                f"(signed by {ks.primary().kid})",
                markup=False,
            )
    if json_out:
        emit_json("adopt", {"ok": refused == 0, "store": label, "candidates": results})
    elif not cands:
        out_console().print("no unsigned legacy artifacts found", markup=False)
    if refused:
        raise typer.Exit(EXIT_FAILED)


def _print_candidates(cands: list, label: str) -> None:  # type: ignore[type-arg]
    table = Table(title=f"unsigned legacy artifacts in {label} (static scan, nothing loaded)")
    for col in ("artifact", "aliases", "payload", "scan", "findings"):
        table.add_column(col)
    for c in cands:
        av = c.version
        scan = ", ".join(f"{s.path}: {s.severity}" for s in c.scans) or "-"
        findings = "; ".join(f for s in c.scans for f in s.findings)[:300] or (c.problem or "")
        table.add_row(
            f"{av.entity}/{av.project}/{av.name}:{av.version_label}",
            ", ".join(av.aliases),
            c.payload or "-",
            ("FLAGGED " if c.flagged else "clean ") + scan,
            findings,
        )
    if cands:
        out_console().print(table)
