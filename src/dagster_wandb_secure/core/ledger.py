"""The digest ledger: one SQLite row per signed payload, plus the signed version history.

It lives in the key store folder (``ledger.sqlite3``) and answers these questions:

- *Did we sign these bytes?* ``find_digest(sha256_hex)`` (audit, ``resign --from KID``).
- *What did we sign for this artifact?* ``rows(artifact=...)``.
- *Where does the next version go, and how far has each alias been seen?* The history
  interface below, keyed by ``entity/project/artifact`` (partition suffix included). Every
  value in it comes from a verified, signed manifest (``core/history.py``), never from a store
  version number. It is the whole contract another ledger backend implements:

  - ``history_lock(artifact) -> ContextManager[None]``: an inter-process lock held by a writer
    from sequence allocation until its version is published (writers of one artifact sharing
    this ledger publish in sequence order);
  - ``allocate_sequence(artifact, *, floor: int) -> int``: atomically
    ``max(last allocated, floor) + 1``, remembered; ``floor`` is the highest signed sequence
    the writer verified in the store;
  - ``history_mark(artifact, alias) -> Position | None`` and
    ``advance_mark(artifact, alias, position, *, source) -> None``: the highest position
    accepted for an alias (``source`` is ``"writer"`` or ``"reader"``); it only moves forward;
  - ``history_marks(artifact) -> dict[str, Position]``: every mark of an artifact (audit);
  - ``record_manifest(artifact, digest, position, *, version, source) -> None`` and
    ``seen_manifest(artifact, digest) -> SeenManifest | None``: the manifests seen (the first
    sighting is kept); ``newest_seen(artifact) -> SeenManifest | None``: the highest among them.

The schema-1 alias marks (``aliases`` table: a bare store version number per alias, written by
``attach_version`` and ``note_seen``) are kept for old tools but no decision reads them: an
unsigned number could be poisoned (mark set at v10^12 by a planted version).

Concurrency: WAL journal, ``busy_timeout``, and every write is a ``BEGIN IMMEDIATE`` transaction
(a deferred transaction that upgrades from read to write can fail with SQLITE_BUSY without
waiting), so many threads and processes can write at once. Connections are opened lazily, one
per process: a connection inherited across ``fork`` is abandoned (never used nor closed in the
child, which could disturb the parent's locks) and a fresh one is opened.

Durability and group commits (``ledger_groups.py``): WAL at ``synchronous=NORMAL``; a bare
``record_signature`` joins the process's open group transaction as a queued row (no SQL on the
caller's thread but the group's first ``BEGIN IMMEDIATE``), committed by the first row added
``GROUP_WINDOW_S`` after the group opened, by the flusher thread at ``FLUSHER_DELAY_S`` when no
row comes (or at ``GROUP_MAX_ROWS``, any other write, ``flush``, ``close``, exit), and durable
at the next ``durable()`` barrier (one WAL fsync). THE RULE: whatever makes a version
visible calls ``durable()`` first (``artifacts/publishing.py``; SECURITY.md states it fully).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import KeyStoreError
from .forkgen import GENERATION
from .fsutil import InterProcessLock
from .history import Position, SeenManifest
from .ledger_groups import (
    _ABANDONED,
    _PENDING,
    GroupCommits,
    _flush_others,
)
from .ledger_rows import (
    _DIGEST_RE,
    MAX_SQL_INT,
    ORIGINS,
    _now_text,
    _short,
    _text,
    parse_version,
    signature_row,
)

__all__ = ["ORIGINS", "Ledger", "LedgerRow", "parse_version"]

LATEST = "latest"
SCHEMA_VERSION = 2
HISTORY_SOURCES = ("writer", "reader")
_SEEN_MANY = (
    "SELECT digest, sequence, signed_at, position_digest, version FROM history_seen "
    "WHERE artifact = ? AND digest IN ("
)
_IN_CHUNK = 500  # digests per ``IN (...)`` (SQLite's variable limit is 999 before 3.32)
_SIGNED_AT_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signatures (
    id               INTEGER PRIMARY KEY,  -- rows are never deleted: ids only grow
    key_id           TEXT    NOT NULL,
    alg              TEXT    NOT NULL,
    digest           TEXT    NOT NULL,
    length           INTEGER NOT NULL CHECK (length >= 0),
    artifact         TEXT,
    artifact_type    TEXT,
    partition        TEXT,
    asset_key        TEXT,
    context_json     TEXT    NOT NULL,
    serializer       TEXT    NOT NULL,
    signed_at        TEXT    NOT NULL,
    run_id           TEXT,
    artifact_version TEXT,
    version_num      INTEGER,
    origin           TEXT    NOT NULL CHECK (origin IN ('signed', 'adopted', 'resigned')),
    recorded_at      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS signatures_by_digest ON signatures (digest);
CREATE INDEX IF NOT EXISTS signatures_by_artifact ON signatures (artifact, version_num);
CREATE TABLE IF NOT EXISTS aliases (
    artifact   TEXT    NOT NULL,
    alias      TEXT    NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 0),
    source     TEXT    NOT NULL CHECK (source IN ('writer', 'reader')),
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (artifact, alias)
);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history_sequences (
    artifact      TEXT    PRIMARY KEY,  -- entity/project/artifact
    last_sequence INTEGER NOT NULL CHECK (last_sequence >= 0),
    updated_at    TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS history_marks (
    artifact   TEXT    NOT NULL,
    alias      TEXT    NOT NULL,
    sequence   INTEGER NOT NULL CHECK (sequence >= 1),
    signed_at  TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    source     TEXT    NOT NULL CHECK (source IN ('writer', 'reader')),
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (artifact, alias)
);
CREATE TABLE IF NOT EXISTS history_seen (
    artifact        TEXT NOT NULL,
    digest          TEXT NOT NULL,  -- sha256 of the manifest envelope
    sequence        INTEGER,        -- the position (NULL for format-1 manifests)
    signed_at       TEXT,
    position_digest TEXT,
    version         TEXT,           -- store version first seen as: a hint for messages
    source          TEXT NOT NULL CHECK (source IN ('writer', 'reader')),
    recorded_at     TEXT NOT NULL,
    PRIMARY KEY (artifact, digest)
);
"""

# Full literal queries (no string building): the LedgerRow fields, in order.
_SELECT_ALL = (
    "SELECT id, key_id, alg, digest, length, artifact, artifact_type, partition, asset_key, "
    "context_json, serializer, signed_at, run_id, artifact_version, origin, recorded_at "
    "FROM signatures ORDER BY id"
)
_SELECT_BY_DIGEST = (
    "SELECT id, key_id, alg, digest, length, artifact, artifact_type, partition, asset_key, "
    "context_json, serializer, signed_at, run_id, artifact_version, origin, recorded_at "
    "FROM signatures WHERE digest = ? ORDER BY id"
)
_SELECT_BY_ARTIFACT = (
    "SELECT id, key_id, alg, digest, length, artifact, artifact_type, partition, asset_key, "
    "context_json, serializer, signed_at, run_id, artifact_version, origin, recorded_at "
    "FROM signatures WHERE artifact = ? ORDER BY id"
)


@dataclass(frozen=True)
class LedgerRow:
    """One signed payload as the ledger recorded it."""

    id: int
    key_id: str
    alg: str
    digest: str
    length: int
    artifact: str | None
    artifact_type: str | None
    partition: str | None
    asset_key: str | None
    context_json: str
    serializer: str
    signed_at: str
    run_id: str | None
    artifact_version: str | None
    origin: str
    recorded_at: str

    @property
    def context(self) -> dict[str, str | None]:
        """The whole signed context (a fresh dict each time)."""
        value: dict[str, str | None] = json.loads(self.context_json)
        return value



class Ledger(GroupCommits):
    """The SQLite digest ledger. Thread-safe; many processes may write at once."""

    def __init__(self, path: Path | str, *, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise KeyStoreError(f"synchronous must be NORMAL or FULL, not {_short(synchronous)}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None  # the process that opened _conn (None: no connection)
        self._conn_gen = GENERATION[0]  # ... and its fork generation (forkgen.py)
        self._mutex = threading.RLock()
        self._batch_depth = 0
        self._group_rows = 0  # rows in the open group transaction (not yet committed)
        self._group_opened = 0.0  # time.monotonic() of the open group's first row
        self._broken: str | None = None  # why a group commit failed (sticky until close)
        self._synced_once = False
        self._queued: list[tuple[Any, ...]] = []  # the open group's rows, inserted at commit
        self._next_id = 0

    def __repr__(self) -> str:
        return f"Ledger({str(self.path)!r})"

    # -- connection -------------------------------------------------------------------------------

    def _after_fork_check(self) -> None:
        # the fork generation, not os.getpid(): no system call per row (forkgen.py)
        if self._pid is not None and self._conn_gen != GENERATION[0]:
            # Inherited across fork: abandon the parent's connection (never use or close it
            # here) and its mutex (another thread of the parent may have held it). The object
            # is kept alive: its deallocation would close it, rolling back the parent's open
            # group transaction through the shared WAL index.
            if self._conn is not None:
                _ABANDONED.append(self._conn)
            self._conn = None
            self._pid = None
            self._mutex = threading.RLock()
            self._batch_depth = 0
            self._group_rows = 0  # the parent's open group stays the parent's
            self._queued = []
            self._broken = None
            self._synced_once = False

    def _connection(self) -> sqlite3.Connection:
        """This process's connection; call with ``self._mutex`` held."""
        conn = self._conn
        if conn is None:
            conn = self._open()
            self._conn, self._pid, self._conn_gen = conn, os.getpid(), GENERATION[0]
        return conn

    def _open(self) -> sqlite3.Connection:
        if not self.path.parent.is_dir():
            raise KeyStoreError(
                f"the ledger folder {self.path.parent} does not exist",
                hint="open the key store first (KeyStore.open creates it)",
            )
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot open the ledger {self.path}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            self._retry(lambda: self._create_schema(conn))
            _restrict_mode(self.path)
        except sqlite3.Error as exc:
            conn.close()
            raise KeyStoreError(
                f"the ledger {self.path} cannot be used: {exc}",
                hint="if the file is corrupt, move it aside; a new ledger starts empty",
            ) from None
        return conn

    @staticmethod
    def _retry(action: Any, attempts: int = 200) -> Any:
        """Run ``action``, retrying on 'database is locked' (schema creation and the switch to
        WAL can race between processes opening a new ledger at the same moment)."""
        for attempt in range(attempts):
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if attempt == attempts - 1:
                    raise
                time.sleep(0.01 + 0.001 * attempt)
        return None  # pragma: no cover

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            if row is not None and row[0] == "1":
                # migration 1 -> 2: the history tables were just created (IF NOT EXISTS); the
                # schema-1 alias marks stay as unused hints
                conn.execute(
                    "UPDATE meta SET value = ? WHERE name = 'schema_version'",
                    (str(SCHEMA_VERSION),),
                )
                row = (str(SCHEMA_VERSION),)
            if row is None or row[0] != str(SCHEMA_VERSION):
                raise KeyStoreError(
                    f"the ledger has schema version {row[0] if row else None}; this library "
                    f"reads version {SCHEMA_VERSION}",
                    hint="upgrade dagster-wandb-secure",
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._after_fork_check()
        with self._mutex:
            conn = self._connection()
            if self._batch_depth:  # inside batch(): join its transaction
                yield conn
                return
            self._commit_group()  # rows sealed before this write commit first
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise KeyStoreError(f"the ledger {self.path} is not writable: {exc}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._after_fork_check()
        if _PENDING:  # another Ledger object of this process may hold uncommitted rows
            _flush_others(self)
        with self._mutex:
            self._insert_queued()  # this connection sees its own open group's rows
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise KeyStoreError(f"cannot read the ledger {self.path}: {exc}") from None

    @contextmanager
    def batch(self) -> Iterator[Ledger]:
        """Group writes (``record_signature``, ``attach_version``, ``note_seen``) made by this
        thread into ONE transaction, committed when the block ends and rolled back entirely if
        it raises. A commit costs tens of microseconds (a WAL append per touched page); a batch
        pays it once. Other threads and processes wait for the ledger meanwhile, so keep
        batches short."""
        with self._write():
            self._batch_depth += 1
            try:
                yield self
            finally:
                self._batch_depth -= 1

    def close(self) -> None:
        """Close this process's connection (a later call reopens it)."""
        self._after_fork_check()
        with self._mutex:
            try:
                if self._conn is not None and self._pid == os.getpid():
                    try:
                        self._commit_group()
                    finally:
                        self._conn.close()
            finally:
                self._conn = None
                self._group_rows = 0
                self._queued = []
                self._broken = None
                self._synced_once = False

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ----------------------------------------------------------------------------------

    _row_values = staticmethod(signature_row)  # the validated column values of one row

    _INSERT = (
        "INSERT INTO signatures (key_id, alg, digest, length, artifact, artifact_type, partition, "
        "asset_key, context_json, serializer, signed_at, run_id, artifact_version, version_num, "
        "origin, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    # grouped rows carry the id handed out under the group's write lock (ledger_groups.py)
    _INSERT_WITH_ID = (
        "INSERT INTO signatures (id, key_id, alg, digest, length, artifact, artifact_type, "
        "partition, asset_key, context_json, serializer, signed_at, run_id, artifact_version, "
        "version_num, origin, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

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
        values = self._row_values(
            key_id=key_id,
            alg=alg,
            digest=digest,
            length=length,
            context=context,
            serializer=serializer,
            signed_at=signed_at,
            run_id=run_id,
            artifact_version=artifact_version,
            origin=origin,
        )
        if self._conn_gen != GENERATION[0]:  # _after_fork_check, inlined (once per row)
            self._after_fork_check()
        with self._mutex:
            if self._batch_depth:
                return self._insert(self._connection(), values)
            return self._group_insert(values)

    def _insert(self, conn: sqlite3.Connection, values: tuple[Any, ...]) -> int:
        row_id = conn.execute(self._INSERT, values).lastrowid
        assert row_id is not None
        return row_id

    def record_many(self, entries: Iterable[Mapping[str, Any]]) -> list[int]:
        """Record many payloads in ONE transaction (an audit setup of 10,000 rows takes well
        under a second). Each entry holds ``record_signature``'s keyword arguments. All or
        nothing: one invalid entry records none."""
        rows = [self._row_values(**dict(entry)) for entry in entries]
        ids: list[int] = []
        with self._write() as conn:
            for values in rows:
                row_id = conn.execute(self._INSERT, values).lastrowid
                assert row_id is not None
                ids.append(row_id)
        return ids

    @staticmethod
    def _raise_mark(
        conn: sqlite3.Connection, artifact: str, alias: str, version: int, source: str
    ) -> None:
        """Move the (artifact, alias) high-water mark up to ``version``; never down."""
        conn.execute(
            "INSERT INTO aliases (artifact, alias, version, source, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (artifact, alias) DO UPDATE SET "
            "version = excluded.version, source = excluded.source, "
            "updated_at = excluded.updated_at WHERE excluded.version > aliases.version",
            (artifact, alias, version, source, _now_text()),
        )

    def attach_version(
        self, row_id: int, *, artifact_version: str, aliases: Sequence[str] = ()
    ) -> None:
        """After publishing: the version (``vN``) the row's payload became, and the aliases the
        writer pointed at it (``latest`` is implied). Alias marks only move forward."""
        if isinstance(row_id, bool) or not isinstance(row_id, int):
            raise KeyStoreError(f"ledger row id must be an int, not {row_id!r}")
        number = parse_version(artifact_version)
        if isinstance(aliases, str):
            raise KeyStoreError("aliases must be a sequence of names, not one string")
        names = [_text(a, "alias") for a in aliases]
        with self._write() as conn:
            row = conn.execute("SELECT artifact FROM signatures WHERE id = ?", (row_id,)).fetchone()
            if row is None:
                raise KeyStoreError(f"the ledger has no row {row_id}", version=artifact_version)
            artifact = row[0]
            conn.execute(
                "UPDATE signatures SET artifact_version = ?, version_num = ? WHERE id = ?",
                (artifact_version, number, row_id),
            )
            if artifact is None:
                if names:
                    raise KeyStoreError(
                        f"ledger row {row_id} has no artifact name; aliases cannot be recorded",
                        version=artifact_version,
                    )
                return
            for alias in dict.fromkeys([LATEST, *names]):
                assert alias is not None
                self._raise_mark(conn, artifact, alias, number, "writer")

    def note_seen(self, artifact: str, alias: str, version: int) -> None:
        """Reader side: ``alias`` of ``artifact`` resolved to ``version``. Monotonic: a lower
        version than the recorded one leaves the mark where it is."""
        _text(artifact, "artifact")
        _text(alias, "alias")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise KeyStoreError(
                f"version must be a non-negative int, not {version!r}", artifact=artifact
            )
        with self._write() as conn:
            self._raise_mark(conn, artifact, alias, version, "reader")

    # -- reading ----------------------------------------------------------------------------------

    def newest_version(self, artifact: str, *, alias: str = LATEST) -> int | None:
        """The highest version number recorded for ``alias`` of ``artifact`` (writers and
        readers combined), or None. For ``latest``: the highest version of the artifact at
        all, under any alias or none."""
        _text(artifact, "artifact")
        _text(alias, "alias")
        if alias == LATEST:
            rows = self._read(
                "SELECT MAX(v) FROM ("
                " SELECT MAX(version) AS v FROM aliases WHERE artifact = ?"
                " UNION ALL"
                " SELECT MAX(version_num) AS v FROM signatures WHERE artifact = ?)",
                (artifact, artifact),
            )
        else:
            rows = self._read(
                "SELECT version FROM aliases WHERE artifact = ? AND alias = ?", (artifact, alias)
            )
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0])

    def aliases(self, artifact: str) -> dict[str, int]:
        """Every alias mark of ``artifact``: alias -> highest version seen."""
        _text(artifact, "artifact")
        return {
            alias: int(version)
            for alias, version in self._read(
                "SELECT alias, version FROM aliases WHERE artifact = ? ORDER BY alias", (artifact,)
            )
        }

    def find_digest(self, digest: str) -> list[LedgerRow]:
        """Every row that recorded this payload digest (sha256 hex), oldest first."""
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest.lower()):
            raise KeyStoreError(f"not a sha256 hex digest: {_short(digest)}")
        return self._rows(_SELECT_BY_DIGEST, (digest.lower(),))

    def rows(self, *, artifact: str | None = None) -> list[LedgerRow]:
        """Every row (or every row of ``artifact``), oldest first."""
        if artifact is None:
            return self._rows(_SELECT_ALL)
        _text(artifact, "artifact")
        return self._rows(_SELECT_BY_ARTIFACT, (artifact,))

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM signatures")[0][0])

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[LedgerRow]:
        return [LedgerRow(*row) for row in self._read(sql, params)]

    def marks(self) -> list[tuple[str, str, int, str]]:
        """Every alias mark: (artifact, alias, version, source), ordered (``ledger migrate``)."""
        return [
            (str(a), str(b), int(v), str(s))
            for a, b, v, s in self._read(
                "SELECT artifact, alias, version, source FROM aliases ORDER BY artifact, alias"
            )
        ]

    def history_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """The whole signed history (``ledger migrate``, ``ledger status``): ``sequences``
        (artifact, last allocated); ``marks`` (artifact, alias, Position, source);
        ``manifests`` (artifact, SeenManifest, source), each ordered."""
        return {
            "sequences": [
                (str(a), int(n))
                for a, n in self._read(
                    "SELECT artifact, last_sequence FROM history_sequences ORDER BY artifact"
                )
            ],
            "marks": [
                (str(a), str(b), Position(int(seq), at, d), str(src))
                for a, b, seq, at, d, src in self._read(
                    "SELECT artifact, alias, sequence, signed_at, digest, source "
                    "FROM history_marks ORDER BY artifact, alias"
                )
            ],
            "manifests": [
                (
                    str(a),
                    SeenManifest(d, None if seq is None else Position(int(seq), at, pd), v),
                    str(src),
                )
                for a, d, seq, at, pd, v, src in self._read(
                    "SELECT artifact, digest, sequence, signed_at, position_digest, version, "
                    "source FROM history_seen ORDER BY artifact, recorded_at, digest"
                )
            ],
        }

    # -- signed history (the interface in the module docstring) ------------------------------

    @contextmanager
    def history_lock(self, artifact: str) -> Iterator[None]:
        """Hold the inter-process lock of ``artifact``'s history (a file lock next to the
        ledger, one per artifact so unrelated artifacts never wait for each other)."""
        _text(artifact, "artifact")
        folder = self.path.parent / "ledger.locks"
        folder.mkdir(mode=0o700, exist_ok=True)
        name = hashlib.sha256(artifact.encode("utf-8")).hexdigest()[:32]
        with InterProcessLock(folder / f"{name}.lock", timeout=BUSY_TIMEOUT_MS / 1000):
            yield

    def allocate_sequence(self, artifact: str, *, floor: int) -> int:
        """``max(last allocated, floor) + 1``, remembered atomically."""
        _text(artifact, "artifact")
        _check_floor(floor, artifact)
        with self._write() as conn:
            row = conn.execute(
                "SELECT last_sequence FROM history_sequences WHERE artifact = ?", (artifact,)
            ).fetchone()
            sequence = max(floor, int(row[0]) if row else 0) + 1
            if sequence > MAX_SQL_INT:
                raise sequences_exhausted(artifact)
            conn.execute(
                "INSERT INTO history_sequences (artifact, last_sequence, updated_at) "
                "VALUES (?, ?, ?) ON CONFLICT (artifact) DO UPDATE SET "
                "last_sequence = excluded.last_sequence, updated_at = excluded.updated_at",
                (artifact, sequence, _now_text()),
            )
        return sequence

    def history_mark(self, artifact: str, alias: str) -> Position | None:
        _text(artifact, "artifact")
        _text(alias, "alias")
        rows = self._read(
            "SELECT sequence, signed_at, digest FROM history_marks "
            "WHERE artifact = ? AND alias = ?",
            (artifact, alias),
        )
        return Position(int(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def history_marks(self, artifact: str) -> dict[str, Position]:
        _text(artifact, "artifact")
        return {
            alias: Position(int(seq), at, digest)
            for alias, seq, at, digest in self._read(
                "SELECT alias, sequence, signed_at, digest FROM history_marks "
                "WHERE artifact = ? ORDER BY alias",
                (artifact,),
            )
        }

    def advance_mark(
        self, artifact: str, alias: str, position: Position, *, source: str
    ) -> None:
        """Move the mark of (artifact, alias) up to ``position``; never down."""
        _text(artifact, "artifact")
        _text(alias, "alias")
        _check_position(position)
        if source not in HISTORY_SOURCES:
            raise KeyStoreError(f"source must be one of {HISTORY_SOURCES}, not {_short(source)}")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO history_marks (artifact, alias, sequence, signed_at, digest, source, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (artifact, alias) DO UPDATE "
                "SET sequence = excluded.sequence, signed_at = excluded.signed_at, "
                "digest = excluded.digest, source = excluded.source, "
                "updated_at = excluded.updated_at WHERE (excluded.sequence, excluded.signed_at, "
                "excluded.digest) > (history_marks.sequence, history_marks.signed_at, "
                "history_marks.digest)",
                (artifact, alias, *_position_values(position), source, _now_text()),
            )

    def record_manifest(
        self,
        artifact: str,
        digest: str,
        position: Position | None,
        *,
        version: str | None,
        source: str,
    ) -> None:
        """Remember a manifest envelope seen for ``artifact`` (the first sighting is kept)."""
        values = _manifest_record_values(artifact, digest, position, version, source)
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO history_seen (artifact, digest, sequence, signed_at, "
                "position_digest, version, source, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (artifact, digest, *values, version, source, _now_text()),
            )

    def seen_manifest(self, artifact: str, digest: str) -> SeenManifest | None:
        _text(artifact, "artifact")
        rows = self._read(
            "SELECT digest, sequence, signed_at, position_digest, version FROM history_seen "
            "WHERE artifact = ? AND digest = ?",
            (artifact, digest),
        )
        if not rows:
            return None
        d, seq, at, pd, version = rows[0]
        position = None if seq is None else Position(int(seq), at, pd)
        return SeenManifest(d, position, version)

    def seen_manifests(self, artifact: str, digests: Iterable[str]) -> dict[str, SeenManifest]:
        """``seen_manifest`` of each of ``digests`` (the seen ones only, by digest) in one
        statement per ``_IN_CHUNK`` digests: a writer's ``store_head`` looks up every store
        version's manifest at once, not one read per version."""
        _text(artifact, "artifact")
        wanted = sorted({str(d) for d in digests})
        out: dict[str, SeenManifest] = {}
        for at in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[at : at + _IN_CHUNK]
            # only placeholders are interpolated: every value is a parameter
            sql = _SEEN_MANY + ", ".join("?" * len(chunk)) + ")"
            rows = self._read(sql, (artifact, *chunk))
            for d, seq, at_, pd, version in rows:
                position = None if seq is None else Position(int(seq), at_, pd)
                out[d] = SeenManifest(d, position, version)
        return out

    def newest_seen(self, artifact: str) -> SeenManifest | None:
        """The seen manifest of ``artifact`` highest in the signed order (format 2 only)."""
        _text(artifact, "artifact")
        rows = self._read(
            "SELECT digest, sequence, signed_at, position_digest, version FROM history_seen "
            "WHERE artifact = ? AND sequence IS NOT NULL "
            "ORDER BY sequence DESC, signed_at DESC, position_digest DESC, digest DESC LIMIT 1",
            (artifact,),
        )
        if not rows:
            return None
        d, seq, at, pd, version = rows[0]
        return SeenManifest(d, Position(int(seq), at, pd), version)

    # -- a publish's coarse steps (ledger_api.LedgerBackend) ----------------------------------

    def allocate_next(self, artifact: str, *, floor: int) -> tuple[int, SeenManifest | None]:
        """``newest_seen``, then ``allocate_sequence`` above it: the sequence
        ``max(last allocated, floor, newest seen's sequence) + 1`` and that newest seen
        manifest (the writer's parent candidate). The read stays outside the allocation's
        write transaction (as the two calls were made before): a read flushes other ledger
        objects' row groups, which must never wait while this one holds the write lock."""
        _text(artifact, "artifact")
        _check_floor(floor, artifact)
        seen = self.newest_seen(artifact)
        above = seen.position.sequence if seen is not None and seen.position else 0
        return self.allocate_sequence(artifact, floor=max(floor, above)), seen

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
        """The writer's records of the version it published, one transaction (all or
        nothing): ``attach_version`` for every row, and with ``history_key`` the manifest seen
        and the history marks of ``latest`` and ``marks`` (``record_manifest``,
        ``advance_mark``, source ``writer``)."""
        rec = version_record(
            rows, artifact_version=artifact_version, aliases=aliases, history_key=history_key,
            manifest_digest=manifest_digest, position=position, marks=marks,
        )
        with self.batch():
            for row in rec.rows:
                self.attach_version(row, artifact_version=rec.version, aliases=rec.names)
            if rec.key is not None and rec.position is not None and rec.digest is not None:
                self.record_manifest(
                    rec.key, rec.digest, rec.position, version=rec.version, source="writer"
                )
                for alias in rec.marks:
                    self.advance_mark(rec.key, alias, rec.position, source="writer")



def _manifest_record_values(
    artifact: str, digest: str, position: Position | None, version: str | None, source: str
) -> tuple[Any, ...]:
    """Validate ``record_manifest``'s arguments (every backend) and return the position's
    column values (``None`` x 3 when the manifest has no signed position)."""
    _text(artifact, "artifact")
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise KeyStoreError(f"not a sha256 hex digest: {_short(digest)}")
    if position is not None:
        _check_position(position)
    _text(version, "version", optional=True)
    if source not in HISTORY_SOURCES:
        raise KeyStoreError(f"source must be one of {HISTORY_SOURCES}, not {_short(source)}")
    return _position_values(position) if position is not None else (None, None, None)

@dataclass(frozen=True)
class VersionRecord:
    """``record_version``'s arguments, validated (every backend checks them alike)."""

    rows: tuple[int, ...]  # each once, in order
    version: str
    number: int
    names: tuple[str, ...]  # the aliases asked for (``attach_version``'s)
    aliases: tuple[str, ...]  # the alias marks: ``latest`` and ``names``, each once
    key: str | None  # the history part (None: attach only)
    digest: str | None
    position: Position | None
    marks: tuple[str, ...]  # the history marks: ``latest`` and ``marks``, each once


def version_record(
    rows: Sequence[int],
    *,
    artifact_version: str,
    aliases: Sequence[str],
    history_key: str | None,
    manifest_digest: str | None,
    position: Position | None,
    marks: Sequence[str],
) -> VersionRecord:
    """Validate ``record_version``'s arguments (the checks of ``attach_version``,
    ``record_manifest`` and ``advance_mark``) before anything is written."""
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise KeyStoreError(f"ledger row ids must be a sequence of ints, not {_short(rows)}")
    for row_id in rows:
        if isinstance(row_id, bool) or not isinstance(row_id, int):
            raise KeyStoreError(f"ledger row id must be an int, not {row_id!r}")
        if not -MAX_SQL_INT - 1 <= row_id <= MAX_SQL_INT:  # no such row on either backend
            raise KeyStoreError(f"ledger row id must be a 64-bit int, not {row_id}",
                                version=artifact_version)
    number = parse_version(artifact_version)
    names = tuple(_names(aliases, "aliases"))
    if history_key is None:
        if manifest_digest is not None or position is not None or marks:
            raise KeyStoreError("a manifest, position or marks need the history_key they belong to")
        history_marks: tuple[str, ...] = ()
    else:
        if position is None:
            raise KeyStoreError("the writer's history records need the version's position")
        _manifest_record_values(history_key, manifest_digest, position, artifact_version,
                                "writer")  # type: ignore[arg-type]
        history_marks = tuple(dict.fromkeys([LATEST, *_names(marks, "marks")]))
    return VersionRecord(
        tuple(dict.fromkeys(rows)), artifact_version, number, names,
        tuple(dict.fromkeys([LATEST, *names])), history_key, manifest_digest, position,
        history_marks,
    )


def _names(values: Sequence[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise KeyStoreError(f"{what} must be a sequence of names, not one string")
    return [str(_text(a, "alias")) for a in values]


def _check_floor(floor: object, artifact: str) -> None:
    """A floor is a signed sequence (``0 <= n <= MAX_SQL_INT``); the largest leaves none above."""
    if (isinstance(floor, bool) or not isinstance(floor, int) or floor < 0
            or floor > MAX_SQL_INT):
        raise KeyStoreError(f"floor must be a non-negative 64-bit int, not {floor!r}")
    if floor == MAX_SQL_INT:
        raise sequences_exhausted(artifact)


def sequences_exhausted(artifact: str) -> KeyStoreError:
    """Every signed sequence of ``artifact`` up to SQL's largest integer is taken (the same
    error on both backends)."""
    return KeyStoreError(
        f"no signed sequence is left for {artifact}: {MAX_SQL_INT} is taken", artifact=artifact
    )


def _check_position(position: object) -> None:
    if (
        not isinstance(position, Position)
        or isinstance(position.sequence, bool)
        or not isinstance(position.sequence, int)
        or not 1 <= position.sequence <= MAX_SQL_INT
        or not isinstance(position.signed_at, str)
        or not _SIGNED_AT_RE.fullmatch(position.signed_at)
        or not isinstance(position.digest, str)
        or not _DIGEST_RE.fullmatch(position.digest)
    ):
        raise KeyStoreError(f"not a signed history position: {_short(position)}")


def _position_values(position: Position) -> tuple[int, str, str]:
    return position.sequence, position.signed_at, position.digest


def _restrict_mode(path: Path) -> None:
    """The ledger and its WAL/SHM side files are 0600, like the rest of the key store."""
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if candidate.stat().st_mode & 0o077:
                os.chmod(candidate, 0o600)
        except FileNotFoundError:
            pass
        except PermissionError:  # someone else's file on a shared store: leave it, not ours
            pass
