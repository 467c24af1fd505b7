"""One transaction of the PostgreSQL ledger (``core/ledger_postgres.py``): as few round trips
as its statements allow, and a WAL flush at COMMIT only when it recorded a signature row.

Round trips. The connection is in pipeline mode and BEGIN is queued, not sent alone: it travels
with the first statement whose result is read (a signature row's id). Statements whose result
is never read (history marks, seen manifests) are queued too, and so are the checks of
``attach_version`` (``Transaction.defer``): at the end they are answered in one round trip (a
failed check raises and rolls everything back), then COMMIT is one more. psycopg's own
``transaction()`` syncs after BEGIN and after COMMIT, and its pipeline once more on exit: three
round trips more per transaction.

The COMMIT's answer is checked: PostgreSQL answers ``ROLLBACK``, not an error, to the COMMIT of
a transaction an earlier failed statement aborted (a caller that caught that statement's error
inside its ``batch()``), and that must never pass for a commit.

Durability (SECURITY.md, "The shared ledger on PostgreSQL"). A transaction that recorded a
signature row commits durably (server default ``synchronous_commit``: the WAL is flushed before
COMMIT returns), so a row is on disk before any version using it is published. One that
recorded none (a version's records after its publish: version labels, alias and history marks,
seen manifests) commits without a flush of its own (``synchronous_commit`` off for that
transaction only): the next durable commit of any writer, or the WAL writer within three
``wal_writer_delay``, flushes it. A server crash in between loses it, which leaves the state a
writer killed between the store's publish and its records leaves (already possible, and
handled); the SQLite ledger makes the same trade (``synchronous=NORMAL``, fsync at ``durable()``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .ledger_api import LedgerError

__all__ = ["Transaction", "pipelined"]


class Transaction:
    """What one open transaction has done so far: its deferred checks and whether it recorded
    a signature row (then its COMMIT flushes the WAL)."""

    __slots__ = ("checks", "rows")

    def __init__(self) -> None:
        self.checks: list[Callable[[], None]] = []
        self.rows = False

    def defer(self, check: Callable[[], None]) -> None:
        """Run ``check`` before COMMIT (it reads its statement's answer, and raises to roll the
        transaction back)."""
        self.checks.append(check)


@contextmanager
def pipelined(conn: Any, statements: Mapping[str, Any], where: str) -> Iterator[Transaction]:
    """BEGIN ... COMMIT on ``conn`` (an autocommit connection from the pool), pipelined."""
    tx = Transaction()
    committed = False
    try:
        with conn.pipeline() as pipeline:
            conn.execute(statements["begin"])
            try:
                yield tx
                for check in tx.checks:  # the first answer read fetches them all
                    check()
            except BaseException:
                _settle(pipeline)
                raise
            if not tx.rows:  # nothing a later publish depends on being on disk (module doc)
                conn.execute(statements["unflushed"])
            answer = conn.execute(statements["commit"])
        # leaving the pipeline synced it: COMMIT was sent and answered
        if answer.statusmessage != "COMMIT":
            raise LedgerError(
                f"the PostgreSQL ledger at {where} rolled the transaction back "
                f"({answer.statusmessage}): a statement in it failed, so nothing of it was "
                "recorded"
            )
        committed = True
    finally:
        if not committed:
            _rollback(conn, statements)


def _settle(pipeline: Any) -> None:
    """Collect what is in flight before a failed transaction is rolled back (its error is the
    one being raised, or caused it)."""
    import psycopg

    try:
        pipeline.sync()
    except psycopg.Error:
        pass


def _rollback(conn: Any, statements: Mapping[str, Any]) -> None:
    """End a failed transaction; a connection that cannot is closed (the pool drops it)."""
    import psycopg
    from psycopg import pq

    if conn.closed or conn.info.transaction_status == pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute(statements["rollback"])
    except psycopg.Error:
        conn.close()
