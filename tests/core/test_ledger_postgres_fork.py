"""A PostgreSQL ledger inherited across ``fork()`` works in the child, whatever the parent's
other threads were doing at the fork.

Regression: the child noticed the fork (and replaced the parent's pool, mutex and thread
state) only after taking the parent's mutex, so a fork while another thread of the parent held
it (opening the pool: a connect and the migrations, or any call fetching the pool) left the
child waiting forever on a lock no thread of it would release. And a fork from inside a
``batch()`` left the child joined to the parent's transaction: its writes went down the
parent's connection."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.ledger_rows import entry

WAIT_S = 60  # a child that is not done by then is stuck


def _count_then_record(ledger: PostgresLedger, out: Any) -> None:
    try:
        before = ledger.count()
        ledger.record_signature(**entry(100))
        out.put((before, ledger.count()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put(repr(exc))


def _run_child(ledger: PostgresLedger) -> Any:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_count_then_record, args=(ledger, out))
    child.start()
    child.join(WAIT_S)
    stuck = child.is_alive()
    if stuck:
        child.kill()
        child.join()
    return "stuck" if stuck else out.get(timeout=WAIT_S)


def test_a_fork_while_another_thread_holds_the_mutex(pg_url: str) -> None:
    ledger = PostgresLedger(pg_url)
    try:
        ledger.record_signature(**entry(1))
        holding, release = threading.Event(), threading.Event()

        def busy() -> None:  # another thread inside the ledger at the moment of the fork
            with ledger._mutex:
                holding.set()
                release.wait(WAIT_S)

        thread = threading.Thread(target=busy)
        thread.start()
        holding.wait(WAIT_S)
        try:
            answer = _run_child(ledger)
        finally:
            release.set()
            thread.join()
        assert answer == (1, 2)
        assert ledger.count() == 2  # the parent's pool still works
    finally:
        ledger.close()


def test_a_fork_inside_a_batch_does_not_join_the_parents_transaction(pg_url: str) -> None:
    ledger = PostgresLedger(pg_url)
    try:
        with ledger.batch():
            ledger.record_signature(**entry(1))
            answer = _run_child(ledger)  # the child's own transaction, on its own connection
            ledger.record_signature(**entry(2))
        assert answer == (0, 1)  # the parent's rows were not committed when the child read
        assert ledger.count() == 3
    finally:
        ledger.close()
