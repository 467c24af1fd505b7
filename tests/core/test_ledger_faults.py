"""PostgreSQL faults: the server stops hard (``pg_ctl stop -m immediate``) and comes back; an
unreachable server fails typed, fast, and without the password. Own cluster: these tests stop it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from dagster_wandb_secure.core.errors import KeyStoreError
from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.ledger_api import (
    LedgerSchemaError,
    LedgerUnavailableError,
    open_ledger,
)
from dagster_wandb_secure.core.ledger_postgres import (
    RECHECK_AFTER_S,
    SCHEMA_VERSION,
    PostgresLedger,
)
from kit.ledger_rows import digest, entry
from kit.postgres import PgServer, running_server


@pytest.fixture(scope="module")
def own_server() -> Iterator[PgServer]:
    with running_server() as server:
        yield server


@pytest.fixture
def url(own_server: PgServer) -> Iterator[str]:
    yield own_server.new_database("f")
    own_server.restart()  # a failed test must not leave the next one without a server


def test_restart_between_runs_loses_nothing(own_server: PgServer, url: str) -> None:
    ledger = PostgresLedger(url)
    ids = ledger.record_many(entry(i) for i in range(50))
    ledger.attach_version(ids[-1], artifact_version="v7", aliases=["prod"])
    own_server.stop_immediate()
    own_server.restart()
    time.sleep(RECHECK_AFTER_S)  # pooled connections idle this long are checked before use
    # the same object (its pooled connections died with the server) and a fresh one
    for reader in (ledger, PostgresLedger(url)):
        assert reader.count() == 50 and reader.newest_version("model", alias="prod") == 7
    ledger.record_signature(**entry(99))
    assert ledger.count() == 51


@pytest.mark.parametrize("moves", [True, False], ids=["mark-moves", "mark-already-there"])
def test_a_readers_mark_survives_a_server_crash_right_after_the_read(
    own_server: PgServer, url: str, moves: bool
) -> None:
    """A read returns, then the server crashes: its mark and seen manifest are there after the
    restart (a lost mark would let the store roll the alias back once more). Also when the
    reader read what the writer had just marked (its statements change nothing): the writer's
    records it relied on were not flushed, the reader's commit flushes them. The WAL writer is
    slowed to 10 s so that a commit without its own flush would still be in the server's WAL
    buffers when it dies (as it was before reader marks were made durable)."""
    art, at = "team/proj/crash", "2024-05-01T12:00:00.000000Z"
    own_server.psql("ALTER SYSTEM SET wal_writer_delay = '10s'; SELECT pg_reload_conf();")
    try:
        time.sleep(0.5)  # the WAL writer rereads its configuration
        ledger = PostgresLedger(url)
        row = ledger.record_signature(**entry(1, artifact=art))  # durable: a publish follows
        first = Position(1, at, digest("m1"))
        second = Position(2, at, digest("m2")) if moves else first
        with ledger.batch():  # the writer's records after its publish (may be lost)
            ledger.attach_version(row, artifact_version="v1")
            ledger.record_manifest(art, first.digest, first, version="v1", source="writer")
            ledger.advance_mark(art, "latest", first, source="writer")
        version = "v2" if moves else "v1"
        with ledger.batch():  # a reader accepted it (artifacts/history.py:check_alias_history)
            ledger.record_manifest(art, second.digest, second, version=version, source="reader")
            ledger.advance_mark(art, "latest", second, source="reader")
        own_server.stop_immediate()
        own_server.restart()
        after = PostgresLedger(url)
        assert after.history_mark(art, "latest") == second
        seen = after.seen_manifest(art, second.digest)
        assert seen is not None and seen.position == second and seen.version == version
        ledger.close()
        after.close()
    finally:
        own_server.restart()
        own_server.psql("ALTER SYSTEM RESET wal_writer_delay; SELECT pg_reload_conf();")


def test_server_stopped_mid_run(own_server: PgServer, url: str) -> None:
    ledger = PostgresLedger(url + "&connect_timeout=1")
    ledger.record_signature(**entry(1))
    with pytest.raises(LedgerUnavailableError) as info, ledger.batch():
        ledger.record_signature(**entry(2))
        ledger.note_seen("model", "latest", 9)
        own_server.stop_immediate()
        ledger.record_signature(**entry(3))
    assert "postgresql://" in str(info.value)
    start = time.monotonic()
    for call in (ledger.count, lambda: ledger.record_signature(**entry(4))):
        with pytest.raises(LedgerUnavailableError):
            call()
    assert time.monotonic() - start < 30  # bounded, never a hang
    own_server.restart()
    assert [r.length for r in ledger.rows()] == [1]  # nothing of the batch, nothing half-done
    assert ledger.newest_version("model") is None
    ledger.record_signature(**entry(5))
    assert ledger.count() == 2


def test_unreachable_server_fails_fast_without_the_password(tmp_path: Any) -> None:
    url = f"postgresql://writer:s3cret-pw@/ledger?host={tmp_path}/nothing&connect_timeout=1"
    ledger = open_ledger(url, tmp_path)
    assert "s3cret" not in repr(ledger)
    start = time.monotonic()
    with pytest.raises(LedgerUnavailableError) as info:
        ledger.ping()  # type: ignore[attr-defined]
    assert time.monotonic() - start < 15
    text = str(info.value)
    assert "s3cret" not in text and f"{tmp_path}/nothing" in text and "writer@" in text
    assert isinstance(info.value, KeyStoreError)


def test_statement_timeout_is_bounded(url: str) -> None:
    ledger = PostgresLedger(url + "&statement_timeout=200")
    ledger.ping()
    with ledger._get_pool().connection() as conn, pytest.raises(Exception) as info:
        conn.execute("SELECT pg_sleep(5)")
    assert "statement timeout" in str(info.value)
    with pytest.raises(KeyStoreError):
        PostgresLedger(url + "&statement_timeout=soon")


def test_newer_schema_is_refused(own_server: PgServer, url: str) -> None:
    PostgresLedger(url).ping()
    database = url.split("?")[0].rsplit("/", 1)[1]
    own_server.psql(
        f"INSERT INTO dagster_wandb_secure.schema_migrations (version) VALUES ({SCHEMA_VERSION + 1})",
        database,
    )
    with pytest.raises(LedgerSchemaError, match=f"schema version {SCHEMA_VERSION + 1}"):
        PostgresLedger(url).count()


def test_schema_is_configurable(own_server: PgServer, url: str) -> None:
    PostgresLedger(url + "&schema=team_a").record_signature(**entry(1))
    assert PostgresLedger(url + "&schema=team_b").count() == 0
    assert PostgresLedger(url, schema="team_a").count() == 1
    database = url.split("?")[0].rsplit("/", 1)[1]
    applied = own_server.psql(
        "SELECT version FROM team_a.schema_migrations ORDER BY version", database
    ).split()
    assert applied == [str(v) for v in range(1, SCHEMA_VERSION + 1)]  # every migration, once
    with pytest.raises(KeyStoreError):
        PostgresLedger(url + "&schema=Robert'); DROP TABLE x;--")
