"""The ledger interface every backend implements, its typed errors, and ``open_ledger``.

Two backends implement ``LedgerBackend`` with the same semantics: the embedded SQLite file in
the key store (``core/ledger.py``, the default) and a shared PostgreSQL database
(``core/ledger_postgres.py``, for deployments where every step runs in a fresh pod). Callers
reach the ledger through ``KeyStore.ledger`` whatever the backend; ``open_ledger(spec, path)``
turns a configuration value (None, a ``postgresql://`` URL or an SQLite file) into a backend;
with ``mode="read-only"`` (or a ``ledger_mode=read-only`` URL parameter) a shared ledger is
only read and the reader's own marks stay in the key store's SQLite file
(``core/ledger_layered.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import KeyStoreError, SignatureVerificationError
from .history import Position, SeenManifest
from .ledger import LedgerRow

__all__ = [
    "ENV_VAR",
    "LedgerBackend",
    "LedgerError",
    "LEDGER_MODES",
    "LedgerLockTimeoutError",
    "LedgerPermissionError",
    "LedgerReadOnlyError",
    "LedgerRecordMissingError",
    "LedgerSchemaError",
    "LedgerUnavailableError",
    "check_mode",
    "check_spec",
    "is_postgres_url",
    "export_history",
    "export_marks",
    "ledger_status",
    "open_ledger",
    "ping",
    "redact",
    "split_mode",
]

ENV_VAR = "DAGSTER_WANDB_SECURE_LEDGER"
POSTGRES_SCHEMES = ("postgresql", "postgres")
SQLITE_PREFIX = "sqlite:"
READ_WRITE = "read-write"
READ_ONLY = "read-only"
LEDGER_MODES = (READ_WRITE, READ_ONLY)
MODE_PARAM = "ledger_mode"  # URL query parameter: the mode travels with a role's URL


class LedgerError(KeyStoreError):
    """The ledger cannot be used (a shared backend refused or failed an operation)."""

    default_hint = "check the ledger setting and the database's state; see docs/deployment.md"


class LedgerUnavailableError(LedgerError):
    """The ledger's database cannot be reached (or did not answer within the timeout)."""

    default_hint = (
        "check that PostgreSQL is running and reachable from this machine (host, port, "
        "network policy, credentials); nothing was recorded, retry once it is back"
    )


class LedgerSchemaError(LedgerError):
    """The database holds a ledger schema this library cannot use (e.g. newer than the code)."""

    default_hint = "upgrade dagster-wandb-secure on this machine to the version that migrated it"


class LedgerLockTimeoutError(LedgerError):
    """Another writer held an artifact's history lock longer than the lock timeout."""

    default_hint = (
        "another writer of this artifact is publishing (or hung while holding the lock); retry, "
        "or raise the ledger's lock_timeout (milliseconds) if publishes are legitimately slow"
    )


class LedgerPermissionError(LedgerError):
    """The shared ledger's database refused this role an operation (a missing GRANT)."""

    default_hint = (
        "grant this role the privileges of its part (docs/deployment.md, 'GRANTs per role'); "
        "a role that may only SELECT serves readers with ledger_mode: read-only (or "
        "?ledger_mode=read-only in the URL), which keeps their own marks in the key store"
    )


class LedgerReadOnlyError(LedgerError):
    """``ledger_mode: read-only``: a writer's operation (sign, record, allocate) was asked of a
    ledger this process may only read."""

    default_hint = (
        "only readers run with ledger_mode: read-only; a writer needs a role that may record "
        "(docs/deployment.md, 'GRANTs per role') and ledger_mode unset or read-write"
    )


class LedgerRecordMissingError(SignatureVerificationError):
    """``require_ledger_record``: the ledger holds no writer's record of this signed version."""

    always_locate = True
    default_hint = (
        "a valid signature alone is not accepted here: the writer must also have recorded it in "
        "the shared ledger; investigate who signed it (a stolen key?) or re-materialize the asset"
    )


@runtime_checkable
class LedgerBackend(Protocol):
    """What every ledger offers (the public methods of the SQLite ``Ledger``).

    Semantics shared by every backend (tests/core/test_ledger_contract.py checks them):
    rows are never deleted and ids only grow; every input is validated (``KeyStoreError``);
    alias marks only move forward; ``batch()`` makes the writes of this thread one transaction,
    all or nothing; errors are typed (``KeyStoreError`` and subclasses), never a driver error.

    The signed version history (``core/ledger.py``'s docstring, ``core/history.py``), keyed by
    ``entity/project/artifact``: ``history_lock`` is held by a writer from allocation until it
    has published, and serializes the writers of one artifact across every process (and, on a
    shared backend, every machine) sharing the ledger; ``allocate_sequence`` returns
    ``max(last allocated, floor) + 1`` atomically (monotonic, never reused); history marks only
    move forward; ``record_manifest`` keeps the first sighting of a manifest digest."""

    def record_signature(
        self,
        *,
        key_id: str,
        alg: str,
        digest: str,
        length: int,
        context: Mapping[str, str | None],
        serializer: str,
        signed_at: str,
        run_id: str | None = None,
        artifact_version: str | None = None,
        origin: str = "signed",
    ) -> int: ...

    def record_many(self, entries: Iterable[Mapping[str, Any]]) -> list[int]: ...

    def attach_version(
        self, row_id: int, *, artifact_version: str, aliases: Sequence[str] = ()
    ) -> None: ...

    def note_seen(self, artifact: str, alias: str, version: int) -> None: ...

    def newest_version(self, artifact: str, *, alias: str = "latest") -> int | None: ...

    def aliases(self, artifact: str) -> dict[str, int]: ...

    def find_digest(self, digest: str) -> list[LedgerRow]: ...

    def rows(self, *, artifact: str | None = None) -> list[LedgerRow]: ...

    def count(self) -> int: ...

    def batch(self) -> AbstractContextManager[Any]: ...

    def history_lock(self, artifact: str) -> AbstractContextManager[None]: ...

    def allocate_sequence(self, artifact: str, *, floor: int) -> int: ...

    def allocate_next(self, artifact: str, *, floor: int) -> tuple[int, SeenManifest | None]:
        """``newest_seen`` and ``allocate_sequence(floor=max(floor, its sequence))`` in one
        step: the next sequence and the newest seen manifest (a writer's parent candidate)."""
        ...

    def record_version(
        self,
        rows: Sequence[int],
        *,
        artifact_version: str,
        aliases: Sequence[str] = (),
        history_key: str | None = None,
        manifest_digest: str | None = None,
        position: Position | None = None,
        marks: Sequence[str] = (),
    ) -> None:
        """The writer's records of a version it published, all or nothing (every argument
        validated first): ``attach_version(row, artifact_version, aliases)`` for each row and,
        with ``history_key``, ``record_manifest`` of the manifest at ``position`` and
        ``advance_mark`` of ``latest`` and ``marks`` (source ``writer``)."""
        ...

    def history_mark(self, artifact: str, alias: str) -> Position | None: ...

    def history_marks(self, artifact: str) -> dict[str, Position]: ...

    def advance_mark(
        self, artifact: str, alias: str, position: Position, *, source: str
    ) -> None: ...

    def record_manifest(
        self,
        artifact: str,
        digest: str,
        position: Position | None,
        *,
        version: str | None,
        source: str,
    ) -> None: ...

    def seen_manifest(self, artifact: str, digest: str) -> SeenManifest | None: ...

    def seen_manifests(self, artifact: str, digests: Iterable[str]) -> dict[str, SeenManifest]:
        """``seen_manifest`` of each of ``digests`` at once: the seen ones, by digest."""
        ...

    def newest_seen(self, artifact: str) -> SeenManifest | None: ...

    def marks(self) -> list[tuple[str, str, int, str]]: ...

    def history_rows(self) -> dict[str, list[tuple[Any, ...]]]: ...

    def durable(self) -> None:
        """Barrier: every signature row recorded so far is durable when this returns (called
        before a version becomes visible)."""
        ...

    def close(self) -> None: ...


def is_postgres_url(spec: str | None) -> bool:
    return bool(spec) and urlsplit(str(spec)).scheme in POSTGRES_SCHEMES


def redact(spec: str) -> str:
    """A ledger spec safe to print: a URL's password (in the netloc or a ``password=`` query
    parameter) is replaced by ``***``."""
    from .ledger_postgres import redact_url

    return redact_url(spec) if is_postgres_url(spec) else spec


def open_ledger(
    spec: str | Path | None, key_store_path: Path | str, *, mode: str | None = None
) -> LedgerBackend:
    """The ledger a configuration names.

    - ``None`` or ``""``: the SQLite file ``ledger.sqlite3`` in the key store (the default);
    - ``postgresql://user:password@host:port/db?schema=...`` (or ``postgres://``): PostgreSQL
      (needs the ``postgres`` extra); extra query parameters ``schema``, ``connect_timeout``
      (seconds), ``statement_timeout`` (milliseconds), ``pool_max`` and ``ledger_mode``;
    - ``sqlite:PATH`` or a path ending in ``.sqlite3``: that SQLite file (``ledger migrate``).

    ``mode`` (or the URL's ``ledger_mode``; read-only if either says so): ``"read-write"``
    (default) or ``"read-only"``: the shared ledger is only read, and reader marks and seen
    manifests go to the key store's ``ledger.sqlite3`` (``LayeredLedger``).

    Nothing is connected here: a backend connects on first use (``ping()`` checks now)."""
    from .keys import LEDGER_FILE
    from .ledger import Ledger

    text, url_mode = split_mode(None if spec is None else str(spec))
    read_only = READ_ONLY in (check_mode(mode), url_mode)
    if not text:
        if read_only:
            raise LedgerError(
                "ledger_mode read-only needs a shared ledger (a postgresql:// URL)",
                hint="set ledger to the shared ledger's URL, or leave ledger_mode unset",
            )
        return Ledger(Path(key_store_path) / LEDGER_FILE)
    kind = check_spec(text)
    if kind == "postgresql":
        from .ledger_postgres import PostgresLedger

        shared = PostgresLedger(text)
        if not read_only:
            return shared
        from .ledger_layered import LayeredLedger

        return LayeredLedger(shared, Ledger(Path(key_store_path) / LEDGER_FILE))
    if read_only:
        raise LedgerError(
            "ledger_mode read-only applies to a shared postgresql:// ledger, not an SQLite file",
            hint="leave ledger_mode unset for an SQLite ledger",
        )
    if text.startswith(SQLITE_PREFIX):
        return Ledger(Path(text[len(SQLITE_PREFIX) :]).expanduser())
    return Ledger(Path(text).expanduser())


def check_mode(mode: str | None) -> str:
    """``mode`` as one of ``LEDGER_MODES`` (``None``/``""``: read-write); else ``LedgerError``."""
    if mode is None or mode == "":
        return READ_WRITE
    if not isinstance(mode, str) or mode not in LEDGER_MODES:
        raise LedgerError(
            f"ledger_mode must be one of {', '.join(LEDGER_MODES)}, not {str(mode)[:40]!r}"
        )
    return mode


def split_mode(spec: str | None) -> tuple[str | None, str]:
    """A ledger setting without its ``ledger_mode`` URL parameter, and that mode
    (``read-write`` when absent). Only ``postgresql://`` URLs carry one."""
    if not spec or not is_postgres_url(spec):
        return spec, READ_WRITE
    parts = urlsplit(spec)
    params = parse_qsl(parts.query, keep_blank_values=True)
    modes = [v for k, v in params if k == MODE_PARAM]
    if not modes:
        return spec, READ_WRITE
    if len(set(modes)) > 1:
        raise LedgerError("the ledger URL names ledger_mode more than once, differently")
    rest = urlencode([(k, v) for k, v in params if k != MODE_PARAM], safe="/")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), check_mode(
        modes[0]
    )


def check_spec(spec: str) -> str:
    """``"postgresql"`` or ``"sqlite"`` for a ledger setting; ``LedgerError`` (never echoing a
    password) for anything else."""
    text, _ = split_mode(str(spec))
    assert text is not None
    if is_postgres_url(text):
        from .ledger_postgres import PostgresLedger

        PostgresLedger(text)  # validates the query parameters; connects to nothing
        return "postgresql"
    if text.startswith(SQLITE_PREFIX) or ("://" not in text and text.endswith(".sqlite3")):
        return "sqlite"
    scheme = urlsplit(text).scheme
    shown = f"{scheme}://..." if scheme else (text[:80] if "@" not in text else "<redacted>")
    raise LedgerError(
        f"the ledger setting {shown!r} is neither "
        "a postgresql:// URL nor an SQLite ledger file",
        hint="leave it unset for the key store's ledger.sqlite3, or give "
        "postgresql://USER:PASSWORD@HOST:PORT/DB",
    )


def ping(ledger: LedgerBackend) -> None:
    """Connect now (and apply migrations) so an unreachable ledger fails before any work."""
    check = getattr(ledger, "ping", None)
    if callable(check):
        check()
    else:
        ledger.count()


def ledger_status(ledger: LedgerBackend) -> dict[str, Any]:
    """Backend, schema version and counts (``dagster-wandb-secure ledger status``)."""
    status = getattr(ledger, "status", None)
    if callable(status):
        result: dict[str, Any] = status()
        return result
    from . import ledger as sqlite_ledger

    rows = ledger.rows()
    marks = export_marks(ledger)
    history = export_history(ledger)
    return {
        "backend": "sqlite",
        "location": str(getattr(ledger, "path", "")),
        "schema": None,
        "schema_version": sqlite_ledger.SCHEMA_VERSION,
        "code_schema_version": sqlite_ledger.SCHEMA_VERSION,
        "signatures": len(rows),
        "artifacts": len({r.artifact for r in rows if r.artifact is not None}),
        "marks": len(marks),
        "sequences": len(history["sequences"]),
        "history_marks": len(history["marks"]),
        "manifests": len(history["manifests"]),
    }


def export_marks(ledger: LedgerBackend) -> list[tuple[str, str, int, str]]:
    """Every alias mark as (artifact, alias, version, source), ordered (``LedgerBackend.marks``)."""
    return ledger.marks()


def export_history(ledger: LedgerBackend) -> dict[str, list[tuple[Any, ...]]]:
    """The whole signed history a ledger holds (``ledger migrate``, ``ledger status``):
    ``sequences``: (artifact, last allocated); ``marks``: (artifact, alias, Position, source);
    ``manifests``: (artifact, SeenManifest, source), each ordered (``LedgerBackend.history_rows``)."""
    return ledger.history_rows()
