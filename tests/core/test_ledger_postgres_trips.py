"""A publish's and a read's share of the PostgreSQL ledger, counted on the wire (libpq's trace):
their round trips, and which of their commits flush the WAL. A version is never visible before
its signature rows are durable: the rows' commit flushes; the version's records after the
publish and the allocation do not. A reader's marks are anti-rollback state: their commit
flushes (core/ledger_postgres_tx.py, SECURITY.md "Durability of ledger writes")."""

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
        sequence, _seen = ledger.allocate_next(ART, floor=0)
        rows = ledger.record_many([entry(2 * i + k) for k in (0, 1)])  # payload's, manifest's
        ledger.durable()  # ... then the store publishes the version
        position = Position(sequence, AT, digest(f"m{i}"))
        ledger.record_version(
            rows, artifact_version=f"v{i}", aliases=("latest", "prod"), history_key=ART,
            manifest_digest=position.digest, position=position, marks=("prod",),
        )


def read(ledger: PostgresLedger, i: int) -> None:
    """The ledger calls of one alias read of version ``i`` (artifacts/history.py,
    ``check_alias_history``): the mark and what the verdict needs, then the reader's marks."""
    position = Position(WARM + TRACED + i, AT, digest(f"r{i}"))
    mark = ledger.history_mark(ART, "latest")
    if mark is not None:
        ledger.seen_manifest(ART, mark.digest)
    ledger.seen_manifest(ART, position.digest)
    ledger.newest_seen(ART)
    with ledger.batch():
        ledger.record_manifest(ART, position.digest, position, version=f"v{i}", source="reader")
        ledger.advance_mark(ART, "latest", position, source="reader")


UNFLUSHED = "set_config('synchronous_commit', 'off', true)"


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


def test_a_publish_costs_five_round_trips(traced: Any) -> None:
    """Lock, the allocation with the newest seen manifest, both rows (one INSERT), the
    version's records (one statement), unlock: one statement each, no BEGIN or COMMIT of
    their own (each is atomic alone). Session 4's finer calls cost 9 round trips and 16
    statements (separate newest_seen, one INSERT per row, attach_version per row,
    record_manifest and advance_mark per alias, BEGIN/COMMIT around both groups)."""
    assert traced.round_trips() == 5 * TRACED
    assert sum(len(t) for t in traced.transactions()) == 5 * TRACED


@pytest.fixture
def traced_reads(pg_url: str, monkeypatch: Any, tmp_path: Path) -> Any:
    """Publishes and reads in turn (one ledger, as a writer that reads back); only the reads
    are counted."""
    with tracing(monkeypatch, tmp_path) as tracer:
        ledger = PostgresLedger(pg_url)
        for i in range(WARM):
            publish(ledger, i)
            read(ledger, i)
        for i in range(WARM, WARM + TRACED):
            publish(ledger, i)
            tracer.start()
            read(ledger, i)
            tracer.pause()
        tracer.stop()
        ledger.close()
        yield tracer


def test_only_the_signature_rows_commit_of_a_publish_flushes(traced: Any) -> None:
    writes = [t for t in traced.transactions() if any(s.startswith(("INSERT", "WITH")) for s in t)]
    unflushed = UNFLUSHED
    rows = [t for t in writes if any(".signatures (key_id" in s for s in t)]
    assert len(rows) == TRACED and len(writes) == 3 * TRACED
    for statements in rows:  # durable before the version may be published
        assert not any(unflushed in s for s in statements), statements
    for statements in writes:
        if statements not in rows:  # the allocation, the version's records
            assert any(unflushed in s for s in statements), statements


def test_a_read_costs_five_round_trips(traced_reads: Any) -> None:
    """The mark, the two seen manifests, the newest seen, then the reader's marks: BEGIN and
    both statements ride with their COMMIT (nothing of theirs is read)."""
    assert traced_reads.round_trips() == 5 * TRACED


def test_a_readers_marks_commit_flushes_the_wal(traced_reads: Any) -> None:
    """Once a read returned, its mark must survive a server crash: a lost mark lets the store
    roll the alias back under the reader once more (SECURITY.md)."""
    writes = [t for t in traced_reads.transactions() if any(s.startswith("INSERT") for s in t)]
    assert len(writes) == TRACED
    for statements in writes:
        assert [s.split(" (")[0] for s in statements] == [
            "BEGIN", 'INSERT INTO "dagster_wandb_secure".history_seen',
            'INSERT INTO "dagster_wandb_secure".history_marks AS m', "COMMIT",
        ], statements
        assert not any(UNFLUSHED in s for s in statements), statements


@pytest.mark.parametrize("source", ["reader", "writer"])
def test_one_write_that_must_be_kept_makes_its_batch_durable(
    pg_url: str, monkeypatch: Any, tmp_path: Path, source: str
) -> None:
    """A batch flushes unless every write in it may be lost: a reader's mark joined to writer
    records makes the whole commit durable; writer records alone do not."""
    with tracing(monkeypatch, tmp_path) as tracer:
        ledger = PostgresLedger(pg_url)
        ledger.ping()
        tracer.start()
        position = Position(1, AT, digest("m"))
        with ledger.batch():
            ledger.record_manifest(ART, position.digest, position, version="v1", source="writer")
            ledger.advance_mark(ART, "latest", position, source="writer")
            ledger.advance_mark(ART, "prod", position, source=source)
        tracer.stop()
        ledger.close()
    (statements,) = [t for t in tracer.transactions() if t[0] == "BEGIN"]
    assert any(UNFLUSHED in s for s in statements) is (source == "writer"), statements


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
