"""The ``dagster-wandb-secure`` console script: a thin shell over the library.

Command groups: ``keys`` (key store), ``inspect`` / ``verify`` (one file or folder), ``audit``
(every version in a store, with table/JSON/HTML/Markdown reports), ``adopt`` (migrate legacy
unsigned pickles after a static scan) and ``resign`` (move artifacts off a retired or revoked
key). Exit codes and the ``--json`` schema are documented in docs/cli.md.
"""

from __future__ import annotations

import sys

import typer

from .. import __version__
from . import adopt, audit, keys, ledger, resign, verify
from ._common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "app", "main"]

app = typer.Typer(
    name="dagster-wandb-secure",
    help="Signed W&B artifacts for Dagster: manage keys, verify and audit artifacts, adopt "
    "legacy unsigned pickles, re-sign artifacts of retired or revoked keys. "
    "Exit codes: 0 ok, 1 verification failure, 2 usage error, 3 key store/store/config error.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:

        typer.echo(f"dagster-wandb-secure {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Signed W&B artifacts for Dagster (see --help of each command)."""


app.add_typer(keys.app, name="keys")
app.add_typer(ledger.app, name="ledger")
verify.register(app)
audit.register(app)
adopt.register(app)
resign.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (also usable from tests)."""
    try:
        app(args=argv, prog_name="dagster-wandb-secure", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return EXIT_OK
        if isinstance(code, int):
            return code
        sys.stderr.write(f"{code}\n")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
