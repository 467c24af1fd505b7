"""SQLite connections that survive ``fork()`` without damaging the database.

SQLite's rule (https://sqlite.org/howtocorrupt.html, "carrying an open database connection
across a fork"): a connection opened by the parent must be neither used nor closed by a forked
child. Closing it there is the dangerous part: the child's ``sqlite3_close`` runs the WAL's
last-connection shutdown with the parent's lock bookkeeping (which the child does not really
hold), can checkpoint and unlink the ``-wal`` file that other processes are still writing, and
their committed rows vanish (seen here: 4 forked publishers, 40 versions published, 0 rows left
in the store index).

CPython makes that easy to trigger by accident: a ``sqlite3.Connection`` sits in a reference
cycle with its own statement cache, so dropping the last reference does not close it; the
cyclic garbage collector does, later, and after a fork that can be in the child.

``ProcessConnections`` is the bookkeeping that prevents both: the owner registers every
connection it opens; ``close_all`` (called by the owner's ``close`` and by a finalizer when the
owner is dropped) closes them at once in the process that opened them and never in another; a
connection one thread opened for its own use is closed when that thread ends (``close_at_exit``:
otherwise the registry would keep every ended thread's connection, and its three descriptors,
for as long as the owner lives); and right after a fork the child pins every inherited connection for the rest of its life (an extra
reference the garbage collector cannot see, plus a list for inspection), so neither a garbage
collection nor interpreter shutdown in the child ever closes one. The child then opens its own.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
import threading
import weakref

__all__ = ["PINNED", "ProcessConnections", "ThreadEnd"]

# Connections inherited across fork by this process: pinned, never closed (see the module doc).
PINNED: list[sqlite3.Connection] = []


class ThreadEnd:
    """A token kept in a ``threading.local`` next to the thread's connection: it dies when the
    thread ends (CPython releases an ended thread's locals), and with it the connection is
    closed (``ProcessConnections.close_at_exit``)."""

    __slots__ = ("__weakref__",)


class ProcessConnections:
    """The SQLite connections one owner opened in this process (any of its threads)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.conns: list[sqlite3.Connection] = []
        self.lock = threading.Lock()
        _LIVE.add(self)

    def add(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """Register ``conn``, opened by this process (with ``check_same_thread=False``, so that
        ``close_all`` may run on any thread)."""
        with self.lock:
            self.conns.append(conn)
        return conn

    def owned(self) -> bool:
        """True in the process that opened the registered connections."""
        return self.pid == os.getpid()

    def close(self, conn: sqlite3.Connection) -> None:
        """Close one registered connection (in the process that opened it only)."""
        if not self.owned():
            return
        with self.lock:
            if conn in self.conns:
                self.conns.remove(conn)
        conn.close()

    def close_at_exit(self, conn: sqlite3.Connection) -> ThreadEnd:
        """A token for the opening thread's locals: when the thread ends and the token dies,
        ``conn`` is closed, in the process that opened it only (an inherited connection is
        pinned in a forked child, whose locals of the parent's other threads may die there)."""
        token = ThreadEnd()
        weakref.finalize(token, self._release, conn, os.getpid())
        return token

    def _release(self, conn: sqlite3.Connection, pid: int) -> None:
        if pid != os.getpid():
            return
        with self.lock:
            if conn not in self.conns:  # closed already (close, close_all)
                return
            self.conns.remove(conn)
        try:
            conn.close()
        except sqlite3.Error:  # pragma: no cover - closing a connection that failed earlier
            pass

    def close_all(self) -> None:
        """Close every registered connection, in the process that opened them only."""
        if not self.owned():
            return
        with self.lock:
            conns, self.conns = self.conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing a connection that failed earlier
                pass

    def finalize_with(self, owner: object) -> None:
        """Close the connections when ``owner`` is garbage collected (in this process only)."""
        weakref.finalize(owner, self.close_all)

    def _after_fork_in_child(self) -> None:
        for conn in self.conns:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))  # never deallocated, never closed
            PINNED.append(conn)
        self.conns = []
        self.lock = threading.Lock()  # a parent thread may have held the old one
        self.pid = os.getpid()


_LIVE: weakref.WeakSet[ProcessConnections] = weakref.WeakSet()


def _pin_inherited() -> None:
    for registry in list(_LIVE):
        registry._after_fork_in_child()


os.register_at_fork(after_in_child=_pin_inherited)
