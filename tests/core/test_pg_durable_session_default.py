"""A PostgreSQL ledger session commits durably whatever the server's, database's or role's
default ``synchronous_commit`` (SECURITY.md, "Durability of ledger writes"). Before, an
administrator's ``ALTER DATABASE ... SET synchronous_commit = off`` (or the same in
postgresql.conf) made every signature row and reader mark loss-tolerant on a server crash, while
the ledger promised "durable at return"."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg

from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.ledger_rows import entry


def test_ledger_sessions_commit_durably_under_a_database_default_of_off(pg_server) -> None:
    url = pg_server.new_database("syncoff")
    name = urlsplit(url).path.lstrip("/")
    pg_server.psql(f"ALTER DATABASE {name} SET synchronous_commit = off;")
    with psycopg.connect(url, autocommit=True) as plain:  # the default the ledger meets
        assert plain.execute("SHOW synchronous_commit").fetchone() == ("off",)
    ledger = PostgresLedger(url)
    try:
        ledger.record_signature(**entry(1))  # the ledger works, and its sessions say "on":
        for options in ("", "-c lock_timeout=1000"):  # the main pool's and the lock pool's
            with psycopg.connect(url, **ledger._connect_kwargs(options)) as conn:
                assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    finally:
        ledger.close()
