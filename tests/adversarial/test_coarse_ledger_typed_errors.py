"""The PostgreSQL ledger's failures name their real cause: a server that refuses the
``plan_cache_mode`` every connection sets (PostgreSQL 11 and older do not know it) is not "not
running, retry once it is back", and neither is a statement the server rolled back because of
another session (a serialization failure under ``default_transaction_isolation =
serializable``, a deadlock): that one is retried, not waited out."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import dagster_wandb_secure.core.ledger_postgres as ledger_postgres
from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.ledger_api import LedgerError, LedgerUnavailableError
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.ledger_rows import digest, entry
from kit.postgres import PgServer

ART = "team/proj/model"
AT = "2024-05-01T12:00:00.000000Z"


def pos(sequence: int) -> Position:
    return Position(sequence, AT, digest(f"m{sequence}"))


def test_a_server_refusing_plan_cache_mode_is_not_unavailable(
    pg_url: str, monkeypatch: Any
) -> None:
    # an older server rejects the parameter's name; this one rejects its value: the same
    # refusal at connect, naming the parameter
    monkeypatch.setattr(ledger_postgres, "PLAN_CACHE_MODE", "not_a_mode")
    ledger = PostgresLedger(pg_url)
    with pytest.raises(LedgerError) as info:
        ledger.ping()
    assert not isinstance(info.value, LedgerUnavailableError)
    assert "plan_cache_mode" in str(info.value) and "PostgreSQL 12" in str(info.value)
    ledger.close()


def test_a_serialization_failure_is_not_unavailable(pg_server: PgServer, pg_url: str) -> None:
    import psycopg

    database = pg_url.split("?")[0].rsplit("/", 1)[1]
    pg_server.psql(
        f"ALTER DATABASE {database} SET default_transaction_isolation = 'serializable';"
    )
    writer = PostgresLedger(pg_url)
    errors: list[BaseException] = []
    try:
        writer.record_version((), artifact_version="v1", history_key=ART,
                              manifest_digest=pos(1).digest, position=pos(1))
        rows = writer.record_many([entry(1), entry(2)])
        q = writer._statements()
        with psycopg.connect(pg_url, autocommit=True) as reader:
            reader.execute("BEGIN")  # serializable: the database's default
            reader.execute(q["advance_mark"], (ART, "latest", 2, AT, pos(2).digest, "reader", AT))

            def publish() -> None:
                try:
                    writer.record_version(rows, artifact_version="v3", history_key=ART,
                                          manifest_digest=pos(3).digest, position=pos(3))
                except BaseException as exc:  # noqa: BLE001 - checked below
                    errors.append(exc)

            thread = threading.Thread(target=publish)
            thread.start()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not reader.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND application_name = 'dagster-wandb-secure'"
            ).fetchone()[0]:
                time.sleep(0.01)
            reader.execute("COMMIT")
            thread.join(timeout=60)
        assert len(errors) == 1 and isinstance(errors[0], LedgerError)
        assert not isinstance(errors[0], LedgerUnavailableError)
        assert "another session" in str(errors[0]) and "retry" in str(errors[0])
        # nothing of the refused statement was recorded
        assert writer.history_mark(ART, "latest") == Position(2, AT, pos(2).digest)
        assert writer.seen_manifest(ART, pos(3).digest) is None
    finally:
        writer.close()
