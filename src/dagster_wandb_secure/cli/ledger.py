"""``ledger status`` and ``ledger migrate``: see and move the digest ledger (SQLite or shared)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..core.ledger_api import LedgerError, ledger_status, open_ledger, ping, redact
from ..core.ledger_migrate import migrate_ledger
from ._common import KeyStoreOption, LedgerOption, emit_json, handle_errors, out_console

app = typer.Typer(
    help="The digest ledger: its backend, schema version and counts; copy it into PostgreSQL.",
    no_args_is_help=True,
)


@app.command("status")
@handle_errors
def status_cmd(
    key_store: Path = KeyStoreOption,
    ledger: str | None = LedgerOption,
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Show the ledger's backend, location (never a password), schema version and counts."""

    opened = open_ledger(ledger, key_store.expanduser())
    try:
        status = ledger_status(opened)
    finally:
        opened.close()
    if json_out:
        emit_json("ledger-status", {"ok": True, **status})
        return
    console = out_console()
    for name in ("backend", "location", "schema", "schema_version", "signatures", "artifacts",
                 "marks", "sequences", "history_marks", "manifests"):
        if status.get(name) is not None:
            console.print(f"{name}: {status[name]}", markup=False)


@app.command("migrate")
@handle_errors
def migrate_cmd(
    source: str = typer.Option(
        ..., "--from", help="The ledger to copy: an SQLite file (keys/ledger.sqlite3) or a URL."
    ),
    target: str = typer.Option(
        ...,
        "--to",
        help="The ledger to copy into (postgresql://...).",
        envvar="DAGSTER_WANDB_SECURE_LEDGER",
    ),
    json_out: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Copy every signature, alias mark and signed-history record (sequences, history marks,
    seen manifests) of --from into --to. Idempotent: a second run copies nothing. The source
    is only read."""

    if not (source.startswith(("sqlite:", "postgres")) or "://" in source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise LedgerError(f"no ledger file at {path}", hint="give the key store's ledger.sqlite3")
        source = f"sqlite:{path}"
    src = open_ledger(source, Path("."))
    dst = open_ledger(target, Path("."))
    try:
        ping(dst)
        result = migrate_ledger(src, dst)
    finally:
        src.close()
        dst.close()
    if json_out:
        emit_json("ledger-migrate", {"ok": True, "to": redact(target), **result.to_json()})
        return
    out_console().print(
        f"copied {result.signatures_copied} signature row(s) ({result.signatures_skipped} "
        f"already there, {result.versions_attached} version(s) attached) and "
        f"{result.marks_copied} alias mark(s); history: {result.sequences_raised} sequence(s) "
        f"raised, {result.history_marks_advanced} mark(s) advanced, {result.manifests_copied} "
        f"manifest(s) copied into {redact(target)}",
        markup=False,
    )
