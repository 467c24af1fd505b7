"""A publish's coarse ledger steps on PostgreSQL against a server crash (``pg_ctl stop -m
immediate``), with the WAL writer slowed to 10 s so a commit without its own flush is still in
the server's WAL buffers when it dies (SECURITY.md, "Durability of ledger writes"):

- ``allocate_next`` commits without a flush; the durable ``record_many`` of the version's rows
  that follows flushes it, so a sequence whose rows survived is never allocated again;
- ``record_version`` commits without a flush; a reader's durable batch that relied on it
  flushes it too (one ordered WAL). Own cluster: these tests stop it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.ledger_rows import digest, entry
from kit.postgres import PgServer, running_server

ART = "team/proj/crash"
AT = "2024-05-01T12:00:00.000000Z"


@pytest.fixture(scope="module")
def slow_wal_server() -> Iterator[PgServer]:
    with running_server() as server:
        server.psql("ALTER SYSTEM SET wal_writer_delay = '10s'; SELECT pg_reload_conf();")
        time.sleep(0.5)  # the WAL writer rereads its configuration
        yield server


def crash(server: PgServer) -> None:
    server.stop_immediate()
    server.restart()


def test_an_allocation_is_flushed_with_the_rows_that_follow_it(
    slow_wal_server: PgServer,
) -> None:
    url = slow_wal_server.new_database("crash")
    ledger = PostgresLedger(url)
    try:
        with ledger.history_lock(ART):
            sequence, _ = ledger.allocate_next(ART, floor=0)
            rows = ledger.record_many([entry(1, artifact="crash"), entry(2, artifact="crash")])
        crash(slow_wal_server)
        after = PostgresLedger(url)
        try:
            assert {r.id for r in after.rows()} == set(rows)
            assert after.allocate_next(ART, floor=0)[0] == sequence + 1  # never reused
        finally:
            after.close()
    finally:
        ledger.close()


def test_a_readers_batch_flushes_the_writers_record_version(slow_wal_server: PgServer) -> None:
    url = slow_wal_server.new_database("crash")
    ledger = PostgresLedger(url)
    try:
        rows = ledger.record_many([entry(1, artifact="crash"), entry(2, artifact="crash")])
        first = Position(1, AT, digest("m1"))
        ledger.record_version(rows, artifact_version="v1", aliases=("prod",), history_key=ART,
                              manifest_digest=first.digest, position=first, marks=("prod",))
        with ledger.batch():  # a reader accepted v1 (its statements change nothing)
            ledger.record_manifest(ART, first.digest, first, version="v1", source="reader")
            ledger.advance_mark(ART, "latest", first, source="reader")
        crash(slow_wal_server)
        after = PostgresLedger(url)
        try:
            assert after.history_marks(ART) == {"latest": first, "prod": first}
            assert [r.artifact_version for r in after.rows()] == ["v1", "v1"]
            assert after.aliases("crash") == {"latest": 1, "prod": 1}
        finally:
            after.close()
    finally:
        ledger.close()
