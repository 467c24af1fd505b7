"""``audit``: every artifact version in a store, its signature status, and a report."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..core.fsutil import atomic_write
from ..maintenance.audit import (
    DEFAULT_FAIL_ON,
    STATUS_DESCRIPTIONS,
    STATUS_ORDER,
    AuditEntry,
    AuditReport,
    Status,
    audit_links,
    audit_store,
)
from ..maintenance.report import render_html
from ._common import (
    EXIT_FAILED,
    KeyStoreOption,
    LedgerModeOption,
    LedgerOption,
    emit_json,
    err_console,
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

FORMATS = ("table", "json", "html", "markdown")
STATUS_NAMES = [s.value for s in STATUS_ORDER]
FormatName = StrEnum("FormatName", {name: name for name in FORMATS})  # type: ignore[misc]
FormatChoice = typer.Option(
    FormatName("table"),
    "--format",
    "-f",
    help="Report format.",
    case_sensitive=False,
)
OutputOption = typer.Option(
    None, "--output", "-o", help="Write the report to this file (json, html or markdown)."
)
FailOnOption = typer.Option(
    [],
    "--fail-on",
    help="Exit 1 if any version has one of these statuses (repeatable or comma-separated; "
    "'any' = every status but valid/adopted/signature-ok/superseded; 'none' = report only). Default: "
    "any.",
)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)


def _fail_on(values: list[str], as_json: bool) -> set[Status]:
    """The statuses that make the audit exit 1: ``DEFAULT_FAIL_ON`` unless ``--fail-on`` says
    otherwise (``none``: report only)."""
    if not values:
        return set(DEFAULT_FAIL_ON)
    wanted: set[Status] = set()
    for value in values:
        for part in value.split(","):
            part = part.strip().lower().replace("_", "-").replace(" ", "-")
            if not part:
                continue
            if part == "none":
                continue
            if part == "any":
                wanted |= set(DEFAULT_FAIL_ON)
            elif part in STATUS_NAMES:
                wanted.add(Status(part))
            else:
                usage_error(
                    f"--fail-on {part!r} is not a status; use any, none or one of "
                    + ", ".join(STATUS_NAMES),
                    as_json=as_json,
                )
    return wanted


def render_markdown(report: AuditReport, links: list[dict[str, Any]] | None = None) -> str:
    lines = [
        "# Signature audit",
        "",
        f"- generated: {report.generated_at}",
        f"- store: {report.store}",
        f"- key store: {report.key_store}",
        f"- mode: {_mode_label(report)}",
        f"- versions: {len(report.entries)}",
        "",
        "## Summary by status",
        "",
        "| status | versions |",
        "|---|---:|",
    ]
    lines += [f"| {s} | {n} |" for s, n in report.counts_by_status.items() if n]
    lines += ["", "## Summary by key", "", "| key id | statuses |", "|---|---|"]
    for kid, counts in report.counts_by_key.items():
        lines.append(f"| `{kid}` | " + ", ".join(f"{s}: {n}" for s, n in counts.items()) + " |")
    lines += [
        "",
        "## Versions",
        "",
        "| status | artifact | version | aliases | type | serializer | key id | alg | signed at "
        "| digest | reason |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(value: Any) -> str:
        return str(value or "").replace("|", "\\|").replace("\n", " ")

    for e in report.entries:
        status = e.status.value + (f" ({e.origin})" if e.origin not in (None, "signed") else "")
        lines.append(
            "| "
            + " | ".join(
                cell(v)
                for v in (
                    status,
                    f"{e.entity}/{e.project}/{e.name}",
                    e.version,
                    ", ".join(e.aliases),
                    e.type,
                    e.serializer,
                    e.key_id,
                    e.alg,
                    e.signed_at,
                    (e.digest or "")[:16],
                    e.reason,
                )
            )
            + " |"
        )
    lines += ["", "## Registry link statements", ""]
    if links:
        lines += ["| status | registry version | aliases | linked artifact | key id | reason |",
                  "|---|---|---|---|---|---|"]
        for row in links:
            lines.append("| " + " | ".join(cell(v) for v in (
                row.get("status"), row.get("registry"), ", ".join(row.get("aliases") or ()),
                row.get("source"), row.get("key_id"), row.get("reason"))) + " |")
    else:
        lines.append("none in this store")
    return "\n".join(lines) + "\n"


def _mode_label(report: AuditReport) -> str:
    if report.deep:
        return "deep (every payload re-hashed)"
    return "fast (signatures and sizes only; payloads were NOT re-hashed)"


def _status_label(e: AuditEntry) -> str:
    return e.status.value + (f" ({e.origin})" if e.origin not in (None, "signed") else "")


def _seconds(stamp: str | None) -> str:
    """``2024-05-01T12:00:00.123456Z`` -> ``2024-05-01 12:00:00Z`` (second precision)."""
    if not stamp:
        return ""
    text = stamp.replace("T", " ")
    head, dot, rest = text.partition(".")
    if dot:
        tail = rest.lstrip("0123456789")
        text = head + tail
    return text


def needs_attention(report: AuditReport) -> list[AuditEntry]:
    """Versions with a failing status (anything but ``valid``, ``adopted``, ``signature-ok``,
    ``superseded``)."""
    return [e for e in report.entries if e.status in DEFAULT_FAIL_ON]


def verdict_line(report: AuditReport) -> str:
    """``3 of 40 versions need attention`` (or ``all 40 versions are valid``); a fast audit
    adds how many versions were only ``signature-ok`` (payloads not re-hashed)."""
    total = len(report.entries)
    if total == 0:
        return "no versions found"
    bad = len(needs_attention(report))
    unhashed = sum(1 for e in report.entries if e.status is Status.SIGNATURE_OK)
    replaced = sum(1 for e in report.entries if e.status is Status.SUPERSEDED)
    also = f"; {replaced} superseded (originals replaced by re-signed copies)" if replaced else ""
    if bad == 0 and unhashed == 0 and replaced == 0:
        return f"all {total} versions are valid" if total != 1 else "the 1 version is valid"
    if bad == 0 and unhashed == 0:
        return f"all {total - replaced} current versions are valid{also}"
    noun = "version" if total == 1 else "versions"
    line = f"{bad} of {total} {noun} {'needs' if bad == 1 else 'need'} attention{also}"
    if unhashed:
        line += f"; {unhashed} signature-ok only (payloads not re-hashed: run without --fast)"
    return line


def _print_table(report: AuditReport) -> None:
    con = out_console()
    con.print(f"audit of {report.store}", markup=False)
    con.print(f"mode: {_mode_label(report)}", markup=False)
    places = {(e.entity, e.project) for e in report.entries}
    one_place = len(places) == 1
    if one_place:
        entity, project = next(iter(places))
        con.print(f"entity: {entity}   project: {project}", markup=False)
    summary = Table(title="by status")
    summary.add_column("status")
    summary.add_column("versions", justify="right")
    for s, n in report.counts_by_status.items():
        if n:
            summary.add_row(s, str(n))
    summary.add_row("total", str(len(report.entries)))
    con.print(summary)
    by_key = Table(title="by key")
    by_key.add_column("key id", no_wrap=True)
    by_key.add_column("statuses")
    for kid, counts in report.counts_by_key.items():
        by_key.add_row(kid, ", ".join(f"{s}: {n}" for s, n in counts.items()))
    con.print(by_key)
    table = Table(title="versions")
    has_reasons = any(e.reason for e in report.entries)
    if has_reasons:
        table.add_column("#", justify="right")
    table.add_column("name:vN", no_wrap=True)
    if not one_place:
        table.add_column("entity/project", no_wrap=True)
    for col in ("status", "aliases", "type", "serializer"):
        table.add_column(col)
    table.add_column("key id", no_wrap=True)
    table.add_column("alg")
    table.add_column("signed at", no_wrap=True)
    table.add_column("digest", no_wrap=True)
    reasons: list[str] = []
    for e in report.entries:
        mark = ""
        if e.reason:
            reasons.append(f"[{len(reasons) + 1}] {e.name}:{e.version}: {e.reason}")
            mark = f"[{len(reasons)}]"
        row = [mark] if has_reasons else []
        row.append(f"{e.name}:{e.version}")
        if not one_place:
            row.append(f"{e.entity}/{e.project}")
        row += [
            _status_label(e),
            ", ".join(e.aliases),
            e.type,
            e.serializer or "",
            e.key_id or "",
            e.alg or "",
            _seconds(e.signed_at),
            (e.digest or "")[:12],
        ]
        table.add_row(*row)
    con.print(table)
    if reasons:
        con.print("reasons:", markup=False)
        for line in reasons:
            con.print(f"  {line}", markup=False)
    if not report.deep and report.entries:
        con.print(
            f"note: {STATUS_DESCRIPTIONS[Status.SIGNATURE_OK]}", markup=False
        )
    con.print(verdict_line(report), markup=False)


def _write(output: Path | None, text: str) -> None:
    if output is None:
        sys.stdout.write(text)
        return

    atomic_write(output, text.encode("utf-8"), mode=0o644)


def _progress_bar(stack: ExitStack) -> Callable[[int, int], None]:
    """A transient progress bar on stderr, closed with ``stack``; returns its update callback.

    Redrawn by each update (at most ~200 per audit), not by rich's refresh thread: with another
    thread running the audit would not fork its worker processes (``audit._fork_is_safe``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = stack.enter_context(
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console(),
            transient=True,
            auto_refresh=False,
        )
    )
    task = bar.add_task("auditing", total=None)

    def tick(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total, refresh=True)

    return tick


@handle_errors
def audit_cmd(
    key_store: Path = KeyStoreOption,
    ledger: str | None = LedgerOption,
    ledger_mode: str | None = LedgerModeOption,
    store: StoreChoice = StoreKindOption,
    store_dir: Path | None = StoreDirOption,
    entity: str | None = EntityOption,
    project: str | None = ProjectOption,
    name: str | None = NameOption,
    format_: FormatName = FormatChoice,
    output: Path | None = OutputOption,
    fast: bool = typer.Option(
        False,
        "--fast",
        help="Check signatures, file lists and sizes only; payloads are not re-hashed and a "
        "passing version is 'signature-ok', never 'valid'.",
    ),
    deep: bool = typer.Option(
        False, "--deep", help="Re-hash every payload (the default; kept for old scripts)."
    ),
    fail_on: list[str] = FailOnOption,
    json_out: bool = typer.Option(False, "--json", help="Same as --format json."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bar (only on a terminal, never with JSON)."
    ),
) -> None:
    """Audit every artifact version in a store: name, version, aliases, type, serializer, key,
    algorithm, signed-at, digest and a status (valid, adopted, signature-ok, tampered, unsigned,
    unknown-key, revoked-key, expired-key, context-mismatch, rolled-back, replayed, forked,
    legacy-format, missing-from-ledger, error). By default every payload is re-hashed (on all
    cores) and the exit code is 1 when any version is not valid or adopted; --fast checks
    signatures and sizes only. Nothing is loaded or created."""
    format_ = str(getattr(format_, "value", format_))
    store = str(getattr(store, "value", store))
    if json_out:
        format_ = "json"
    if format_ not in FORMATS:
        usage_error(f"--format {format_!r} is not one of {', '.join(FORMATS)}", as_json=json_out)
    as_json = format_ == "json"
    if fast and deep:
        usage_error("--fast and --deep exclude each other", as_json=as_json)
    deep = not fast
    wanted = _fail_on(fail_on, as_json)
    ks = open_key_store(key_store, ledger=ledger, ledger_mode=ledger_mode)
    art_store, label = open_cli_store(store, store_dir, entity, project)
    filt_entity, filt_project = listing_filter(store, entity, project)

    show_bar = progress and not as_json and err_console().is_terminal
    with ExitStack() as stack:
        tick: Callable[[int, int], None] | None = None
        if show_bar:
            tick = _progress_bar(stack)
        report = audit_store(
            art_store,
            ks,
            deep=deep,
            entity=filt_entity,
            project=filt_project,
            name=name,
            progress=tick,
            store_label=label,
        )

    failing = report.failing(wanted) if wanted else []
    links = _registry_rows(art_store, ks)
    failing_links = [r for r in links if _link_status(r) in wanted]
    if not as_json and format_ != "table":
        err_console().print(verdict_line(report), markup=False)
    if format_ == "json":

        doc = report.to_json()
        doc["fail_on"] = sorted(s.value for s in wanted)
        doc["failed"] = len(failing) + len(failing_links)
        doc["ok"] = not failing and not failing_links
        doc["registry_links"] = links
        doc["verdict"] = verdict_line(report)
        doc["payloads_rehashed"] = report.deep
        doc["needs_attention"] = [e.qualified_name for e in needs_attention(report)]
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        if output is None:
            emit_json("audit", {k: v for k, v in doc.items() if k != "schema"})
        else:
            _write(output, text)
    elif format_ == "html":

        _write(output, render_html(report, links=links))
    elif format_ == "markdown":
        _write(output, render_markdown(report, links))
    else:
        if output is not None:
            usage_error("--output needs --format json, html or markdown")
        _print_table(report)
    if output is not None and not as_json:
        err_console().print(f"wrote {format_} report to {output}", markup=False)
    if failing_links and not as_json:
        err_console().print(
            f"audit failed: {len(failing_links)} registry link statement(s): "
            + ", ".join(f"{r['registry']} ({r['status']}: {r.get('reason', '')})"
                        for r in failing_links[:10]),
            markup=False,
        )
    if failing_links and not failing:
        raise typer.Exit(EXIT_FAILED)
    if failing:
        if not as_json:
            counts: dict[str, int] = {}
            for e in failing:
                counts[e.status.value] = counts.get(e.status.value, 0) + 1
            names = ", ".join(f"{e.name}:{e.version} ({e.status.value})" for e in failing[:10])
            more = f" and {len(failing) - 10} more" if len(failing) > 10 else ""
            err_console().print(
                f"audit failed: {len(failing)} version(s) with "
                + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))
                + f": {names}{more} (see --fail-on; `--fail-on none` reports only)",
                markup=False,
            )
        raise typer.Exit(EXIT_FAILED)


def _registry_rows(art_store: Any, ks: Any) -> list[dict[str, Any]]:
    """``audit_links`` rows of the store's model registry folder (local store, W&B offline
    mirror); none for a store without a local folder."""
    root = getattr(art_store, "local_dir", None) or getattr(art_store, "root", None)
    if root is None:
        return []
    return audit_links(Path(root), ks)


def _link_status(row: dict[str, Any]) -> Status:
    try:
        return Status(row["status"])
    except ValueError:
        return Status.ERROR
