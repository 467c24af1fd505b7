"""A publish's share of the PostgreSQL ledger, counted on the wire (libpq's trace): its round
trips, and which of its commits flush the WAL. A version is never visible before its signature
rows are durable: the rows' commit flushes; the version's records after the publish and the
allocation do not (core/ledger_postgres_tx.py, SECURITY.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core import ledger_rows
from dagster_wandb_secure.core.errors import KeyStoreError
from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.ledger_api import LedgerError, LedgerUnavailableError
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.ledger_rows import digest, entry
from kit.pg_trace import tracing

ART = "team/proj/traced"
AT = "2024-05-01T12:00:00.000000Z"
WARM = 8  # psycopg prepares a statement at its 5th use on a connection (one more round trip)
TRACED = 5


def publish(ledger: PostgresLedger, i: int) -> None:
    """The ledger calls of one ``publish_output`` (artifacts/history.py, publishing.py)."""
    with ledger.history_lock(ART):
        seen = ledger.newest_seen(ART)
        floor = seen.position.sequence if seen is not None and seen.position else 0
        sequence = ledger.allocate_sequence(ART, floor=floor)
        with ledger.batch():  # the payload's and the manifest's rows
            rows = [ledger.record_signature(**entry(2 * i + k)) for k in (0, 1)]
        ledger.durable()  # ... then the store publishes the version
        position = Position(sequence, AT, digest(f"m{i}"))
        with ledger.batch():
            for row in rows:
                ledger.attach_version(row, artifact_version=f"v{i}", aliases=("latest", "prod"))
            ledger.record_manifest(ART, position.digest, position, version=f"v{i}", source="writer")
            for alias in ("latest", "prod"):
                ledger.advance_mark(ART, alias, position, source="writer")


@pytest.fixture
def traced(pg_url: str, monkeypatch: Any, tmp_path: Path) -> Any:
    with tracing(monkeypatch, tmp_path) as tracer:
        ledger = PostgresLedger(pg_url)
        for i in range(WARM):
            publish(ledger, i)
        tracer.start()
        for i in range(WARM, WARM + TRACED):
            publish(ledger, i)
        tracer.stop()
        ledger.close()
        yield tracer


def test_a_publish_costs_nine_round_trips(traced: Any) -> None:
    """Lock, newest seen, allocation, the two rows (BEGIN rides with the first), their COMMIT,
    the version's records (the checks of attach_version answered at once), their COMMIT,
    unlock. psycopg's transaction() alone cost 6 more (BEGIN and COMMIT synced on their own, a
    sync on leaving the pipeline, each attach_version waited for)."""
    assert traced.round_trips() == 9 * TRACED


def test_only_the_signature_rows_commit_flushes(traced: Any) -> None:
    writes = [t for t in traced.transactions() if any(s.startswith(("INSERT", "WITH")) for s in t)]
    unflushed = "set_config('synchronous_commit', 'off', true)"
    rows = [t for t in writes if any(".signatures (key_id" in s for s in t)]
    assert len(rows) == TRACED and len(writes) == 3 * TRACED
    for statements in rows:  # durable before the version may be published
        assert not any(unflushed in s for s in statements), statements
    for statements in writes:
        if statements not in rows:  # the allocation, the version's records
            assert any(unflushed in s for s in statements), statements


def test_a_swallowed_failure_in_a_batch_never_passes_for_a_commit(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL answers ROLLBACK, not an error, to COMMIT after a failed statement: a caller
    that caught the statement's error inside its batch must still see the batch fail."""
    # the row checks refuse a length beyond 64 bits before any SQL (ledger_rows.MAX_SQL_INT);
    # lift that bound here so the statement reaches the server and fails there
    monkeypatch.setattr(ledger_rows, "MAX_SQL_INT", 2**80)
    ledger = PostgresLedger(pg_url)
    try:
        for then_more in (False, True):
            with pytest.raises(LedgerError, match="nothing of it was recorded") as info:
                with ledger.batch():
                    ledger.record_signature(**entry(1))
                    with pytest.raises(KeyStoreError):  # valid here, out of range for BIGINT
                        ledger.record_signature(**entry(2, length=2**70))
                    if then_more:
                        ledger.advance_mark(ART, "latest", Position(1, AT, digest("m")),
                                            source="writer")
            assert not isinstance(info.value, LedgerUnavailableError)  # the server is there
            assert ledger.count() == 0 and ledger.history_mark(ART, "latest") is None
        with ledger.batch():  # the connection went back to the pool clean
            ledger.record_signature(**entry(3))
        assert ledger.count() == 1
    finally:
        ledger.close()


def test_a_failed_deferred_check_rolls_the_batch_back(pg_url: str) -> None:
    """Inside a batch, attach_version's checks are answered before COMMIT: a missing row
    raises there and nothing of the batch is recorded."""
    ledger = PostgresLedger(pg_url)
    try:
        with pytest.raises(KeyStoreError, match="no row 10000"), ledger.batch():
            row = ledger.record_signature(**entry(1))
            ledger.attach_version(row, artifact_version="v1", aliases=["prod"])
            ledger.attach_version(10_000, artifact_version="v1")
        assert ledger.count() == 0 and ledger.aliases("model") == {}
    finally:
        ledger.close()
