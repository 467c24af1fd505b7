"""``dagster-wandb-secure keys ...``: create, list, rotate, retire, revoke and share keys.

Staged rotation is the default workflow: ``keys generate`` (a verify-only key), ``keys
export-public`` / ``keys import-public`` on every reader, then ``keys promote``. ``keys rotate``
does generate + promote at once for a single machine.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..core.algorithms import ALGORITHMS, DEFAULT_ALGORITHM, REGISTRY, algorithm
from ..core.errors import KeyStoreError
from ._common import (
    EXIT_FAILED,
    JsonOption,
    KeyStoreOption,
    emit_json,
    handle_errors,
    open_key_store,
    out_console,
    parse_duration,
    usage_error,
)

app = typer.Typer(
    name="keys",
    help="Manage the key store: generate, list, promote, rotate, retire, revoke, destroy, "
    "export and import keys. Staged rotation: generate -> export-public/import-public on "
    "readers -> promote.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

ALG_HELP = (
    "Algorithm: " + " or ".join(f"{name} ({cls.summary})" for name, cls in REGISTRY.items()) + "."
)
# the options of a command that creates a key (init, generate)
NewKeyAlgOption = typer.Option(DEFAULT_ALGORITHM, "--alg", help=ALG_HELP)
ExpiresInOption = typer.Option(None, "--expires-in", help="Key lifetime, e.g. 90d.")
PassphraseEnvOption = typer.Option(
    None,
    "--passphrase-env",
    help="Encrypt the private key with the passphrase in this variable.",
)


def _record_doc(record: Any) -> dict[str, Any]:
    doc = dict(record.to_json())
    doc.pop("passphrase_env", None)
    doc["passphrase_env"] = record.passphrase_env
    return doc


def _report(as_json: bool, kind: str, message: str, body: dict[str, Any]) -> None:
    if as_json:
        emit_json(kind, {"ok": True, **body})
    else:
        out_console().print(message, markup=False)


def _check_alg(alg: str | None) -> str | None:
    if alg is not None and alg not in ALGORITHMS:
        raise typer.BadParameter(
            f"{alg!r} is not one of {', '.join(ALGORITHMS)}", param_hint="--alg"
        )
    return alg


@app.command("init")
@handle_errors
def init_cmd(
    key_store: Path = KeyStoreOption,
    alg: str = NewKeyAlgOption,
    no_key: bool = typer.Option(False, "--no-key", help="Create the folder only, no first key."),
    expires_in: str | None = ExpiresInOption,
    passphrase_env: str | None = PassphraseEnvOption,
    json_out: bool = JsonOption,
) -> None:
    """Create a key store (folders 0700) and, unless --no-key, its first (primary) key."""
    _check_alg(alg)
    expires = parse_duration(expires_in)
    ks = open_key_store(key_store, create=True)
    kid = None
    if not no_key and not ks.records():
        kid = ks.generate(alg, expires_in=expires, passphrase_env=passphrase_env)
    existing = len(ks.records())
    msg = f"key store ready at {ks.path}"
    msg += f"; primary key {kid} ({alg})" if kid else f"; it holds {existing} key(s)"
    _report(json_out, "keys-init", msg, {"key_store": str(ks.path), "kid": kid, "keys": existing})


@app.command("generate")
@handle_errors
def generate_cmd(
    key_store: Path = KeyStoreOption,
    alg: str = NewKeyAlgOption,
    expires_in: str | None = ExpiresInOption,
    passphrase_env: str | None = PassphraseEnvOption,
    json_out: bool = JsonOption,
) -> None:
    """Generate a key. The store's first key becomes primary; later ones are verify-only until
    `keys promote` (staged rotation: distribute the public key to readers first)."""
    _check_alg(alg)
    expires = parse_duration(expires_in)
    ks = open_key_store(key_store, create=True)
    kid = ks.generate(alg, expires_in=expires, passphrase_env=passphrase_env)
    record = ks.get(kid)
    msg = f"generated {alg} key {kid} ({record.status.value})"
    if record.status.value != "primary":
        msg += (
            f"; next: `keys export-public {kid}` for readers, then `keys promote {kid}`"
            if algorithm(alg).has_public_half()
            else f"; next: `keys promote {kid}`"
        )
    _report(json_out, "keys-generate", msg, {"kid": kid, "key": _record_doc(record)})


@app.command("list")
@handle_errors
def list_cmd(key_store: Path = KeyStoreOption, json_out: bool = JsonOption) -> None:
    """List every key with its status, algorithm, dates and fingerprint."""
    ks = open_key_store(key_store)
    records = sorted(ks.records(), key=lambda r: (r.created_at, r.kid))
    if json_out:
        emit_json(
            "keys-list",
            {"ok": True, "key_store": str(ks.path), "keys": [_record_doc(r) for r in records]},
        )
        return
    table = Table(title=f"keys in {ks.path}")
    for col in ("kid", "alg", "status", "created", "not after", "private", "origin", "fingerprint"):
        table.add_column(col)
    for r in records:
        table.add_row(
            r.kid,
            r.alg,
            r.status.value + (f" ({r.revoked_reason})" if r.revoked_reason else ""),
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            r.not_after.strftime("%Y-%m-%d %H:%M") if r.not_after else "-",
            "yes" if r.has_private else "no",
            r.origin,
            r.fingerprint[:16],
        )
    out_console().print(table)
    if not records:
        out_console().print("no keys yet: run `dagster-wandb-secure keys init`", markup=False)


@app.command("promote")
@handle_errors
def promote_cmd(
    kid: str = typer.Argument(..., help="Key id to make primary."),
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Make KID the primary; the old primary becomes verify-only (old artifacts still verify)."""
    ks = open_key_store(key_store)
    ks.promote(kid)
    _report(json_out, "keys-promote", f"{kid} is now the primary key", {"kid": kid})


@app.command("rotate")
@handle_errors
def rotate_cmd(
    key_store: Path = KeyStoreOption,
    alg: str | None = typer.Option(None, "--alg", help=ALG_HELP + " Default: the primary's."),
    expires_in: str | None = typer.Option(None, "--expires-in", help="New key's lifetime."),
    grace: str | None = typer.Option(
        None, "--grace", help="Old primary stops verifying after this (e.g. 30d). Default: never."
    ),
    passphrase_env: str | None = typer.Option(None, "--passphrase-env"),
    json_out: bool = JsonOption,
) -> None:
    """Generate a key and promote it at once (single machine). The old primary becomes
    verify-only. With readers elsewhere prefer staged rotation: generate, distribute, promote."""
    _check_alg(alg)
    ks = open_key_store(key_store)
    old = next((r.kid for r in ks.records() if r.status.value == "primary"), None)
    kid = ks.rotate(
        alg,
        expires_in=parse_duration(expires_in),
        passphrase_env=passphrase_env,
        grace=parse_duration(grace),
    )
    msg = f"rotated: {kid} is the primary" + (f"; {old} is now verify-only" if old else "")
    _report(json_out, "keys-rotate", msg, {"kid": kid, "previous": old})


@app.command("retire")
@handle_errors
def retire_cmd(
    kid: str = typer.Argument(...), key_store: Path = KeyStoreOption, json_out: bool = JsonOption
) -> None:
    """Make KID verify-only (it never signs again; it verifies until its not-after date)."""
    ks = open_key_store(key_store)
    ks.retire(kid)
    _report(json_out, "keys-retire", f"{kid} is verify-only", {"kid": kid})


@app.command("revoke")
@handle_errors
def revoke_cmd(
    kid: str = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the key store)."),
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Revoke KID now: it verifies and signs nothing. Re-sign what must survive with
    `resign --from KID` (only where the ledger's digest matches)."""
    if not reason.strip():
        usage_error("--reason must not be empty", as_json=json_out)
    ks = open_key_store(key_store)
    ks.revoke(kid, reason)
    _report(json_out, "keys-revoke", f"{kid} is revoked: {reason.strip()}", {"kid": kid})


@app.command("destroy")
@handle_errors
def destroy_cmd(
    kid: str = typer.Argument(...),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Delete KID's secret material for good; it verifies nothing afterwards."""
    ks = open_key_store(key_store)
    record = ks.get(kid)
    if not yes:
        if json_out or not sys.stdin.isatty():
            usage_error(
                f"destroying {kid} cannot be undone; pass --yes to confirm non-interactively",
                as_json=json_out,
            )
        if not typer.confirm(
            f"Destroy {record.alg} key {kid} ({record.status.value})? Artifacts signed by it "
            "will no longer verify",
            default=False,
        ):
            out_console().print("nothing destroyed", markup=False)
            raise typer.Exit(EXIT_FAILED)
    ks.destroy(kid)
    _report(json_out, "keys-destroy", f"{kid} is destroyed", {"kid": kid})


@app.command("export-public")
@handle_errors
def export_public_cmd(
    kid: str = typer.Argument(...),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Print (or write) KID's public key bundle for readers (Ed25519 only)."""
    ks = open_key_store(key_store)
    bundle = ks.export_public(kid)
    if output is not None:
        from ..core.fsutil import atomic_write

        atomic_write(output, bundle, mode=0o644)
        _report(
            json_out, "keys-export-public", f"wrote {output}", {"kid": kid, "output": str(output)}
        )
    elif json_out:
        emit_json(
            "keys-export-public", {"ok": True, "kid": kid, "output": None, "pem": bundle.decode()}
        )
    else:
        sys.stdout.write(bundle.decode("ascii"))


@app.command("import-public")
@handle_errors
def import_public_cmd(
    file: Annotated[Path, typer.Argument(help="A bundle from `keys export-public` or a PEM.")],
    kid: str | None = typer.Option(None, "--kid", help="Key id for a bare PEM."),
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Trust another writer's public key (verify-only, no secret)."""
    from ..core.fsutil import open_no_follow

    try:
        with open_no_follow(file) as fh:
            data = fh.read(64 * 1024 + 1)
    except FileNotFoundError:
        raise KeyStoreError(
            f"no file {file}", hint="give the path of an exported public key"
        ) from None
    if len(data) > 64 * 1024:
        raise KeyStoreError(f"{file} is larger than 64 KiB; it is not a public key bundle")
    ks = open_key_store(key_store, create=True)
    new_kid = ks.import_public(data, kid=kid)
    _report(
        json_out,
        "keys-import-public",
        f"trusting public key {new_kid} (verify-only)",
        {"kid": new_kid},
    )
