"""``inspect PATH`` (an envelope header, explicitly UNVERIFIED) and ``verify PATH`` (one
envelope file, or one downloaded artifact folder checked against its signed manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..core.envelope import format_time, is_envelope, read_header_unverified, verify_path
from ..core.errors import SecureArtifactError, SignatureVerificationError, UnsafePathError
from ..core.fsutil import open_no_follow
from ..core.manifest import verify_manifest
from ..maintenance.audit import collect_folder, verification_policy
from ._common import (
    EXIT_FAILED,
    JsonOption,
    KeyStoreOption,
    LedgerOption,
    emit_json,
    error_doc,
    handle_errors,
    open_key_store,
    out_console,
)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
    app.command("verify")(verify_cmd)


def _header_doc(header: Any) -> dict[str, Any]:
    doc = header.as_dict()
    doc["verified"] = header.verified
    return doc


def _inspect_file(path: Path) -> dict[str, Any]:

    with open_no_follow(path) as fh:
        prefix = fh.read(16)
    if not is_envelope(prefix):
        kind = "raw pickle stream" if prefix[:1] == b"\x80" else "not an envelope"
        if prefix[:4] == b"PK\x03\x04":
            kind = "zip file (not an envelope)"
        return {"path": str(path), "envelope": False, "verified": False, "kind": kind}
    info = read_header_unverified(path)
    return {
        "path": str(path),
        "envelope": True,
        "verified": False,
        "kind": "envelope",
        "header": info["header"],
        "header_length": info["header_length"],
        "signature_length": info["signature_length"],
    }


@handle_errors
def inspect_cmd(
    path: Annotated[Path, typer.Argument(help="An envelope file, or a folder of them.")],
    json_out: bool = JsonOption,
) -> None:
    """Print envelope headers WITHOUT verifying them: nothing shown here is trustworthy until
    `verify` says so."""
    if path.is_symlink():
        raise UnsafePathError(f"{path} is a symlink; refusing to follow it")
    if path.is_dir():
        files = sorted(collect_folder(path).items())
        items = []
        for rel, full in files:
            try:
                items.append({**_inspect_file(full), "path": rel})
            except SecureArtifactError as exc:
                items.append(
                    {
                        "path": rel,
                        "envelope": False,
                        "verified": False,
                        "kind": "malformed envelope",
                        "error": error_doc(exc),
                    }
                )
    else:
        items = [_inspect_file(path)]
    if json_out:
        emit_json("inspect", {"ok": True, "verified": False, "files": items})
        return
    con = out_console()
    con.print(
        "UNVERIFIED: headers below were parsed but NOT checked; do not trust them. "
        "Run `dagster-wandb-secure verify` for a verdict.",
        markup=False,
    )
    for item in items:
        con.print(f"\n{item['path']}: {item['kind']} (unverified)", markup=False)
        if "error" in item:
            con.print(f"  {item['error']['message']}", markup=False)
        header = item.get("header")
        if header:
            for key in sorted(header):
                con.print(
                    f"  {key}: {header[key]!r}"
                    if isinstance(header[key], dict)
                    else f"  {key}: {header[key]}",
                    markup=False,
                )


@handle_errors
def verify_cmd(
    path: Annotated[Path, typer.Argument(help="An envelope file or a downloaded artifact folder.")],
    artifact: str | None = typer.Option(None, "--artifact", help="Expected artifact name."),
    type_: str | None = typer.Option(None, "--type", help="Expected artifact type."),
    partition: str | None = typer.Option(None, "--partition", help="Expected partition key."),
    fast: bool = typer.Option(False, "--fast", help="Check signatures and sizes, skip hashing."),
    key_store: Path = KeyStoreOption,
    ledger: str | None = LedgerOption,
    json_out: bool = JsonOption,
) -> None:
    """Verify one envelope file, or an artifact folder against its signed manifest, and print
    the verdict. Exit 1 when it does not verify. Nothing is deserialized."""

    ks = open_key_store(key_store, ledger=ledger)
    expected: dict[str, str | None] = {}
    if artifact is not None:
        expected["artifact"] = artifact
    if type_ is not None:
        expected["type"] = type_
    if partition is not None:
        expected["partition"] = partition
    policy = verification_policy()
    label = artifact or str(path)
    try:
        if path.is_symlink():
            raise UnsafePathError(f"{path} is a symlink; refusing to follow it", artifact=label)
        if path.is_dir():
            files = collect_folder(path)
            vm = verify_manifest(
                files, key_store=ks, expected_context=expected, policy=policy, deep=not fast
            )
            header = vm.header
            listed = sorted(vm.entries)
            kind = "artifact folder"
        else:
            header = verify_path(
                path, key_store=ks, expected_context=expected or None, policy=policy, deep=not fast
            )
            listed = [path.name]
            kind = "envelope"
    except SignatureVerificationError as exc:
        exc.with_location(artifact=label)
        if json_out:
            emit_json(
                "verify",
                {
                    "ok": False,
                    "verdict": "failed",
                    "path": str(path),
                    "deep": not fast,
                    "error": error_doc(exc),
                },
            )
        else:
            typer.echo(f"FAILED: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    record = ks.get(header.kid)
    if json_out:
        emit_json(
            "verify",
            {
                "ok": True,
                "verdict": "valid",
                "path": str(path),
                "kind": kind,
                "deep": not fast,
                "key_status": record.status.value,
                "header": _header_doc(header),
                "files": listed,
            },
        )
        return
    table = Table(title=f"VALID {kind}: {path}", show_header=False)
    table.add_row("key id", f"{header.kid} ({record.status.value})")
    table.add_row("algorithm", header.alg)
    table.add_row("signed at", format_time(header.signed_at))
    table.add_row("serializer", header.serializer)
    table.add_row("context", ", ".join(f"{k}={v}" for k, v in sorted(header.context.items())))
    table.add_row(f"payload {header.digest_alg}", header.payload_digest)
    table.add_row("files", ", ".join(listed))
    table.add_row("mode", "fast (signatures and sizes)" if fast else "deep (every byte hashed)")
    out_console().print(table)
