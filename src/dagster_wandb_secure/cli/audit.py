"""``audit``: every artifact version in a store, its signature status, and a report."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ..maintenance.audit import STATUS_ORDER, AuditReport, Status, audit_store
from ._common import (
    EXIT_FAILED,
    KeyStoreOption,
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
    StoreDirOption,
    StoreKindOption,
    listing_filter,
    open_cli_store,
)

FORMATS = ("table", "json", "html", "markdown")
STATUS_NAMES = [s.value for s in STATUS_ORDER]


OutputOption = typer.Option(None, "--output", "-o", help="Write the report to this file.")
FailOnOption = typer.Option(
    [],
    "--fail-on",
    help="Exit 1 if any version has this status (repeatable, comma-separated, or 'any').",
)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)


HISTORY_FAILURES = frozenset(
    {Status.ROLLED_BACK, Status.REPLAYED, Status.FORKED, Status.LEGACY_FORMAT}
)


def _fail_on(values: list[str], as_json: bool) -> set[Status]:
    wanted: set[Status] = set()
    for value in values:
        for part in value.split(","):
            part = part.strip().lower().replace("_", "-").replace(" ", "-")
            if not part:
                continue
            if part == "any":
                wanted |= {s for s in Status if s not in (Status.VALID, Status.ADOPTED)}
            elif part in STATUS_NAMES:
                wanted.add(Status(part))
            else:
                usage_error(
                    f"--fail-on {part!r} is not a status; use any or one of "
                    + ", ".join(STATUS_NAMES),
                    as_json=as_json,
                )
    return wanted


def render_markdown(report: AuditReport) -> str:
    lines = [
        "# Signature audit",
        "",
        f"- generated: {report.generated_at}",
        f"- store: {report.store}",
        f"- key store: {report.key_store}",
        f"- mode: {'deep' if report.deep else 'fast'}",
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
    return "\n".join(lines) + "\n"


def _print_table(report: AuditReport) -> None:
    con = out_console()
    summary = Table(title=f"audit of {report.store} ({'deep' if report.deep else 'fast'})")
    summary.add_column("status")
    summary.add_column("versions", justify="right")
    for s, n in report.counts_by_status.items():
        if n:
            summary.add_row(s, str(n))
    summary.add_row("total", str(len(report.entries)))
    con.print(summary)
    by_key = Table(title="by key")
    by_key.add_column("key id")
    by_key.add_column("statuses")
    for kid, counts in report.counts_by_key.items():
        by_key.add_row(kid, ", ".join(f"{s}: {n}" for s, n in counts.items()))
    con.print(by_key)
    table = Table(title="versions")
    for col in (
        "status",
        "artifact",
        "aliases",
        "type",
        "serializer",
        "key id",
        "alg",
        "signed at",
        "digest",
        "reason",
    ):
        table.add_column(col)
    for e in report.entries:
        status = e.status.value + (f" ({e.origin})" if e.origin not in (None, "signed") else "")
        table.add_row(
            status,
            f"{e.entity}/{e.project}/{e.name}:{e.version}",
            ", ".join(e.aliases),
            e.type,
            e.serializer or "",
            e.key_id or "",
            e.alg or "",
            e.signed_at or "",
            (e.digest or "")[:12],
            e.reason or "",
        )
    con.print(table)


def _write(output: Path | None, text: str) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    from ..core.fsutil import atomic_write

    atomic_write(output, text.encode("utf-8"), mode=0o644)


def _progress_bar(stack: ExitStack) -> Callable[[int, int], None]:
    """A transient progress bar on stderr, closed with ``stack``; returns its update callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = stack.enter_context(
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console(),
            transient=True,
        )
    )
    task = bar.add_task("auditing", total=None)

    def tick(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return tick


@handle_errors
def audit_cmd(
    key_store: Path = KeyStoreOption,
    store: str = StoreKindOption,
    store_dir: Path | None = StoreDirOption,
    entity: str | None = EntityOption,
    project: str | None = ProjectOption,
    name: str | None = NameOption,
    format_: str = typer.Option("table", "--format", "-f", help="table, json, html or markdown."),
    output: Path | None = OutputOption,
    deep: bool = typer.Option(False, "--deep", help="Re-hash every payload (slower)."),
    fail_on: list[str] = FailOnOption,
    json_out: bool = typer.Option(False, "--json", help="Same as --format json."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Progress bar (only on a terminal, never with JSON)."
    ),
) -> None:
    """Audit every artifact version in a store: name, version, aliases, type, serializer, key,
    algorithm, signed-at, digest and a status (valid, adopted, tampered, unsigned, unknown-key,
    revoked-key, expired-key, context-mismatch, rolled-back, replayed, forked, legacy-format,
    missing-from-ledger, error).
    Fast mode checks signatures and sizes; --deep re-hashes every payload. Nothing is loaded."""
    if json_out:
        format_ = "json"
    if format_ not in FORMATS:
        usage_error(f"--format {format_!r} is not one of {', '.join(FORMATS)}", as_json=json_out)
    as_json = format_ == "json"
    wanted = _fail_on(fail_on, as_json)
    ks = open_key_store(key_store)
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

    # without --fail-on, a broken signed history still fails the audit
    failing = report.failing(wanted or HISTORY_FAILURES)
    if format_ == "json":
        import json

        doc = report.to_json()
        doc["fail_on"] = sorted(s.value for s in (wanted or HISTORY_FAILURES))
        doc["failed"] = len(failing)
        doc["ok"] = not failing
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        if output is None:
            emit_json("audit", {k: v for k, v in doc.items() if k != "schema"})
        else:
            _write(output, text)
    elif format_ == "html":
        from ..maintenance.report import render_html

        _write(output, render_html(report))
    elif format_ == "markdown":
        _write(output, render_markdown(report))
    else:
        if output is not None:
            usage_error("--output needs --format json, html or markdown")
        _print_table(report)
    if output is not None and not as_json:
        err_console().print(f"wrote {format_} report to {output}", markup=False)
    if failing:
        if not as_json:
            counts: dict[str, int] = {}
            for e in failing:
                counts[e.status.value] = counts.get(e.status.value, 0) + 1
            err_console().print(
                f"audit failed: {len(failing)} version(s) with "
                + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))
                + " (--fail-on)",
                markup=False,
            )
        raise typer.Exit(EXIT_FAILED)
