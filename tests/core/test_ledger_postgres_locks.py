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
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'dagster-wandb-secure'"
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
            pass
        before = _backends(pg_url)
        for _ in range(5):
            with ledger.history_lock(ART):
                ledger.allocate_sequence(ART, floor=0)
        assert _backends(pg_url) == before  # no new server process per lock
    finally:
        ledger.close()
