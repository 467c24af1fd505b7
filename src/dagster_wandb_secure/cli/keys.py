"""``dagster-wandb-secure keys ...``: create, list, rotate, retire, revoke and share keys.

Staged rotation is the default workflow: ``keys generate`` (a verify-only key), ``keys
export-public`` / ``keys import-public`` on every reader, then ``keys promote``, ``resign`` and
``keys retire OLD --grace``. ``keys rotate`` does generate + promote at once for a single machine.
Every hint a ``keys`` command prints names the key store the user gave (``-k PATH``).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.table import Table

from ..core.algorithms import ALGORITHMS, DEFAULT_ALGORITHM, REGISTRY, algorithm
from ..core.errors import KeyStoreError, SecureArtifactError
from ..core.fsutil import PRIVATE_FILE_MODE, atomic_write, open_no_follow
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
GraceOption = typer.Option(
    None,
    "--grace",
    help="How long the old key keeps verifying, e.g. 30d (it verifies nothing afterwards).",
)
YesOption = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")

P = ParamSpec("P")
R = TypeVar("R")
DEFAULT_KEY_STORE = Path("keys")  # KeyStoreOption's default
KEY_STORE_ENV = "DAGSTER_WANDB_SECURE_KEY_STORE"  # KeyStoreOption's variable
_COMMAND_IN_HINT = re.compile(r"`((?:dagster-wandb-secure )?keys [^`]*)`")


def _hint_with_path(hint: str, key_store: Path) -> str:
    """``hint`` with ``-k PATH`` in every ``keys`` command it names that lacks one."""

    def fix(match: re.Match[str]) -> str:
        command = match.group(1).replace("-k PATH", f"-k {key_store}")
        if " -k " not in f"{command} " and "--key-store" not in command:
            command += f" -k {key_store}"
        return f"`{command}`"

    return _COMMAND_IN_HINT.sub(fix, hint)


def key_store_hints(func: Callable[P, R]) -> Callable[P, R]:
    """When the user gave a key store (``-k`` other than the default, or the variable), name it
    in every hint."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SecureArtifactError as exc:
            key_store = kwargs.get("key_store")
            given = isinstance(key_store, Path) and (
                key_store != DEFAULT_KEY_STORE or KEY_STORE_ENV in os.environ
            )
            if exc.hint and given:
                assert isinstance(key_store, Path)
                exc.hint = _hint_with_path(exc.hint, key_store)
                exc.args = (str(exc),)
            raise

    return wrapper


def _confirm(what: str, question: str, *, yes: bool, json_out: bool) -> None:
    """Ask before an irreversible step (``--yes`` skips; required when not interactive)."""
    if yes:
        return
    if json_out or not sys.stdin.isatty():
        usage_error(
            f"{what} cannot be undone; pass --yes to confirm non-interactively", as_json=json_out
        )
    if not typer.confirm(question, default=False):
        out_console().print("nothing changed", markup=False)
        raise typer.Exit(EXIT_FAILED)


def _fmt(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if when else "-"


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
@key_store_hints
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
@key_store_hints
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
            f"; next: `keys export-public {kid} -k {key_store}` for readers, then "
            f"`keys promote {kid} -k {key_store}`"
            if algorithm(alg).has_public_half()
            else f"; next: `keys promote {kid} -k {key_store}`"
        )
    _report(json_out, "keys-generate", msg, {"kid": kid, "key": _record_doc(record)})


@app.command("list")
@handle_errors
@key_store_hints
def list_cmd(key_store: Path = KeyStoreOption, json_out: bool = JsonOption) -> None:
    """List every key with its status, algorithm, dates (created, ends) and full fingerprint."""
    ks = open_key_store(key_store)
    records = sorted(ks.records(), key=lambda r: (r.created_at, r.kid))
    if json_out:
        emit_json(
            "keys-list",
            {"ok": True, "key_store": str(ks.path), "keys": [_record_doc(r) for r in records]},
        )
        return
    table = Table(title=f"keys in {ks.path}")
    for col in ("kid", "alg", "status", "created", "ends", "private", "origin", "fingerprint"):
        table.add_column(col, overflow="fold")
    now = datetime.now(UTC)
    for r in records:
        ended = r.not_after is not None and now > r.not_after
        table.add_row(
            r.kid,
            r.alg,
            r.status.value
            + (" (ended: verifies nothing)" if ended and r.status.value != "revoked" else "")
            + (f" ({r.revoked_reason})" if r.revoked_reason else ""),
            _fmt(r.created_at),
            _fmt(r.not_after) if r.not_after else "never",
            "yes" if r.has_private else "no",
            r.origin,
            r.fingerprint,
        )
    out_console().print(table)
    if not records:
        out_console().print("no keys yet: run `dagster-wandb-secure keys init`", markup=False)


@app.command("promote")
@handle_errors
@key_store_hints
def promote_cmd(
    kid: str = typer.Argument(..., help="Key id to make primary."),
    grace: str | None = GraceOption,
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Make KID the primary; the old primary becomes verify-only. With --grace the old primary
    is also retired: it verifies nothing once the grace period is over."""
    ks = open_key_store(key_store)
    old = next((r.kid for r in ks.records() if r.status.value == "primary"), None)
    ks.promote(kid, grace=parse_duration(grace))
    ends = ks.get(old).not_after if old and old != kid else None
    msg = f"{kid} is now the primary key"
    if old and old != kid:
        msg += f"; {old} is verify-only, " + (
            f"ends {_fmt(ends)}" if ends else f"until `keys retire {old} -k {key_store}`"
        )
    _report(
        json_out,
        "keys-promote",
        msg,
        {"kid": kid, "previous": old, "previous_ends": _fmt(ends) if ends else None},
    )


@app.command("rotate")
@handle_errors
@key_store_hints
def rotate_cmd(
    key_store: Path = KeyStoreOption,
    alg: str | None = typer.Option(None, "--alg", help=ALG_HELP + " Default: the primary's."),
    expires_in: str | None = typer.Option(None, "--expires-in", help="New key's lifetime."),
    grace: str | None = typer.Option(
        None, "--grace", help="Old primary stops verifying after this (e.g. 30d). Default: never."
    ),
    passphrase_env: str | None = PassphraseEnvOption,
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
@key_store_hints
def retire_cmd(
    kid: str = typer.Argument(..., help="Key id to retire (not the primary)."),
    grace: str | None = typer.Option(
        None,
        "--grace",
        help="Keep verifying for this long, e.g. 30d. Default: end now (it verifies nothing).",
    ),
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """End KID: it never signs, and verifies nothing after now (or now + --grace). Re-sign what
    must outlive it first (`resign --from KID`)."""
    ks = open_key_store(key_store)
    ends = ks.retire(kid, grace=parse_duration(grace))
    _report(
        json_out,
        "keys-retire",
        f"{kid} is retired: it verifies nothing after {_fmt(ends)}",
        {"kid": kid, "not_after": _fmt(ends)},
    )


@app.command("revoke")
@handle_errors
@key_store_hints
def revoke_cmd(
    kid: str = typer.Argument(..., help="Key id to revoke."),
    reason: str = typer.Option(..., "--reason", help="Why (kept in the key store)."),
    yes: bool = YesOption,
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Revoke KID now: it verifies and signs nothing, for good. Re-sign what must survive with
    `resign --from KID` (only where the ledger's digest matches)."""
    if not reason.strip():
        usage_error("--reason must not be empty", as_json=json_out)
    ks = open_key_store(key_store)
    record = ks.get(kid)
    _confirm(
        f"revoking {kid}",
        f"Revoke {record.alg} key {kid} ({record.status.value})? Artifacts signed by it will "
        "no longer verify",
        yes=yes,
        json_out=json_out,
    )
    ks.revoke(kid, reason)
    _report(json_out, "keys-revoke", f"{kid} is revoked: {reason.strip()}", {"kid": kid})


@app.command("destroy")
@handle_errors
@key_store_hints
def destroy_cmd(
    kid: str = typer.Argument(..., help="Key id whose private material to delete."),
    yes: bool = YesOption,
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Delete KID's secret material for good; it verifies nothing afterwards."""
    ks = open_key_store(key_store)
    record = ks.get(kid)
    _confirm(
        f"destroying {kid}",
        f"Destroy {record.alg} key {kid} ({record.status.value})? Artifacts signed by it will "
        "no longer verify",
        yes=yes,
        json_out=json_out,
    )
    ks.destroy(kid)
    _report(json_out, "keys-destroy", f"{kid} is destroyed", {"kid": kid})


@app.command("export-public")
@handle_errors
@key_store_hints
def export_public_cmd(
    kid: str = typer.Argument(..., help="Key id whose public key bundle to export."),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Print (or write) KID's public key bundle for readers (Ed25519 only), with its status
    and end date (readers that import it learn of a retirement or revocation)."""
    ks = open_key_store(key_store)
    bundle = ks.export_public(kid)
    if output is not None:
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
@key_store_hints
def import_public_cmd(
    file: Annotated[Path, typer.Argument(help="A bundle from `keys export-public` or a PEM.")],
    kid: str | None = typer.Option(None, "--kid", help="Key id for a bare PEM."),
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Trust another writer's public key (verify-only, no secret). Prints its fingerprint:
    compare it with the writer's `keys list` over a channel an attacker does not control."""
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
    record = ks.get(new_kid)
    _report(
        json_out,
        "keys-import-public",
        f"trusting public key {new_kid} ({record.status.value}"
        + (f", ends {_fmt(record.not_after)}" if record.not_after else "")
        + f"), fingerprint sha256:{record.fingerprint}\n"
        "compare this fingerprint with the writer's `keys list` over a channel an attacker "
        "does not control",
        {"kid": new_kid, "fingerprint": record.fingerprint, "key": _record_doc(record)},
    )


@app.command("export-secret")
@handle_errors
@key_store_hints
def export_secret_cmd(
    kid: str = typer.Argument(..., help="Key id of an HMAC-SHA256 key."),
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (mode 0600; default stdout)."),
    ] = None,
    key_store: Path = KeyStoreOption,
    json_out: bool = JsonOption,
) -> None:
    """Print (or write) KID's HMAC secret in the key format an environment variable must hold
    (`signing_key: {"env": VAR}`). It is a signing key: put it only in a secret manager."""
    ks = open_key_store(key_store)
    secret = ks.export_secret(kid)
    if output is not None:
        atomic_write(output, (secret + "\n").encode("ascii"), mode=PRIVATE_FILE_MODE)
        _report(
            json_out, "keys-export-secret", f"wrote {output}", {"kid": kid, "output": str(output)}
        )
    elif json_out:
        emit_json("keys-export-secret", {"ok": True, "kid": kid, "output": None, "secret": secret})
    else:
        sys.stdout.write(secret + "\n")
