"""What every command shares: exit codes, the ``--json`` envelope, typed-error reporting.

Exit codes (documented in docs/cli.md):

- ``0`` success;
- ``1`` verification failures the user asked to fail on (``verify``, ``audit --fail-on``, a
  refused ``adopt`` or ``resign``);
- ``2`` usage errors (unknown option, bad value, missing confirmation);
- ``3`` key store, store or configuration errors (missing key store, unknown key id, bad
  permissions, unreadable store);
- ``4`` an internal error (a bug: reported in one line, please file it).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from ..artifacts.session import open_existing_key_store
from ..core.errors import (
    KeyStoreError,
    SecureArtifactError,
    SignatureVerificationError,
)
from ..core.keys import KeyStore
from ..core.ledger_api import open_ledger, ping

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INTERNAL = 4

SCHEMA_PREFIX = "dagster-wandb-secure"
SCHEMA_VERSION = 1

# click's ClickException (typer vendors click, so take it from typer's own class hierarchy)
_CLICK_ERRORS: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)

P = ParamSpec("P")
R = TypeVar("R")

KeyStoreOption = typer.Option(
    Path("keys"),
    "--key-store",
    "-k",
    help="Key store folder (create one with `keys init -k PATH`).",
    envvar="DAGSTER_WANDB_SECURE_KEY_STORE",
    show_default=True,
)
LedgerOption = typer.Option(
    None,
    "--ledger",
    help="Shared ledger URL (postgresql://...); default: ledger.sqlite3 in the key store.",
    envvar="DAGSTER_WANDB_SECURE_LEDGER",
    show_default=False,
)
LedgerModeOption = typer.Option(
    None,
    "--ledger-mode",
    help="read-only: the shared ledger is only read (a SELECT-only role) and also checked "
    "against the key store's own ledger.sqlite3; default read-write.",
    envvar="DAGSTER_WANDB_SECURE_LEDGER_MODE",
    show_default=False,
)
DigestOption = typer.Option(
    "blake3",
    "--digest-algorithm",
    help="Payload digest of what this command signs: blake3, or sha256 (FIPS).",
    envvar="DAGSTER_WANDB_SECURE_DIGEST_ALGORITHM",
    show_default=True,
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON (see docs/cli.md).")


def schema(name: str) -> str:
    return f"{SCHEMA_PREFIX}/{name}/v{SCHEMA_VERSION}"


def out_console() -> Console:
    console = Console(soft_wrap=True, highlight=False)
    if not console.is_terminal:  # piped: do not squeeze tables into 80 columns
        console = Console(soft_wrap=True, highlight=False, width=200)
    return console


def err_console() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def emit_json(kind: str, body: Mapping[str, Any]) -> None:
    doc = {"schema": schema(kind), **body}
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def error_doc(exc: SecureArtifactError) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "artifact": exc.artifact,
        "version": exc.version,
        "key_id": exc.key_id,
        "reason": exc.reason,
        "hint": exc.hint,
        "message": str(exc),
    }


def exit_code_for(exc: SecureArtifactError) -> int:
    if isinstance(exc, SignatureVerificationError):
        return EXIT_FAILED
    return EXIT_CONFIG


def fail(exc: SecureArtifactError, *, as_json: bool, code: int | None = None) -> NoReturn:
    """Report a typed error in one line (or as a JSON error document) and exit."""
    code = exit_code_for(exc) if code is None else code
    if as_json:
        emit_json("error", {"ok": False, "exit_code": code, "error": error_doc(exc)})
    else:
        err_console().print(f"error: {exc}", markup=False)
    raise typer.Exit(code)


def usage_error(message: str, *, as_json: bool = False) -> NoReturn:
    if as_json:
        emit_json(
            "error",
            {
                "ok": False,
                "exit_code": EXIT_USAGE,
                "error": {
                    "type": "UsageError",
                    "artifact": None,
                    "version": None,
                    "key_id": None,
                    "reason": message,
                    "hint": "see --help",
                    "message": f"UsageError: {message}",
                },
            },
        )
    else:
        err_console().print(f"usage error: {message} (see --help)", markup=False)
    raise typer.Exit(EXIT_USAGE)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every typed error (and stray OS errors) into a one-line message and an exit code.

    The command's ``json_out`` keyword (when it has one) selects the JSON error form."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("json_out", False))
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, _CLICK_ERRORS):
            raise
        except SecureArtifactError as exc:
            fail(exc, as_json=as_json)
        except OSError as exc:
            where = getattr(exc, "filename", None)
            fail(
                KeyStoreError(
                    f"operating system error: {exc.strerror or exc}"
                    + (f" ({where})" if where else ""),
                    hint="check the path and its permissions",
                ),
                as_json=as_json,
            )
        except KeyboardInterrupt:
            err_console().print("interrupted", markup=False)
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the CLI boundary: one line, never a traceback
            internal = SecureArtifactError(
                f"internal error {type(exc).__name__}: {exc}",
                hint="this is a bug in dagster-wandb-secure; please report it with the command "
                "line you ran",
            )
            fail(internal, as_json=as_json, code=EXIT_INTERNAL)

    return wrapper


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_duration(text: str | None) -> timedelta | None:
    """``90d``, ``12h``, ``30m``, ``2w``, ``1y``, ``45s`` -> timedelta; ``None`` stays ``None``."""
    if text is None:
        return None
    value = text.strip().lower()
    if len(value) >= 2 and value[-1] in _UNITS and value[:-1].isdigit():
        amount = int(value[:-1])
        if 0 < amount <= 100 * 365 * 86400:
            return timedelta(seconds=amount * _UNITS[value[-1]])
    raise typer.BadParameter(
        f"{text!r} is not a duration; use a positive number and a unit: s, m, h, d, w or y "
        "(e.g. 90d)"
    )


def open_key_store(
    path: Path, *, create: bool = False, ledger: str | None = None, ledger_mode: str | None = None
) -> Any:
    """Open the key store; unless ``create``, nothing is created and a missing one is a
    ``KeyStoreError`` (exit 3) naming the path and `keys init -k PATH`. With ``ledger``
    (``--ledger``), that ledger is attached (``ledger_mode``: ``--ledger-mode``)."""

    if create:
        key_store = KeyStore.open(path, create=True)
    else:

        key_store = open_existing_key_store(path)
    if ledger:

        opened = open_ledger(ledger, key_store.path, mode=ledger_mode)
        ping(opened)
        key_store.attach_ledger(opened)
    return key_store
