"""The signed version history of the PostgreSQL ledger (``core/ledger_postgres.py``): history
locks, sequence allocation, history marks and seen manifests; the interface is the one of
``core/ledger.py``'s docstring, the statements are in ``core/ledger_postgres_sql.py``.

History: a sequence is allocated by one atomic statement (monotonic across every writer of
every machine, never reused); history marks advance under a row lock, only forward; an
artifact's ``history_lock`` is a session advisory lock on a connection of its own, so writers
on different machines allocate and publish one artifact in turn (bounded by ``lock_timeout``).
Durability per write (``_wrote``, core/ledger_postgres_tx.py): a reader's history mark and seen
manifest must survive a server crash; the writer's own records after its publish and an
allocation may be lost (SECURITY.md, "Durability of ledger writes").
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .errors import KeyStoreError
from .history import Position, SeenManifest
from .ledger import (
    HISTORY_SOURCES,
    _check_floor,
    _check_position,
    _manifest_record_values,
    _now_text,
    _position_values,
    _short,
    _text,
    sequences_exhausted,
)
from .ledger_api import LedgerLockTimeoutError

__all__ = ["PostgresHistory"]


class PostgresHistory:
    """The signed-history half of ``PostgresLedger`` (its pools, statements and thread state
    live there)."""

    schema: str
    where: str
    lock_timeout_ms: int
    _conninfo: str
    _local: Any
    _last_ok: dict[int, float]

    def _statements(self) -> dict[str, Any]:  # pragma: no cover - PostgresLedger's
        raise NotImplementedError

    def _after_fork_check(self) -> None:  # pragma: no cover - PostgresLedger's
        raise NotImplementedError

    def _get_lock_pool(self) -> Any:  # pragma: no cover - PostgresLedger's
        raise NotImplementedError

    def _errors(self, doing: str) -> AbstractContextManager[None]:  # pragma: no cover
        raise NotImplementedError

    def _conn(self, doing: str, *, single: bool = False) -> AbstractContextManager[Any]:
        raise NotImplementedError  # pragma: no cover - PostgresLedger's

    def _read(self, name: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # pragma: no cover - PostgresLedger's

    def _wrote(self, *, keep: bool) -> None:  # pragma: no cover - PostgresLedger's
        raise NotImplementedError

    def _history_lock_key(self, artifact: str) -> int:
        """The 64-bit advisory lock key of one artifact's history in this schema."""
        text = f"dagster-wandb-secure history {self.schema} {artifact}"
        return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big", signed=True)

    @contextmanager
    def history_lock(self, artifact: str) -> Iterator[None]:
        """Hold ``artifact``'s history lock: a session advisory lock on a connection of its own
        (not the pool's), held until exit, so writers on every machine sharing this ledger
        allocate and publish one artifact in turn. Waits at most ``lock_timeout`` ms, then
        ``LedgerLockTimeoutError``; a writer that dies releases it with its connection."""
        _text(artifact, "artifact")
        import psycopg
        from psycopg_pool import PoolTimeout

        key = self._history_lock_key(artifact)
        pool = self._get_lock_pool()
        q = self._statements()
        with self._errors("connect to"):
            try:
                conn = pool.getconn()
            except PoolTimeout:  # every session busy or the server away: a connection of its own
                conn = psycopg.connect(self._conninfo, **pool.kwargs)
        reusable = False
        try:
            with self._errors("lock the history of an artifact in"):
                try:
                    conn.execute(q["history_lock"], (key,))
                except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
                    raise LedgerLockTimeoutError(
                        f"another writer held the history lock of {artifact} in the PostgreSQL "
                        f"ledger at {self.where} for more than {self.lock_timeout_ms} ms",
                        artifact=artifact,
                    ) from None
            self._last_ok[id(conn)] = time.monotonic()
            try:
                yield
            finally:
                try:
                    # back to the pool only when the server confirms the lock is released
                    reusable = conn.execute(q["history_unlock"], (key,)).fetchone()[0] is True
                except psycopg.Error:
                    reusable = False  # closing the connection releases it anyway
        finally:
            if not reusable:
                conn.close()  # the pool discards closed connections
            if getattr(conn, "_pool", None) is pool:
                pool.putconn(conn)
            elif not conn.closed:
                conn.close()

    def allocate_sequence(self, artifact: str, *, floor: int) -> int:
        """``max(last allocated, floor) + 1``, remembered: one atomic statement, so sequences
        are monotonic and never reused across every writer of every machine."""
        _text(artifact, "artifact")
        _check_floor(floor, artifact)
        q = self._statements()
        self._after_fork_check()
        # alone (not in a batch()) the allocation skips its own WAL flush: the signature rows'
        # durable commit that must follow before anything is published flushes it too. Inside
        # a batch the batch's commit decides (durable when it records a signature row:
        # core/ledger_postgres_tx.py).
        joined = getattr(self._local, "conn", None) is not None
        statement = q["allocate"] if joined else q["allocate_unflushed"]
        with self._conn("write to", single=True) as conn, self._exhausted(artifact):
            self._wrote(keep=False)  # a lost allocation was used by no published version
            row = conn.execute(statement, (artifact, floor + 1, _now_text())).fetchone()
            return int(row[0])

    def allocate_next(self, artifact: str, *, floor: int) -> tuple[int, SeenManifest | None]:
        """``newest_seen`` and ``allocate_sequence`` above it (``ledger_api.LedgerBackend``):
        one statement, both on one snapshot. Alone it skips its own WAL flush, as
        ``allocate_sequence`` does."""
        _text(artifact, "artifact")
        _check_floor(floor, artifact)
        q = self._statements()
        self._after_fork_check()
        joined = getattr(self._local, "conn", None) is not None
        statement = q["allocate_next"] if joined else q["allocate_next_unflushed"]
        with self._conn("write to", single=True) as conn, self._exhausted(artifact):
            self._wrote(keep=False)  # a lost allocation was used by no published version
            row = conn.execute(
                statement, {"a": artifact, "floor": floor, "now": _now_text()}
            ).fetchone()
        return int(row[0]), (None if row[1] is None else self._seen(row[1:]))

    @staticmethod
    @contextmanager
    def _exhausted(artifact: str) -> Iterator[None]:
        """The last allocated sequence is SQL's largest integer: the ``+ 1`` overflows
        (SQLite's ``allocate_sequence`` refuses it with the same error)."""
        import psycopg

        try:
            yield
        except psycopg.errors.NumericValueOutOfRange:
            raise sequences_exhausted(artifact) from None

    def history_mark(self, artifact: str, alias: str) -> Position | None:
        _text(artifact, "artifact")
        _text(alias, "alias")
        rows = self._read("mark", (artifact, alias))
        return Position(int(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def history_marks(self, artifact: str) -> dict[str, Position]:
        _text(artifact, "artifact")
        return {
            str(alias): Position(int(seq), at, digest)
            for alias, seq, at, digest in self._read("marks_of", (artifact,))
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
        with self._conn("write to", single=True) as conn:
            self._wrote(keep=source == "reader")  # a reader's mark is anti-rollback state
            # one statement: ON CONFLICT DO UPDATE locks the row and re-checks the WHERE on
            # its newest version, so concurrent writers and readers never move it back
            conn.execute(
                self._statements()["advance_mark"],
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
        with self._conn("write to", single=True) as conn:
            self._wrote(keep=source == "reader")  # what a reader saw backs its verdicts
            conn.execute(
                self._statements()["record_manifest"],
                (artifact, digest, *values, version, source, _now_text()),
            )

    @staticmethod
    def _seen(row: Sequence[Any]) -> SeenManifest:
        d, seq, at, pd, version = row
        return SeenManifest(d, None if seq is None else Position(int(seq), at, pd), version)

    def seen_manifest(self, artifact: str, digest: str) -> SeenManifest | None:
        _text(artifact, "artifact")
        rows = self._read("seen_manifest", (artifact, digest))
        return self._seen(rows[0]) if rows else None

    def seen_manifests(self, artifact: str, digests: Iterable[str]) -> dict[str, SeenManifest]:
        """``seen_manifest`` of each of ``digests`` (the seen ones only, by digest), one
        statement (``ledger_api.LedgerBackend``)."""
        _text(artifact, "artifact")
        wanted = sorted({str(d) for d in digests})
        if not wanted:
            return {}
        return {row[0]: self._seen(row) for row in self._read("seen_manifests", (artifact, wanted))}

    def newest_seen(self, artifact: str) -> SeenManifest | None:
        """The seen manifest of ``artifact`` highest in the signed order (format 2 only)."""
        _text(artifact, "artifact")
        rows = self._read("newest_seen", (artifact,))
        return self._seen(rows[0]) if rows else None

    def history_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every sequence, history mark and seen manifest (``ledger migrate``): the same
        shapes as ``ledger_api.export_history``."""
        return {
            "sequences": [(str(a), int(n)) for a, n in self._read("all_sequences")],
            "marks": [
                (str(a), str(b), Position(int(seq), at, d), str(src))
                for a, b, seq, at, d, src in self._read("all_history_marks")
            ],
            "manifests": [
                (str(a), self._seen((d, seq, at, pd, v)), str(src))
                for a, d, seq, at, pd, v, src in self._read("all_seen")
            ],
        }
