"""Group commits of the SQLite ledger: pending signature rows share one transaction, and the
``durable()`` barrier (the rule is in ``ledger.py``'s docstring and SECURITY.md).

The caller's thread does no SQL per row. The group's first row opens the transaction
(``BEGIN IMMEDIATE``: the write lock, so no other connection can insert until the commit) and
reads ``MAX(id)``; each row then gets the next id and is queued as a prebuilt tuple. The queue is
inserted with one multi-row INSERT per 32 rows (``_insert_rows``; explicit ids, so the ids handed out are exactly the stored
ones; a clash is impossible under the lock and would fail the group closed) before the commit,
and before any read or write of this ledger, so the connection always sees its own rows. The
caller commits its own group at the first row added ``GROUP_WINDOW_S`` after the group opened
(or at ``GROUP_MAX_ROWS`` rows); the flusher thread commits a group only at
``FLUSHER_DELAY_S``, when no further row came. So a steady signing loop commits on its own
thread and never waits for the flusher's commit, whose SQLite steps would each hand the GIL
back and forth between the two threads. The flusher keeps watching a busy ledger (one look per
window) instead of being woken by every group."""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import KeyStoreError

GROUP_MAX_ROWS = 64  # a group transaction commits when this many rows are pending
GROUP_WINDOW_S = 0.002  # ... or at the first row this long after the group's first row
# ... or, when no row comes, by the flusher thread this long after it (later than the caller's
# own deadline, so a process that keeps signing commits on its own thread)
FLUSHER_DELAY_S = 1.5 * GROUP_WINDOW_S
# the flusher keeps watching a ledger this long after its last row before it goes idle (an
# idle flusher must be woken by the next group's first row: a notify and a thread switch)
_WATCH_S = 25 * GROUP_WINDOW_S
MAX_ROW_ID = (1 << 63) - 1


class GroupCommits:
    """The group-commit half of ``Ledger`` (its connection, mutex and fork state live there)."""

    path: Path
    synchronous: str
    _conn: sqlite3.Connection | None
    _pid: int | None
    _mutex: Any
    _batch_depth: int
    _group_rows: int
    _group_opened: float  # time.monotonic() of the open group's first row
    _broken: str | None
    _synced_once: bool
    _queued: list[tuple[Any, ...]]  # (id, *values) rows of the open group not inserted yet
    _next_id: int  # the id the group's next row gets (valid while the group is open)
    _INSERT_WITH_ID: str

    def _connection(self) -> sqlite3.Connection:  # pragma: no cover - Ledger's
        raise NotImplementedError

    def _after_fork_check(self) -> None:  # pragma: no cover - Ledger's
        raise NotImplementedError

    def _group_insert(self, values: tuple[Any, ...]) -> int:
        """Add one row to the open group transaction (opening it); call with the mutex held.
        No SQL runs here except when the row opens or commits the group."""
        if self._broken is not None:  # _check_broken, inlined (once per row)
            self._check_broken()
        if not self._group_rows:
            self._open_group()
        row_id = self._next_id
        if row_id > MAX_ROW_ID:  # pragma: no cover - 2^63 rows
            raise KeyStoreError(f"the ledger {self.path} has no row id left")
        self._next_id = row_id + 1
        self._queued.append((row_id, *values))
        self._group_rows += 1
        if self._group_rows >= GROUP_MAX_ROWS or (
            self._group_rows > 1 and time.monotonic() - self._group_opened >= GROUP_WINDOW_S
        ):
            self._commit_group()  # due: the caller commits, the flusher finds nothing to do
        elif self._group_rows == 1:
            _schedule(self)
        return row_id

    def _open_group(self) -> None:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise KeyStoreError(f"the ledger {self.path} is not writable: {exc}") from None
        try:
            top = conn.execute("SELECT MAX(id) FROM signatures").fetchone()[0]
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._next_id = (top or 0) + 1
        self._group_opened = time.monotonic()

    def _insert_queued(self) -> None:
        """Insert the open group's queued rows (not committed); call with the mutex held."""
        if not self._queued:
            return
        rows, self._queued = self._queued, []
        conn = self._conn
        try:
            assert conn is not None
            _insert_rows(conn, self._INSERT_WITH_ID, rows)
        except BaseException as exc:  # the ids were handed out: fail closed
            self._broken = f"inserting grouped rows {_describe(rows)} failed: {exc}"
            self._group_rows = 0
            if conn is not None and conn.in_transaction:
                with _suppress_sqlite():
                    conn.execute("ROLLBACK")
            self._check_broken()
            raise  # pragma: no cover - _check_broken raised

    def _check_broken(self) -> None:
        if self._broken is not None:
            raise KeyStoreError(
                f"the ledger {self.path} lost uncommitted signature rows ({self._broken})",
                hint="nothing signed since the last durable() may be published; close the key "
                "store (or the ledger) and sign again",
            )

    def _commit_group(self) -> None:
        """Commit the open group transaction, if any; call with the mutex held."""
        self._check_broken()
        if not self._group_rows:
            return
        self._insert_queued()
        conn = self._conn
        self._group_rows = 0
        try:
            assert conn is not None
            conn.execute("COMMIT")
        except BaseException as exc:
            self._broken = f"COMMIT failed: {exc}"
            if conn is not None and conn.in_transaction:
                with _suppress_sqlite():
                    conn.execute("ROLLBACK")
            self._check_broken()
            raise  # pragma: no cover - _check_broken raised

    def _flush_if_due(self, now: float) -> float | None:
        """The flusher thread's step: commit a due group; returns when to look again, or None
        when this ledger has been quiet for ``_WATCH_S`` (the flusher may then go idle)."""
        if not self._mutex.acquire(blocking=False):
            return now + GROUP_WINDOW_S / 4  # busy (a caller, a batch, a commit): look again soon
        try:
            if self._pid != os.getpid():
                return None
            if not self._group_rows:
                # committed by its caller; keep watching a busy ledger so the next group needs
                # no wake-up call (a notify and a thread switch per group)
                return now + GROUP_WINDOW_S if now - self._group_opened < _WATCH_S else None
            flusher_due = self._group_opened + FLUSHER_DELAY_S
            if now < flusher_due:
                return flusher_due
            try:
                self._commit_group()  # a failure breaks the ledger; the next caller sees it
            except (sqlite3.Error, KeyStoreError):
                _BROKEN.add(self)  # ... and if none comes, the exit reports it
            return None
        finally:
            self._mutex.release()

    def flush(self) -> None:
        """Commit this process's pending group now (not fsynced: see ``durable``)."""
        self._after_fork_check()
        with self._mutex:
            if not self._batch_depth:
                self._commit_group()

    def durable(self) -> None:
        """The durability barrier: commit the pending group, then fsync the WAL once, which
        covers every row committed so far by any process (a WAL is only restarted after a
        checkpoint that synced the database file). Call it before making a version visible."""
        self._after_fork_check()
        with self._mutex:
            if self._batch_depth:
                raise KeyStoreError("ledger.durable() cannot run inside ledger.batch()")
            self._commit_group()
            if self.synchronous == "FULL" and self._synced_once:
                return  # every commit was fsynced already
            self._connection()  # an open connection keeps the WAL file in place
            try:
                _fsync_path(self.path.with_name(self.path.name + "-wal"))
                if not self._synced_once:  # the folder entries (WAL, database), once
                    _fsync_path(self.path.parent, directory=True)
                # NEVER open (and so close) the database file itself here: closing any
                # descriptor of it drops every POSIX lock this process holds on it, including
                # the SHARED lock each WAL-mode connection keeps. Another process closing its
                # connection then believes it is the last one, checkpoints and deletes the WAL
                # and -shm, and this process's next commits go to the unlinked WAL: lost
                # without an error (the flaky storm test, tests/core/test_ledger_wal_locks.py).
                # SQLite syncs the database file itself: at its creation (the switch to WAL is
                # a synced rollback-journal commit, folder included) and after every checkpoint.
            except OSError as exc:
                raise KeyStoreError(
                    f"cannot make the ledger {self.path} durable: {exc.strerror or exc}"
                ) from None
            self._synced_once = True


# Rows per INSERT statement: one multi-row INSERT ... VALUES (...), (...) runs the statement
# (its cursors on the table and both indexes, the ephemeral table of the CHECK's IN list) once per
# chunk instead of once per row, and a None is written as a NULL literal, not bound (the sqlite3
# module looks up an adapter for every bound None). 32 rows of 17 columns stay far below SQLite's
# 999-parameter limit of old versions.
INSERT_CHUNK_ROWS = 32
_CHUNK_SQL: dict[tuple[str, tuple[tuple[bool, ...], ...]], str] = {}


def _insert_rows(conn: sqlite3.Connection, insert: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (values in the column order of ``insert``, an ``INSERT ... VALUES (?,
    ...)`` with one ``?`` per column) with one statement per ``INSERT_CHUNK_ROWS`` rows; what is
    stored is what ``executemany(insert, rows)`` stores."""
    head = insert[: insert.rindex("VALUES")] + "VALUES "
    for start in range(0, len(rows), INSERT_CHUNK_ROWS):
        chunk = rows[start : start + INSERT_CHUNK_ROWS]
        masks = tuple(tuple(v is None for v in row) for row in chunk)
        sql = _CHUNK_SQL.get((insert, masks))
        if sql is None:
            sql = head + ", ".join(
                "(" + ", ".join("NULL" if null else "?" for null in mask) + ")" for mask in masks
            )
            if len(_CHUNK_SQL) >= 256:
                _CHUNK_SQL.clear()
            _CHUNK_SQL[(insert, masks)] = sql
        conn.execute(sql, [v for row in chunk for v in row if v is not None])


def _describe(rows: list[tuple[Any, ...]]) -> str:
    """Which queued rows (``(id, *Ledger._INSERT values)``) a failure lost: their ids, key ids
    and artifacts, so the caller can tell which signed objects must be sealed again."""
    kids = sorted({str(r[1]) for r in rows})
    artifacts = sorted({str(r[5]) for r in rows if r[5] is not None})
    def few(names: list[str]) -> str:
        text = ", ".join(ascii(n[:64]) for n in names[:4])
        return text + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    where = f"ids {rows[0][0]}-{rows[-1][0]}, key ids {few(kids)}"
    return where + (f", artifacts {few(artifacts)}" if artifacts else "")


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    if directory:
        flags |= getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return  # no WAL file: every committed row is in the (synced) database file
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _suppress_sqlite() -> Iterator[None]:
    try:
        yield
    except (sqlite3.Error, KeyStoreError):
        pass


# --- the flusher: one daemon thread per process commits due groups of every ledger ----------

# strong references: a Ledger dropped (or never closed) with an open group stays here until that
# group is committed (by the flusher, or at exit); its collection would roll the group back
_PENDING: set[GroupCommits] = set()
_BROKEN: set[GroupCommits] = set()  # broken by the flusher's commit: reported at exit
_FLUSH_CV = threading.Condition()
_FLUSHER: list[threading.Thread] = []
_ABANDONED: list[sqlite3.Connection] = []  # connections inherited across fork, never closed
_FORK_GATE = threading.Lock()  # held by the flusher while it commits, and across os.fork()


def _schedule(ledger: GroupCommits) -> None:
    """Make sure the flusher watches ``ledger`` (called by a group's first row). A watched
    ledger needs no wake-up: the flusher looks at it at least every ``GROUP_WINDOW_S``, and a
    group opened after a look is due no earlier than the next one."""
    with _FLUSH_CV:
        alive = bool(_FLUSHER) and _FLUSHER[0].is_alive()
        if alive and ledger in _PENDING:
            return
        _PENDING.add(ledger)
        if not alive:
            # multiprocessing children leave through os._exit (no atexit) after running the
            # finalizers registered in the child itself (the parent's are cleared at fork)
            multiprocessing.util.Finalize(None, _flush_all_at_exit, exitpriority=100)
            thread = threading.Thread(target=_flush_loop, name="ledger-group-commit", daemon=True)
            _FLUSHER[:] = [thread]
            thread.start()
        _FLUSH_CV.notify()


def _flush_loop() -> None:
    while True:
        with _FLUSH_CV:
            while not _PENDING:
                _FLUSH_CV.wait()
            ledgers = list(_PENDING)
        now = time.monotonic()
        soonest: float | None = None
        for ledger in ledgers:
            with _FORK_GATE:  # never inside SQLite while another thread forks (its mutexes)
                due = ledger._flush_if_due(now)
            if due is None:
                with _FLUSH_CV:
                    if not ledger._group_rows:
                        _PENDING.discard(ledger)
            else:
                soonest = due if soonest is None else min(soonest, due)
        if soonest is not None:
            time.sleep(max(soonest - time.monotonic(), 0.0002))


def _flush_others(reader: GroupCommits) -> None:
    for ledger in list(_PENDING):
        if ledger is not reader and ledger._group_rows and ledger.path == reader.path:
            with _suppress_sqlite():
                ledger.flush()


def _flush_all_at_exit() -> None:
    """Commit every open group at exit. A commit that fails is raised once every ledger was
    tried (the ids of those rows were handed out: the loss must not pass silently)."""
    error: BaseException | None = None
    for ledger in {*_PENDING, *_BROKEN}:
        try:
            ledger.flush()  # a ledger closed since it broke is no longer broken: a no-op
        except (sqlite3.Error, KeyStoreError) as exc:
            _PENDING.discard(ledger)  # reported once (atexit and multiprocessing both run this)
            _BROKEN.discard(ledger)
            error = error or exc
    if error is not None:
        raise error


def _reset_after_fork() -> None:
    global _FLUSH_CV, _FORK_GATE
    _FLUSH_CV = threading.Condition()
    _FORK_GATE = threading.Lock()
    _FLUSHER.clear()
    _PENDING.clear()
    _BROKEN.clear()


atexit.register(_flush_all_at_exit)
def _before_fork() -> None:
    """Commit every open group first: a child must never inherit a connection that holds
    SQLite's locks (SQLite shares lock state between the connections of one process, so the
    child's own connection would wait for the abandoned one forever)."""
    _FORK_GATE.acquire()
    for ledger in list(_PENDING):
        if ledger._group_rows and ledger._mutex.acquire(timeout=5):
            try:
                if not ledger._batch_depth and ledger._pid == os.getpid():
                    with _suppress_sqlite():
                        ledger._commit_group()
            finally:
                ledger._mutex.release()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=lambda: _FORK_GATE.release(),
    after_in_child=_reset_after_fork,
)
