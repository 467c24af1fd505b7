"""The local store's SQLite index: schema, per-thread connections, and the version rows.

Tables (schema version in ``PRAGMA user_version``):

- ``artifacts(id, entity, project, name, type, created_at)``, unique ``(entity, project, name)``;
  the type of a name never changes.
- ``versions(artifact_id, number, description, metadata, created_at, created_by_run, files)``;
  ``metadata`` is a JSON object, ``files`` a JSON object ``{relpath: [size, digest, kind]}``:
  the digest the publisher computed (publish by move) or the store while copying, under
  ``kind``, a manifest field name (``sha256``, ``blake3``: the whole file;
  ``envelope_payload_<alg>``: the signed payload digest of the envelope in the file). A hint
  recorded at publish time, not a trust statement (readers verify the signed manifest).
  Schema 1 wrote ``[size, sha256]``; such rows are still read (kind ``sha256``), and opening a
  schema-1 index migrates it to 2 (no row is rewritten; only ``user_version`` changes, so a
  release that reads schema 1 only refuses the folder instead of misreading new rows).
- ``aliases(artifact_id, alias, number)``, unique ``(artifact_id, alias)``: an alias names one
  version; publishing moves ``latest`` (and any alias given) to the new version.
- ``lineage(id, artifact_id, number, run_id, direction, at)``: ``direction`` is ``write`` (the
  run that published the version) or ``read`` (runs that used it).
- ``pending(id, entity, project, name, number, started_at)``: the intent of a publish that is
  moving its folder into place; empty whenever no publish is in its final step.

The index is the source of truth of the local store (WAL journal, busy timeout, one connection
per thread and process). It knows rows, not folders: the store tells it where a version lives.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ..core.keystore_place import STORE_INDEX_NAME
from ..core.sqlite_fork import ProcessConnections
from .base import ArtifactNotFoundError, ArtifactVersion, StoreError, shown
from .local_rows import check_identity, version_from_row

__all__ = ["INDEX_NAME", "SCHEMA_VERSION", "LocalIndex", "artifact_label", "version_folder"]

INDEX_NAME = STORE_INDEX_NAME
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 30.0
_NOT_FOUND_CAP = 20

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS artifacts (
        id INTEGER PRIMARY KEY,
        entity TEXT NOT NULL, project TEXT NOT NULL, name TEXT NOT NULL,
        type TEXT NOT NULL, created_at TEXT NOT NULL,
        UNIQUE (entity, project, name))""",
    """CREATE TABLE IF NOT EXISTS versions (
        artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
        number INTEGER NOT NULL CHECK (number >= 0),
        description TEXT, metadata TEXT NOT NULL, created_at TEXT NOT NULL,
        created_by_run TEXT, files TEXT NOT NULL,
        PRIMARY KEY (artifact_id, number)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS aliases (
        artifact_id INTEGER NOT NULL, alias TEXT NOT NULL, number INTEGER NOT NULL,
        PRIMARY KEY (artifact_id, alias),
        FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number))""",
    "CREATE INDEX IF NOT EXISTS aliases_by_version ON aliases(artifact_id, number)",
    """CREATE TABLE IF NOT EXISTS lineage (
        id INTEGER PRIMARY KEY,
        artifact_id INTEGER NOT NULL, number INTEGER NOT NULL, run_id TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('write', 'read')), at TEXT NOT NULL,
        UNIQUE (artifact_id, number, run_id, direction),
        FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number))""",
    """CREATE TABLE IF NOT EXISTS pending (
        id INTEGER PRIMARY KEY,
        entity TEXT NOT NULL, project TEXT NOT NULL, name TEXT NOT NULL,
        number INTEGER NOT NULL, started_at TEXT NOT NULL)""",
)

# One query for any listing: versions with their artifact and their aliases.
_SELECT_VERSIONS = """
    SELECT a.entity, a.project, a.name, a.type, v.number, v.description, v.metadata,
           v.created_at, v.created_by_run, v.files,
           (SELECT group_concat(al.alias, ',') FROM aliases al
             WHERE al.artifact_id = v.artifact_id AND al.number = v.number)
      FROM versions v JOIN artifacts a ON a.id = v.artifact_id
"""


def artifact_label(entity: str, project: str, name: str) -> str:
    return f"{entity}/{project}/{name}"


def version_folder(artifacts_dir: Path, entity: str, project: str, name: str, number: int) -> Path:
    """Where the store keeps the files of one version: ``<artifacts>/<e>/<p>/<name>/v<N>``.

    Every component is validated first (names by the publishing rules, the number as an
    integer), whatever its origin: a value from the index is hostile input. This checks names
    only; ``LocalArtifactStore`` also checks the resolved path before using it."""
    check_identity(entity, project, name, number)
    # one joinpath, not four `/` (each builds a Path: ~8 us per version in the audit's scan)
    return artifacts_dir.joinpath(entity, project, name, f"v{number}")


class LocalIndex:
    """The SQLite index of one local store folder; safe to use from several threads and
    processes (each thread of each process gets its own connection)."""

    def __init__(
        self,
        path: Path,
        *,
        store_root: Path,
        artifacts_dir: Path,
    ) -> None:
        # no reference back to the store: the index (and with it its connections, closed by
        # the finalizer below) goes as soon as the store does
        self.path = path
        self.store_root = store_root  # named in not-found messages
        self.artifacts_dir = artifacts_dir
        self._local = threading.local()
        # every connection this process opened, closed when the index is dropped (CPython's
        # sqlite3 connections only die in a garbage collection otherwise, which can be in a
        # forked child: core/sqlite_fork.py); inherited ones are pinned in the child
        self._conns = ProcessConnections()
        self._conns.finalize_with(self)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection in autocommit mode; SQLite errors become StoreError.

        One connection per thread and process, opened on first use and kept: opening and
        closing one per call cost about a millisecond each, several times per asset."""
        try:
            conn = self._thread_connection()
            yield conn
        except sqlite3.Error as exc:
            raise self.error(exc) from exc

    def _thread_connection(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        # a connection inherited across fork() must never be used by the child; only this
        # thread uses the new one (check_same_thread=False lets the finalizer close it)
        conn = self._conns.add(
            sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        )
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        # closed when this thread ends (the registry would keep it for the index's lifetime)
        local.conn, local.pid = conn, os.getpid()
        local.end = self._conns.close_at_exit(conn)
        return conn

    def close_thread_connection(self) -> None:
        """Close this thread's connection, if it opened one (a later call reopens it)."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            self._conns.close(conn)
        local.conn = local.end = None

    def close(self) -> None:
        """Close every connection this process opened on the index (all threads'); a later
        call on any thread reopens one."""
        self._conns.close_all()
        self._local = threading.local()

    @contextlib.contextmanager
    def transaction(self, conn: sqlite3.Connection, *, durable: bool = True) -> Iterator[None]:
        """One write transaction. ``durable`` (the default): committed at ``synchronous=FULL``,
        the WAL fsynced before this returns. ``durable=False``: committed at ``NORMAL``, into
        the WAL without an fsync: the commit survives a crash of any process (it is in the
        page cache, which the next process reads), and the next durable commit on this index
        fsyncs it together with its own frames (the WAL is one file, written in order); only
        a power cut before that may lose it. For rows whose loss on a power cut is harmless
        (see the callers)."""
        if not durable:
            conn.execute("PRAGMA synchronous = NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if not durable:
                conn.execute("PRAGMA synchronous = FULL")

    def error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(
            f"the store index {self.path} failed: {exc}",
            hint="check that the store folder is on a local disk and the index is not corrupted "
            "(`sqlite3 index.sqlite3 'PRAGMA integrity_check'`)",
        )

    def initialize(
        self,
        locked: Callable[[], AbstractContextManager[None]],
        recover_pending: Callable[[sqlite3.Connection], None],
        locked_if_free: Callable[[], AbstractContextManager[bool]] | None = None,
    ) -> None:
        """Create the schema on first use, refuse a newer one, and hand a left-over ``pending``
        row to ``recover_pending`` (called under ``locked()``, the store's publish lock; with
        ``locked_if_free``, only if that lock is free now: a held one is a live publisher's,
        and publishers recover under it themselves before they allocate)."""
        with self.connect() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current == SCHEMA_VERSION:
                if conn.execute("SELECT 1 FROM pending LIMIT 1").fetchone() is None:
                    return
        if current == SCHEMA_VERSION:
            if locked_if_free is None:
                with locked(), self.connect() as conn:
                    recover_pending(conn)
                return
            with locked_if_free() as free, self.connect() as conn:
                if free:
                    recover_pending(conn)
            return
        self.check_schema_version(current)
        with locked(), self.connect() as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"the store index {self.path} cannot use the WAL journal (got {mode})",
                    hint="put the store on a local file system",
                )
            with self.transaction(conn):
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                self.check_schema_version(current)
                if current == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                # schema 1 -> 2: the files column may also hold [size, digest, kind]
                if current in (0, 1):
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            recover_pending(conn)  # a migrated index may hold a crashed publish's row

    def check_schema_version(self, current: int) -> None:
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the store index {self.path} has schema version {current}; this release "
                f"reads version {SCHEMA_VERSION}",
                hint="upgrade dagster-wandb-secure to open this store",
            )

    def artifact_row(
        self, conn: sqlite3.Connection, entity: str, project: str, name: str
    ) -> tuple[int, str] | None:
        row = conn.execute(
            "SELECT id, type FROM artifacts WHERE entity = ? AND project = ? AND name = ?",
            (entity, project, name),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def to_version(self, row: Sequence[Any]) -> ArtifactVersion:
        """The version a ``_SELECT_VERSIONS`` row describes; a malformed row (the index is
        hostile input) is a ``VersionRowError`` for that version only."""
        return version_from_row(
            row, lambda e, p, n, number: version_folder(self.artifacts_dir, e, p, n, number)
        )

    def load_version(
        self, conn: sqlite3.Connection, artifact_id: int, number: int
    ) -> ArtifactVersion | None:
        row = conn.execute(
            _SELECT_VERSIONS + " WHERE v.artifact_id = ? AND v.number = ?", (artifact_id, number)
        ).fetchone()
        return self.to_version(row) if row else None

    def available(self, conn: sqlite3.Connection, artifact_id: int) -> str:
        numbers = [
            r[0]
            for r in conn.execute(
                "SELECT number FROM versions WHERE artifact_id = ? ORDER BY number DESC LIMIT ?",
                (artifact_id, _NOT_FOUND_CAP + 1),
            )
        ]
        total = conn.execute(
            "SELECT count(*) FROM versions WHERE artifact_id = ?", (artifact_id,)
        ).fetchone()[0]
        aliases = conn.execute(
            "SELECT alias, number FROM aliases WHERE artifact_id = ? ORDER BY alias LIMIT ?",
            (artifact_id, _NOT_FOUND_CAP + 1),
        ).fetchall()
        versions = ", ".join(f"v{n}" for n in numbers[:_NOT_FOUND_CAP])
        if total > _NOT_FOUND_CAP:
            versions += f", ... ({total} versions in all, newest first)"
        alias_text = ", ".join(f"{a}->v{n}" for a, n in aliases[:_NOT_FOUND_CAP])
        if len(aliases) > _NOT_FOUND_CAP:
            alias_text += ", ..."
        return f"available versions: {versions or 'none'}; aliases: {alias_text or 'none'}"

    def require_artifact(
        self, conn: sqlite3.Connection, entity: str, project: str, name: str, where: str
    ) -> tuple[int, str]:
        art = self.artifact_row(conn, entity, project, name)
        if art is not None:
            return art
        others = [
            shown(r[0])  # index data: a name that is not text is shown, not joined
            for r in conn.execute(
                "SELECT name FROM artifacts WHERE entity = ? AND project = ? ORDER BY name LIMIT ?",
                (entity, project, _NOT_FOUND_CAP + 1),
            )
        ]
        listed = ", ".join(others[:_NOT_FOUND_CAP]) + (
            ", ..." if len(others) > _NOT_FOUND_CAP else ""
        )
        raise ArtifactNotFoundError(
            f"no artifact named {artifact_label(entity, project, name)} in the local store "
            f"{self.store_root}; "
            f"artifacts in {entity}/{project}: {listed or 'none'}",
            artifact=where,
        )

    def write_rows(
        self,
        conn: sqlite3.Connection,
        *,
        art_id: int | None,
        entity: str,
        project: str,
        name: str,
        type: str,
        number: int,
        description: str | None,
        metadata_json: str,
        created_at: str,
        run_id: str | None,
        files_json: str,
        aliases: list[str],
    ) -> None:
        """All index rows of one new version; called inside the publish transaction."""
        if art_id is None:
            cur = conn.execute(
                "INSERT INTO artifacts (entity, project, name, type, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (entity, project, name, type, created_at),
            )
            art_id = int(cur.lastrowid or 0)
        conn.execute(
            "INSERT INTO versions (artifact_id, number, description, metadata, created_at, "
            "created_by_run, files) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (art_id, number, description, metadata_json, created_at, run_id, files_json),
        )
        conn.executemany(
            "INSERT INTO aliases (artifact_id, alias, number) VALUES (?, ?, ?) "
            "ON CONFLICT (artifact_id, alias) DO UPDATE SET number = excluded.number",
            [(art_id, alias, number) for alias in aliases],
        )
        if run_id is not None:
            conn.execute(
                "INSERT OR IGNORE INTO lineage (artifact_id, number, run_id, direction, at) "
                "VALUES (?, ?, ?, 'write', ?)",
                (art_id, number, run_id, created_at),
            )

    def version_key(self, conn: sqlite3.Connection, av: ArtifactVersion) -> int:
        where = av.qualified_name
        art_id, _ = self.require_artifact(conn, av.entity, av.project, av.name, where)
        row = conn.execute(
            "SELECT 1 FROM versions WHERE artifact_id = ? AND number = ?", (art_id, av.version)
        ).fetchone()
        if row is None:
            raise ArtifactNotFoundError(
                f"{where} is not in the local store {self.store_root}; "
                + self.available(conn, art_id),
                artifact=where,
            )
        return art_id

    def identity_rows(self, entity: str, project: str, name: str) -> list[Sequence[Any]]:
        """``(entity, project, name, type, number)`` of every version of one artifact, by
        number (unvalidated: ``local_rows.scan_stub_from_row`` checks them)."""
        with self.connect() as conn:
            return conn.execute(
                "SELECT a.entity, a.project, a.name, a.type, v.number FROM versions v "
                "JOIN artifacts a ON a.id = v.artifact_id WHERE a.entity = ? AND a.project = ? "
                "AND a.name = ? ORDER BY v.number",
                (entity, project, name),
            ).fetchall()

    def version_rows(self, filters: Sequence[tuple[str, str]]) -> list[Sequence[Any]]:
        """The rows of every version matching ``(column, value)`` filters (columns are
        ``a.entity``, ``a.project``, ``a.name``), ordered by entity, project, name, number."""
        sql = _SELECT_VERSIONS
        if filters:
            sql += " WHERE " + " AND ".join(f"{column} = ?" for column, _ in filters)
        sql += " ORDER BY a.entity, a.project, a.name, v.number"
        with self.connect() as conn:
            return conn.execute(sql, [value for _, value in filters]).fetchall()
