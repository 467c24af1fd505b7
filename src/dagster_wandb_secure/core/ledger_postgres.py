"""The digest ledger on PostgreSQL: one ledger shared by every writer and reader of a deployment.

Same interface and semantics as the SQLite ``Ledger`` (``core/ledger_api.LedgerBackend``); the
difference is where it lives: in its own PostgreSQL schema (default ``dagster_wandb_secure``,
so it can share the database of ``dagster-postgres``), reached through a small
``psycopg_pool`` pool. psycopg is imported lazily (the ``postgres`` extra).

Schema: versioned migrations (``MIGRATIONS`` in ``core/ledger_postgres_sql.py``: 1 the
signatures and alias marks, 2 the signed version history) applied on first use inside one transaction
holding a transaction-level advisory lock (two processes migrating at once: one waits, then
finds the work done); the applied versions are recorded in ``schema_migrations``; a database
migrated by newer code is refused (``LedgerSchemaError``). A role that may only read and
write the tables (no CREATE) works once the schema is current.

History (``core/ledger_postgres_history.py``): sequences allocated by one atomic statement,
marks that only move forward, a session advisory lock per artifact.

Faults: connect and statement timeouts are bounded (``connect_timeout`` seconds,
``statement_timeout`` milliseconds, both configurable as URL query parameters or keyword
arguments); every driver failure becomes a typed error (``LedgerUnavailableError`` when the
server cannot be reached) naming the host and database, never the password. Every write is one
transaction, so a connection lost mid-write records nothing. Pool connections are checked
before use, so a server restart between two operations costs a reconnect, not an error.
A ledger inherited across ``fork()`` abandons the parent's pools, mutex and thread state in the
child before touching anything (``_after_fork_check``).

Round trips and flushes (``core/ledger_postgres_tx.py``): a transaction is pipelined (BEGIN rides
with its first answered statement, COMMIT is one round trip), statements are prepared at first
use, and a commit waits for the WAL flush unless every write in it may be lost (the writer's
records after its publish, an allocation; a signature row or a reader's mark must not be).
A publish makes one statement per step, each atomic alone in autocommit (no BEGIN/COMMIT):
the history lock, ``allocate_next``, ``record_many`` of its rows (the one flush),
``record_version``, the unlock: 5 round trips; an alias read 5 round trips and one flush
(tests/core/test_ledger_postgres_trips.py counts them on the wire).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import KeyStoreError
from .history import Position
from .ledger import (
    LATEST,
    Ledger,
    LedgerRow,
    _now_text,
    _position_values,
    _short,
    _text,
    parse_version,
    version_record,
)
from .ledger_api import (
    LedgerError,
    LedgerPermissionError,
    LedgerSchemaError,
    LedgerUnavailableError,
)
from .ledger_postgres_history import PostgresHistory
from .ledger_postgres_sql import MAX_ROWS_PER_STATEMENT, SCHEMA_VERSION
from .ledger_postgres_sql import MIGRATIONS as _MIGRATIONS
from .ledger_postgres_sql import STATEMENTS as _SQL
from .ledger_postgres_tx import pipelined

__all__ = ["DEFAULT_SCHEMA", "SCHEMA_VERSION", "PostgresLedger", "redact_url"]

DEFAULT_SCHEMA = "dagster_wandb_secure"
DEFAULT_CONNECT_TIMEOUT_S = 5
DEFAULT_STATEMENT_TIMEOUT_MS = 15_000
DEFAULT_POOL_MAX = 4
DEFAULT_LOCK_TIMEOUT_MS = 60_000  # a writer waits this long for another's history lock
LOCK_POOL_MAX = 16  # history-lock sessions one process may hold at once (nested artifacts)
RECHECK_AFTER_S = 1.0  # a pooled connection idle longer than this is checked before use
# Prepared statements keep their generic plan (PostgreSQL >= 12): the server otherwise plans the
# first five executions anew and keeps re-planning a statement whose generic plan it does not
# judge cheaper. Every ledger statement is a key lookup whose plan does not depend on the values
# (a publish's record_version: ~0.2 ms of planning per execution saved, session 5 in RESULTS.md).
PLAN_CACHE_MODE = "force_generic_plan"
# ... and that plan looks rows up by index whatever the tables' size when it was made: a plan made
# on a young ledger (one-page tables, analyzed by autovacuum) was a sequential scan, kept as the
# tables grew (a publish's record_version scanned every signature row, twice; session 6 in
# RESULTS.md, tests/core/test_pgone_ledger_plans.py). Every statement that names rows has an
# index for them; a whole-table read (status, export) still scans when no index serves it.
PLANNER_OPTIONS = "-c enable_seqscan=off"
# Every commit of ours is durable at return unless it says otherwise (SECURITY.md, "Durability of
# ledger writes"): a server, database or role default of synchronous_commit = off (an
# administrator's tuning) would void that for every row, so each ledger session sets it back; the
# loss-tolerant writes still turn it off for their own transaction only. (fsync = off on the
# server cannot be overridden by a session; SECURITY.md says so.)
DURABILITY_OPTIONS = "-c synchronous_commit=on"
_OUR_PARAMS = ("schema", "statement_timeout", "pool_max", "lock_timeout")
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
# a forked child's threads replace a ledger's inherited state one at a time; every child gets a
# new lock (a thread of the parent may have held this one at the fork)
_FORK_LOCK = [threading.Lock()]
os.register_at_fork(after_in_child=lambda: _FORK_LOCK.__setitem__(0, threading.Lock()))


def redact_url(url: str) -> str:
    """``url`` with its password (netloc or ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = [
        (k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/"), ""))


def _int_param(value: Any, what: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low - 1
    if isinstance(value, bool) or not low <= number <= high:
        raise LedgerError(f"ledger {what} must be an integer in {low}..{high}, not {value!r}")
    return number


class PostgresLedger(PostgresHistory):
    """The PostgreSQL digest ledger. Thread-safe; any number of processes and machines. The
    signed history's methods are ``PostgresHistory``'s (core/ledger_postgres_history.py)."""

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        connect_timeout: int | None = None,
        statement_timeout_ms: int | None = None,
        pool_max: int | None = None,
        lock_timeout_ms: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        ours = {k: params.pop(k) for k in _OUR_PARAMS if k in params}
        self.schema = schema or ours.get("schema") or DEFAULT_SCHEMA
        if not _SCHEMA_RE.fullmatch(self.schema):
            raise LedgerError(
                f"ledger schema {_short(self.schema)} must be a lowercase SQL name "
                "(letters, digits, '_', at most 63)"
            )
        self.connect_timeout = _int_param(
            connect_timeout or params.pop("connect_timeout", DEFAULT_CONNECT_TIMEOUT_S),
            "connect_timeout (seconds)", 1, 3600,
        )
        self.statement_timeout_ms = _int_param(
            statement_timeout_ms or ours.get("statement_timeout", DEFAULT_STATEMENT_TIMEOUT_MS),
            "statement_timeout (milliseconds)", 1, 3_600_000,
        )
        self.pool_max = _int_param(pool_max or ours.get("pool_max", DEFAULT_POOL_MAX),
                                   "pool_max", 1, 64)
        self.lock_timeout_ms = _int_param(
            lock_timeout_ms or ours.get("lock_timeout", DEFAULT_LOCK_TIMEOUT_MS),
            "lock_timeout (milliseconds)", 1, 3_600_000,
        )
        self._conninfo = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, urlencode(params, safe="/"), "")
        )
        self.where = self._describe(parts, params)
        self._pool: Any = None
        self._lock_pool: Any = None
        self._pid: int | None = None
        self._owner = os.getpid()  # the process whose mutex, thread state and pools these are
        self._mutex = threading.RLock()
        self._local = threading.local()
        self._sql: dict[str, Any] | None = None
        self._last_ok: dict[int, float] = {}

    @staticmethod
    def _describe(parts: Any, params: Mapping[str, str]) -> str:
        host = params.get("host") or parts.hostname or "localhost"
        port = params.get("port") or (str(parts.port) if parts.port else "5432")
        user = params.get("user") or parts.username
        database = params.get("dbname") or parts.path.lstrip("/") or user or "postgres"
        where = f"{host}:{port}/{database}" if not host.startswith("/") else f"{host}/{database}"
        return f"postgresql://{user + '@' if user else ''}{where}"

    def __repr__(self) -> str:
        return f"PostgresLedger({self.where!r}, schema={self.schema!r})"

    # -- connection -------------------------------------------------------------------------------

    def _statements(self) -> dict[str, Any]:
        if self._sql is None:
            from psycopg import sql

            schema = sql.Identifier(self.schema)
            # rendered to bytes once (a composed query is rendered again at every execute);
            # the schema name is quoted as an identifier (and _SCHEMA_RE allows no quote)
            self._sql = {
                name: sql.SQL(text.replace("{s}", "{schema}"))  # type: ignore[arg-type]
                .format(schema=schema)
                .as_bytes(None)
                for name, text in _SQL.items()
            }
            self._sql["migrations"] = {
                version: [
                    sql.SQL(text.replace("{s}", "{schema}")).format(schema=schema)
                    for text in texts
                ]
                for version, texts in _MIGRATIONS.items()
            }
        return self._sql

    def _after_fork_check(self) -> None:
        """Inherited across fork: abandon the parent's pools (their threads are not here),
        its mutex (a thread of the parent may have held it at the fork: taking it first would
        wait forever) and its thread state (a fork inside ``batch()`` would otherwise join the
        parent's transaction, on the parent's connection). Before anything else is touched."""
        if self._owner == os.getpid():
            return
        with _FORK_LOCK[0]:
            if self._owner == os.getpid():
                return
            self._pool, self._lock_pool, self._pid = None, None, None
            self._mutex = threading.RLock()
            self._local = threading.local()
            self._last_ok = {}
            self._owner = os.getpid()

    def _get_pool(self) -> Any:
        self._after_fork_check()
        with self._mutex:
            if self._pool is None:
                self._pool = self._open_pool()
                self._pid = os.getpid()
            return self._pool

    def _get_lock_pool(self) -> Any:
        """The pool of history-lock sessions: connections whose ``lock_timeout`` and
        ``statement_timeout`` are set once at connect (no per-lock ``SET``), reused across
        publishes so a lock costs a round trip, not a new server process."""
        self._get_pool()  # migrations applied, the driver present (typed error if not)
        with self._mutex:
            if self._lock_pool is None:
                from psycopg_pool import ConnectionPool

                options = (
                    f"-c lock_timeout={self.lock_timeout_ms} "
                    f"-c statement_timeout={self.lock_timeout_ms + self.statement_timeout_ms}"
                )
                pool = ConnectionPool(
                    self._conninfo,
                    min_size=1,
                    # nested locks of different artifacts each hold one session
                    max_size=max(self.pool_max, LOCK_POOL_MAX),
                    open=False,
                    timeout=self.connect_timeout + 1,
                    reconnect_timeout=max(self.connect_timeout * 2, 10),
                    check=self._check_connection,
                    kwargs=self._connect_kwargs(options),
                    name=f"dagster-wandb-secure-ledger-locks-{id(self):x}",
                )
                with self._errors("connect to"):
                    pool.open(wait=False)
                self._lock_pool = pool
            return self._lock_pool

    def _open_pool(self) -> Any:
        try:
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise LedgerError(
                "the PostgreSQL ledger needs psycopg 3 and psycopg_pool",
                hint="pip install 'dagster-wandb-secure[postgres]'",
            ) from None
        kwargs = self._connect_kwargs()
        with self._errors("connect to"):
            # First contact on a plain connection: a clear driver message when the server is
            # not there (a pool would only say it timed out), and the migrations.
            import psycopg

            with psycopg.connect(self._conninfo, **kwargs) as conn:
                self._migrate(conn)
        pool = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self.pool_max,
            open=False,
            timeout=self.connect_timeout + 1,
            reconnect_timeout=max(self.connect_timeout * 2, 10),
            check=self._check_connection,
            kwargs=kwargs,
            name=f"dagster-wandb-secure-ledger-{id(self):x}",
        )
        with self._errors("connect to"):
            pool.open(wait=False)
        return pool

    def _connect_kwargs(self, options: str = "") -> dict[str, Any]:
        return {
            "autocommit": True,
            "connect_timeout": self.connect_timeout,
            # every statement's plan made once per connection, an index lookup
            # (PLAN_CACHE_MODE, PLANNER_OPTIONS); commits flush whatever the server's default
            # (DURABILITY_OPTIONS)
            "options": (options or f"-c statement_timeout={self.statement_timeout_ms}")
            + f" -c plan_cache_mode={PLAN_CACHE_MODE} {PLANNER_OPTIONS} {DURABILITY_OPTIONS}",
            "application_name": "dagster-wandb-secure",
            # every statement prepared at its first use on a connection (psycopg's default:
            # the fifth), so the server parses and plans each once per connection; the set
            # is small and fixed (ledger_postgres_sql.STATEMENTS)
            "prepare_threshold": 0,
        }

    def _check_connection(self, conn: Any) -> None:
        """Before a pooled connection is handed out: a round trip proves it alive (a server
        restart kills every pooled connection), unless it just worked (a round trip costs as
        much as the statement it would guard)."""
        from psycopg_pool import ConnectionPool

        if time.monotonic() - self._last_ok.get(id(conn), 0.0) < RECHECK_AFTER_S:
            return
        ConnectionPool.check_connection(conn)

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Every driver failure as a typed error naming the server, never the password."""
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            yield
        except KeyStoreError:
            raise
        except psycopg.errors.PipelineAborted:  # an OperationalError, but the server is there
            raise LedgerError(
                f"the PostgreSQL ledger at {self.where} refused to {doing} it: an earlier "
                "statement of the same transaction failed, so nothing of it was recorded"
            ) from None
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            raise LedgerError(
                f"the PostgreSQL ledger at {self.where} rolled back the statement to {doing} "
                f"it because of another session: {self._first_line(exc)}",
                hint="nothing of it was recorded; retry (a serialization failure, e.g. under "
                "default_transaction_isolation = serializable, or a deadlock)",
            ) from None
        except (PoolTimeout, psycopg.OperationalError) as exc:
            if doing == "connect to" and "plan_cache_mode" in self._first_line(exc):
                raise LedgerError(
                    f"the PostgreSQL server at {self.where} refused the plan_cache_mode every "
                    f"ledger connection sets ({self._first_line(exc)}): the ledger needs "
                    "PostgreSQL 12 or later",
                    hint="upgrade the server (docs/deployment.md)",
                ) from None
            raise LedgerUnavailableError(
                f"cannot {doing} the PostgreSQL ledger at {self.where} (schema {self.schema}): "
                f"{self._first_line(exc)}"
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LedgerPermissionError(
                f"the PostgreSQL ledger at {self.where} refused to {doing} it: "
                f"{self._first_line(exc)}"
            ) from None
        except psycopg.Error as exc:
            raise LedgerError(
                f"the PostgreSQL ledger at {self.where} failed to {doing} it: "
                f"{type(exc).__name__}: {self._first_line(exc)}"
            ) from None

    def _first_line(self, exc: BaseException) -> str:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        parts = urlsplit(self._conninfo)
        for secret in (parts.password, dict(parse_qsl(parts.query)).get("password")):
            if secret:
                text = text.replace(secret, "***")
        return text or type(exc).__name__

    def _migrate(self, conn: Any) -> None:
        """Bring the schema to ``SCHEMA_VERSION`` (once per process and pool)."""
        q = self._statements()
        table = f'"{self.schema}".schema_migrations'
        if conn.execute(q["regclass"], (table,)).fetchone()[0] is not None:
            current = conn.execute(q["schema_version"]).fetchone()[0]
            self._check_version(current)
            if current == SCHEMA_VERSION:
                return
        lock_key = int.from_bytes(
            hashlib.sha256(f"dagster-wandb-secure ledger {self.schema}".encode()).digest()[:8],
            "big",
            signed=True,
        )
        with conn.transaction():
            conn.execute(q["migration_timeout"])
            conn.execute(q["lock"], (lock_key,))  # the other migrator waits here
            if conn.execute(q["has_schema"], (self.schema,)).fetchone() is None:
                conn.execute(q["create_schema"])
            conn.execute(q["create_migrations"])
            current = conn.execute(q["schema_version"]).fetchone()[0]
            self._check_version(current)
            for version in sorted(v for v in _MIGRATIONS if v > (current or 0)):
                for statement in q["migrations"][version]:
                    conn.execute(statement)
                conn.execute(q["record_migration"], (version,))

    def _check_version(self, current: int | None) -> None:
        if current is not None and current > SCHEMA_VERSION:
            raise LedgerSchemaError(
                f"the PostgreSQL ledger at {self.where} (schema {self.schema}) has schema version "
                f"{current}; this library knows versions up to {SCHEMA_VERSION} and will not "
                "use a newer one"
            )

    @contextmanager
    def _conn(self, doing: str, *, single: bool = False) -> Iterator[Any]:
        """A connection inside a transaction: this thread's ``batch()`` one, or a pooled one."""
        self._after_fork_check()
        joined = getattr(self._local, "conn", None)
        if joined is not None:
            with self._errors(doing):
                yield joined
            return
        with self._errors(doing), self._pooled() as conn:
            if single:  # one statement: atomic by itself in autocommit, one round trip
                yield conn
            else:
                with pipelined(conn, self._statements(), self.where) as tx:
                    self._local.tx = tx
                    try:
                        yield conn
                    finally:
                        self._local.tx = None
            self._last_ok[id(conn)] = time.monotonic()

    @contextmanager
    def _pooled(self) -> Iterator[Any]:
        """A connection from the pool. A pool that saw the server go away backs off before it
        reconnects (seconds, growing): when it cannot hand out a connection in time, a fresh
        pool is opened once, whose first contact says at once whether the server is back."""
        from psycopg_pool import PoolTimeout

        pool = self._get_pool()
        try:
            conn = pool.getconn()
        except PoolTimeout:
            with self._mutex:
                if self._pool is pool:
                    self._pool = None
            pool.close(timeout=0)
            pool = self._get_pool()  # LedgerUnavailableError if the server is still away
            conn = pool.getconn()
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def _read(self, name: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        q = self._statements()
        with self._conn("read", single=True) as conn:
            rows: list[tuple[Any, ...]] = conn.execute(q[name], tuple(params)).fetchall()
            return rows

    @contextmanager
    def batch(self) -> Iterator[PostgresLedger]:
        """Group this thread's writes into ONE transaction (all or nothing), as SQLite's."""
        self._after_fork_check()
        if getattr(self._local, "conn", None) is not None:
            yield self
            return
        with self._conn("write to") as conn:
            self._local.conn = conn
            try:
                yield self
            finally:
                self._local.conn = None

    def ping(self) -> None:
        """Connect (and migrate) now: ``LedgerUnavailableError`` if the server is not there."""
        self._read("ping")

    def durable(self) -> None:
        """The durability barrier (``ledger_api.LedgerBackend``): a no-op here, every write a
        publish depends on (a signature row) is durable when its commit returns."""

    def close(self) -> None:
        """Close this process's pool (a later call reopens it)."""
        self._after_fork_check()
        with self._mutex:
            pools = (self._pool, self._lock_pool)
            self._pool = self._lock_pool = None
            for pool in pools:
                if pool is not None and self._pid == os.getpid():
                    pool.close(timeout=1)

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        for pool in (getattr(self, "_pool", None), getattr(self, "_lock_pool", None)):
            if pool is not None and getattr(self, "_pid", None) == os.getpid():
                try:
                    pool.close(timeout=0)
                except Exception:  # noqa: BLE001, S110 - interpreter shutdown: nothing to report
                    pass

    # -- writing ----------------------------------------------------------------------------------

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
    ) -> int:
        """Record one signed payload; returns the row id (for ``attach_version``)."""
        return self.record_many(
            [
                {
                    "key_id": key_id,
                    "alg": alg,
                    "digest": digest,
                    "length": length,
                    "context": context,
                    "serializer": serializer,
                    "signed_at": signed_at,
                    "run_id": run_id,
                    "artifact_version": artifact_version,
                    "origin": origin,
                }
            ]
        )[0]

    def record_many(self, entries: Iterable[Mapping[str, Any]]) -> list[int]:
        """Record many payloads in ONE transaction; all or nothing. Up to
        ``MAX_ROWS_PER_STATEMENT`` rows (a publish's payload and manifest) are one INSERT: one
        statement, one round trip, atomic by itself."""
        # the validated values, minus the writer-side recorded_at (the database sets it)
        rows = [Ledger._row_values(**dict(entry))[:-1] for entry in entries]
        if not rows:
            return []
        q = self._statements()
        n = len(rows)
        if n <= MAX_ROWS_PER_STATEMENT:
            params = [value for row in rows for value in row]
            with self._conn("write to", single=True) as conn:
                self._wrote(keep=True)  # on disk before a version using the row is published
                answer = conn.execute(q["insert" if n == 1 else f"insert_{n}"], params)
                # the VALUES list is inserted in its order: ascending ids are the entries'
                return sorted(int(r[0]) for r in answer.fetchall())
        with self._conn("write to") as conn, conn.cursor() as cur:
            self._wrote(keep=True)
            cur.executemany(q["insert"], rows, returning=True)
            ids: list[int] = []
            while True:
                ids.append(int(cur.fetchone()[0]))
                if not cur.nextset():
                    break
            return ids

    def _wrote(self, *, keep: bool) -> None:
        """Tell this thread's open transaction (if any) what it wrote: ``keep`` when the write
        must survive a server crash once COMMIT returns (core/ledger_postgres_tx.py). A write
        outside a transaction is one statement in autocommit, flushed by the server default."""
        tx = getattr(self._local, "tx", None)
        if tx is not None:
            tx.wrote(keep=keep)

    def _raise_mark(self, conn: Any, artifact: str, alias: str, version: int, source: str) -> None:
        from .ledger import _now_text

        conn.execute(
            self._statements()["raise_mark"], (artifact, alias, version, source, _now_text())
        )

    def attach_version(
        self, row_id: int, *, artifact_version: str, aliases: Sequence[str] = ()
    ) -> None:
        """After publishing: the version the row's payload became and its aliases (``latest``
        implied). Alias marks only move forward."""
        if isinstance(row_id, bool) or not isinstance(row_id, int):
            raise KeyStoreError(f"ledger row id must be an int, not {row_id!r}")
        number = parse_version(artifact_version)
        if isinstance(aliases, str):
            raise KeyStoreError("aliases must be a sequence of names, not one string")
        names = [_text(a, "alias") for a in aliases]
        marks = list(dict.fromkeys([LATEST, *names]))
        # one statement (one round trip): the version is set and the marks raised only when
        # the row exists and (has an artifact name or no alias was asked for); it answers
        # whether the row exists and its artifact, for the errors below (nothing was changed)
        params = {
            "id": row_id,
            "version": artifact_version,
            "number": number,
            "named": len(names),
            "aliases": marks,
            "now": _now_text(),
        }

        def check(answer: Any) -> None:
            found, artifact = answer.fetchone()
            if not found:
                raise KeyStoreError(f"the ledger has no row {row_id}", version=artifact_version)
            if artifact is None and names:
                raise KeyStoreError(
                    f"ledger row {row_id} has no artifact name; aliases cannot be recorded",
                    version=artifact_version,
                )

        with self._conn("write to", single=True) as conn:
            self._wrote(keep=False)  # the writer's records after its publish (SECURITY.md)
            answer = conn.execute(self._statements()["attach"], params)
            tx = getattr(self._local, "tx", None)
            if tx is None:
                check(answer)
            else:  # in a batch: answered (and raised) before its COMMIT, with the others
                tx.defer(lambda: check(answer))

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
        """The writer's records of the version it published (``ledger_api.LedgerBackend``):
        one statement (``record_version`` in core/ledger_postgres_sql.py), all or nothing, one
        round trip; alone it commits without its own WAL flush (the writer's records after its
        publish may be lost: SECURITY.md)."""
        rec = version_record(
            rows, artifact_version=artifact_version, aliases=aliases, history_key=history_key,
            manifest_digest=manifest_digest, position=position, marks=marks,
        )
        seq, at, pdigest = (
            (None, None, None) if rec.position is None else _position_values(rec.position)
        )
        params = {
            "ids": list(rec.rows),
            "n": len(rec.rows),
            "version": rec.version,
            "number": rec.number,
            "named": len(rec.names),
            "aliases": list(rec.aliases),
            "now": _now_text(),
            "key": rec.key,
            "digest": rec.digest,
            "seq": seq,
            "at": at,
            "pdigest": pdigest,
            "marks": list(rec.marks),
        }

        def check(answer: Any) -> None:
            ok, found, nameless = answer.fetchone()[:3]
            if ok:
                return
            # the first row, in the order given, that cannot be recorded (as SQLite names it)
            present, unnamed = set(found), set(nameless)
            for row in rec.rows:
                if row not in present:
                    raise KeyStoreError(f"the ledger has no row {row}", version=rec.version)
                if row in unnamed and rec.names:
                    raise KeyStoreError(
                        f"ledger row {row} has no artifact name; aliases cannot be recorded",
                        version=rec.version,
                    )
            raise KeyStoreError(  # pragma: no cover - ok is false only for one of the above
                "the ledger refused the version's records", version=rec.version
            )

        q = self._statements()
        joined = getattr(self._local, "conn", None) is not None
        with self._conn("write to", single=True) as conn:
            self._wrote(keep=False)  # the writer's records after its publish (SECURITY.md)
            answer = conn.execute(
                q["record_version" if joined else "record_version_unflushed"], params
            )
            tx = getattr(self._local, "tx", None)
            if tx is None:
                check(answer)
            else:  # in a batch: answered (and raised) before its COMMIT, with the others
                tx.defer(lambda: check(answer))

    def note_seen(self, artifact: str, alias: str, version: int) -> None:
        """Reader side: ``alias`` of ``artifact`` resolved to ``version`` (monotonic)."""
        _text(artifact, "artifact")
        _text(alias, "alias")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise KeyStoreError(
                f"version must be a non-negative int, not {version!r}", artifact=artifact
            )
        with self._conn("write to", single=True) as conn:
            self._wrote(keep=True)  # a reader's anti-rollback mark
            self._raise_mark(conn, artifact, alias, version, "reader")

    # -- reading ----------------------------------------------------------------------------------

    def newest_version(self, artifact: str, *, alias: str = LATEST) -> int | None:
        """The highest version recorded for ``alias`` of ``artifact`` (see ``Ledger``)."""
        _text(artifact, "artifact")
        _text(alias, "alias")
        if alias == LATEST:
            rows = self._read("newest_latest", (artifact, artifact))
        else:
            rows = self._read("newest_alias", (artifact, alias))
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0])

    def aliases(self, artifact: str) -> dict[str, int]:
        """Every alias mark of ``artifact``: alias -> highest version seen."""
        _text(artifact, "artifact")
        return {str(a): int(v) for a, v in self._read("aliases", (artifact,))}

    def marks(self) -> list[tuple[str, str, int, str]]:
        """Every alias mark: (artifact, alias, version, source), ordered."""
        return [(str(a), str(b), int(v), str(s)) for a, b, v, s in self._read("marks")]

    def find_digest(self, digest: str) -> list[LedgerRow]:
        """Every row that recorded this payload digest (sha256 hex), oldest first."""
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest.lower()):
            raise KeyStoreError(f"not a sha256 hex digest: {_short(digest)}")
        return [LedgerRow(*r) for r in self._read("select_by_digest", (digest.lower(),))]

    def rows(self, *, artifact: str | None = None) -> list[LedgerRow]:
        """Every row (or every row of ``artifact``), oldest first."""
        if artifact is None:
            return [LedgerRow(*r) for r in self._read("select_all")]
        _text(artifact, "artifact")
        return [LedgerRow(*r) for r in self._read("select_by_artifact", (artifact,))]

    def count(self) -> int:
        return int(self._read("count")[0][0])

    def status(self) -> dict[str, Any]:
        """Backend, schema version and counts (``ledger status``)."""
        signatures, artifacts, marks = self._read("counts")[0]
        sequences, history_marks, manifests = self._read("history_counts")[0]
        version = self._read("schema_version")[0][0]
        return {
            "backend": self.backend,
            "location": self.where,
            "schema": self.schema,
            "schema_version": version,
            "code_schema_version": SCHEMA_VERSION,
            "signatures": int(signatures),
            "artifacts": int(artifacts),
            "marks": int(marks),
            "sequences": int(sequences),
            "history_marks": int(history_marks),
            "manifests": int(manifests),
        }
