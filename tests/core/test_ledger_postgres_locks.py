"""History locks of the PostgreSQL ledger reuse pooled lock sessions and never leak a lock."""

from __future__ import annotations

import psycopg
import pytest

from dagster_wandb_secure.core.ledger_api import LedgerLockTimeoutError
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger

ART = "team/proj/locked"


def _backends(url: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'dagster-wandb-secure' "
            "AND datname = current_database()"  # not an earlier test's backends, still exiting
        ).fetchall()
    return {int(r[0]) for r in rows}


def test_a_released_lock_is_free_for_another_writer(pg_url: str) -> None:
    first = PostgresLedger(pg_url, lock_timeout_ms=300)
    second = PostgresLedger(pg_url, lock_timeout_ms=300)
    try:
        for _ in range(3):
            with first.history_lock(ART):
                pass
        # the session that held it went back to the pool: it must not hold it any more
        with second.history_lock(ART):
            with pytest.raises(LedgerLockTimeoutError):
                with first.history_lock(ART):  # first waits for second (a separate session)
                    pass
        with first.history_lock(ART):
            pass
    finally:
        first.close()
        second.close()


def test_locks_reuse_sessions(pg_url: str) -> None:
    ledger = PostgresLedger(pg_url)
    try:
        with ledger.history_lock(ART):
            ledger.allocate_sequence(ART, floor=0)
        # both pools open their first session in the background: counted once they are there
        ledger._get_pool().wait()
        ledger._get_lock_pool().wait()
        before = _backends(pg_url)
        for _ in range(5):
            with ledger.history_lock(ART):
                ledger.allocate_sequence(ART, floor=0)
        # no new server process per lock (the migration's plain session may still be exiting
        # when ``before`` is read, so a backend that went away is not a failure)
        assert _backends(pg_url) <= before
    finally:
        ledger.close()



def test_an_allocation_alone_commits_without_its_own_wal_flush(pg_url: str) -> None:
    """The allocation statement a publish runs alone turns ``synchronous_commit`` off for its
    own transaction only (the signature rows' durable commit that must follow flushes it too);
    the statement used inside a ``batch()`` leaves the batch's commit durable."""
    ledger = PostgresLedger(pg_url)
    try:
        ledger.allocate_sequence(ART, floor=0)  # connect, migrate
        q = ledger._statements()
        with psycopg.connect(pg_url) as conn:  # a transaction, as autocommit gives the statement
            conn.execute(q["allocate_unflushed"], (ART, 1, "2026-12-01T00:00:00Z"))
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
            conn.commit()
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
            conn.execute(q["allocate"], (ART, 1, "2026-12-01T00:00:00Z"))
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
            conn.commit()
        first = ledger.allocate_sequence(ART, floor=0)
        with ledger.batch():
            assert ledger.allocate_sequence(ART, floor=0) == first + 1
        assert ledger.allocate_sequence(ART, floor=first + 5) == first + 6
    finally:
        ledger.close()
