"""``resign --from KID``: re-publish artifacts of a retired or revoked key, signed by the
primary, after verifying them (revoked keys: only where the ledger's digest matches)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..maintenance.resign import resign_from
from ._common import (
    EXIT_FAILED,
    DigestOption,
    KeyStoreOption,
    LedgerOption,
    emit_json,
    handle_errors,
    open_key_store,
    out_console,
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

FromOption = typer.Option(..., "--from", help="Key id whose artifacts are re-signed.")


def register(app: typer.Typer) -> None:
    app.command("resign")(resign_cmd)


@handle_errors
def resign_cmd(
    from_kid: str = FromOption,
    key_store: Path = KeyStoreOption,
    ledger: str | None = LedgerOption,
    digest_algorithm: str = DigestOption,
    store: StoreChoice = StoreKindOption,
    store_dir: Path | None = StoreDirOption,
    entity: str | None = EntityOption,
    project: str | None = ProjectOption,
    name: str | None = NameOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check and list; publish nothing."),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Re-sign, as new versions signed by the primary, the aliased versions signed by --from
    KID. Each is verified first (deep); for a revoked/destroyed/expired key every digest must
    match the ledger's record from signing time, so tampered data is never laundered.
    Exit 1 if any version was refused."""

    ks = open_key_store(key_store, ledger=ledger)
    art_store, label = open_cli_store(store, store_dir, entity, project)
    filt_entity, filt_project = listing_filter(store, entity, project)
    results = resign_from(
        art_store,
        ks,
        from_kid,
        entity=filt_entity,
        project=filt_project,
        name=name,
        dry_run=dry_run,
        digest_alg=digest_algorithm,
    )
    refused = [r for r in results if r.outcome == "refused"]
    if json_out:
        emit_json(
            "resign",
            {
                "ok": not refused,
                "from": from_kid,
                "to": ks.primary().kid,
                "store": label,
                "dry_run": dry_run,
                "results": [r.as_dict() for r in results],
            },
        )
    else:
        table = Table(title=f"resign from {from_kid} to {ks.primary().kid} in {label}")
        for col in ("artifact", "aliases", "outcome", "check", "new version", "reason"):
            table.add_column(col)
        for r in results:
            d = r.as_dict()
            table.add_row(
                f"{d['artifact']}:{d['version']}",
                ", ".join(d["aliases"]),
                r.outcome,
                r.check or "",
                r.new_version or "",
                r.reason or "",
            )
        out_console().print(table)
        if not results:
            out_console().print(f"no versions signed by {from_kid}", markup=False)
    if refused:
        raise typer.Exit(EXIT_FAILED)
