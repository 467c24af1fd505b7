"""The PostgreSQL wire protocol as a client spoke it (libpq's trace): round trips and the
statements of each transaction, counted on every connection a ledger opens.

A round trip is a client message followed by a server one: the client waited for an answer.
Prepared statements are resolved to their text (a ``Bind`` names the ``Parse`` it uses).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq

_PARSE = re.compile(r'^ "([^"]*)" "(.*)" \d+( NNNN)*$')
_BIND = re.compile(r'^ "[^"]*" "([^"]*)"')
_LOCK = threading.Lock()


@dataclass
class Tracer:
    folder: Path
    conns: list[Any] = field(default_factory=list)
    spans: dict[int, list[list[int]]] = field(default_factory=dict)  # counted [start, end)

    def _path(self, i: int) -> Path:
        return self.folder / f"trace-{i}.txt"

    def attach(self, conn: Any) -> None:
        """Trace ``conn`` from its first statement (prepared names are resolved from there);
        pools connect from their own threads."""
        with _LOCK:
            conn._dws_trace = self._path(len(self.conns)).open("w")  # open while libpq writes
            self.conns.append(conn)
        self._trace(conn)

    @staticmethod
    def _trace(conn: Any) -> None:
        conn.pgconn.trace(conn._dws_trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    def _sizes(self) -> dict[int, int]:
        """Every connection's trace length so far (libpq's stream flushed)."""
        sizes = {}
        for i, conn in enumerate(self.conns):
            if not conn.closed and getattr(conn, "_dws_trace", None) is not None:
                conn.pgconn.untrace()  # flushes libpq's stream
                self._trace(conn)
            sizes[i] = self._path(i).stat().st_size
        return sizes

    def start(self) -> None:
        """Count from here on (what came before only names prepared statements), until
        ``pause`` (then ``start`` again counts on: several spans add up)."""
        for i, size in self._sizes().items():
            self.spans.setdefault(i, []).append([size, 1 << 62])

    def pause(self) -> None:
        """Stop counting (what follows still names prepared statements)."""
        for i, size in self._sizes().items():
            if i in self.spans:
                self.spans[i][-1][1] = size

    def _counted(self, i: int, offset: int) -> bool:
        return any(start <= offset < end for start, end in self.spans[i])

    def stop(self) -> None:
        for conn in self.conns:
            if getattr(conn, "_dws_trace", None) is not None:
                if not conn.closed:
                    conn.pgconn.untrace()
                conn._dws_trace.close()
                conn._dws_trace = None

    def _messages(self) -> Iterator[list[tuple[str, str, str, bool]]]:
        """Per connection: (direction, message, rest, counted) for every message traced."""
        for i in self.spans:
            rows = []
            with self._path(i).open("rb") as f:
                data = f.read()
            for offset, line in _lines(data):
                parts = line.split("\t")
                if len(parts) >= 3:
                    rest = parts[3] if len(parts) > 3 else ""
                    rows.append((parts[0], parts[2], rest, self._counted(i, offset)))
            yield rows

    def round_trips(self) -> int:
        trips = 0
        for rows in self._messages():
            last = None
            for direction, _kind, _rest, counted in rows:
                trips += counted and direction == "B" and last == "F"
                last = direction
        return trips

    def transactions(self) -> list[list[str]]:
        """The statements each connection ran, grouped: BEGIN ... COMMIT as one group, every
        statement outside one as a group of its own (autocommit)."""
        groups: list[list[str]] = []
        for rows in self._messages():
            named: dict[str, str] = {}
            unnamed = ""
            open_tx: list[str] | None = None
            for direction, kind, rest, counted in rows:
                if direction != "F":
                    continue
                if kind == "Parse" and (m := _PARSE.match(rest)):
                    if m.group(1):
                        named[m.group(1)] = m.group(2)
                    else:
                        unnamed = m.group(2)
                    continue
                if kind != "Bind" or not (m := _BIND.match(rest)):
                    continue
                text = named[m.group(1)] if m.group(1) else unnamed
                if not counted:
                    continue
                if text == "BEGIN":
                    open_tx = [text]
                elif open_tx is not None:
                    open_tx.append(text)
                    if text in ("COMMIT", "ROLLBACK"):
                        groups.append(open_tx)
                        open_tx = None
                else:
                    groups.append([text])
        return groups


@contextmanager
def tracing(monkeypatch: Any, folder: Path) -> Iterator[Tracer]:
    """Trace every psycopg connection opened in the block (counted from ``Tracer.start``)."""
    tracer = Tracer(folder)
    original = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]

    def connect(cls: Any, *args: Any, **kwargs: Any) -> Any:
        conn = original(cls, *args, **kwargs)
        tracer.attach(conn)
        return conn

    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(connect))
    try:
        yield tracer
    finally:
        tracer.stop()


def _lines(data: bytes) -> Iterator[tuple[int, str]]:
    offset = 0
    for raw in data.split(b"\n"):
        yield offset, raw.decode("utf-8", "replace")
        offset += len(raw) + 1
