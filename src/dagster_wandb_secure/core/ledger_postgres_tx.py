"""One transaction of the PostgreSQL ledger (``core/ledger_postgres.py``): as few round trips
as its statements allow, and a WAL flush at COMMIT unless every write in it may be lost.

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

Durability (SECURITY.md, "Durability of ledger writes"). Every write declares whether it
must be on disk when the transaction returns (``Transaction.wrote``): a signature row (a version
using it may be published next), a reader's history mark or seen manifest, a reader's alias
mark (anti-rollback state: once a read returned, a lost mark would let the store roll the alias
back once more). Those commit durably (server default ``synchronous_commit``: the WAL is flushed
before COMMIT returns). A transaction whose every write declared itself loss-tolerant (a
version's records after its publish by the writer: version labels, writer alias and history
marks, seen manifests; a sequence allocation) commits without a flush of its own
(``synchronous_commit`` off for that transaction only): the next durable commit of anyone, or
the WAL writer within three ``wal_writer_delay``, flushes it (the WAL is one ordered stream, so
what a crash loses is always a suffix of commits, never one before a durable one). A server
crash in between loses it, which leaves the state a writer killed between the store's publish
and its records leaves (already possible, and handled). A transaction in which nothing
declared anything commits durably (the default is the safe one). A reader's batch flushes even
when it changes nothing (its mark already there, its manifest already seen): ``advance_mark``'s
``ON CONFLICT DO UPDATE`` locks the row, a WAL record, so the COMMIT waits for the flush of the
WAL up to it, which includes the writer's records the reader relied on
(tests/core/test_ledger_faults.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .ledger_api import LedgerError

__all__ = ["Transaction", "pipelined"]


class Transaction:
    """What one open transaction has done so far: its deferred checks and whether its COMMIT
    must flush the WAL (``keep``: None while no write declared anything, then True as soon as
    one write must survive a crash, False while every write may be lost)."""

    __slots__ = ("checks", "keep")

    def __init__(self) -> None:
        self.checks: list[Callable[[], None]] = []
        self.keep: bool | None = None

    def wrote(self, *, keep: bool) -> None:
        """A write of this transaction: ``keep`` when it must be on disk once COMMIT returns
        (module doc). One such write makes the whole COMMIT durable."""
        self.keep = keep or bool(self.keep)

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
            if tx.keep is False:  # every write may be lost by a server crash (module doc)
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
