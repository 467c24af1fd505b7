"""PostgreSQL faults: the server stops hard (``pg_ctl stop -m immediate``) and comes back; an
unreachable server fails typed, fast, and without the password. Own cluster: these tests stop it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from dagster_wandb_secure.core.errors import KeyStoreError
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
from kit.ledger_rows import entry
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
