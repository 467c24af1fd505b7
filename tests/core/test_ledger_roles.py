"""Least privilege on the PostgreSQL ledger: the GRANTs of docs/deployment.md, per role, on a
real server. Writers record and attach; readers read and advance marks; read-only roles read."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from dagster_wandb_secure.core.ledger_api import LedgerError
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.postgres import PgServer

# exactly the statements docs/deployment.md gives ("GRANTs per role"), with role names suffixed
GRANTS = """
CREATE ROLE dws_owner_{n} LOGIN;
CREATE ROLE dws_writer_{n} LOGIN;
CREATE ROLE dws_reader_{n} LOGIN;
CREATE ROLE dws_readonly_{n} LOGIN;
CREATE SCHEMA dagster_wandb_secure AUTHORIZATION dws_owner_{n};
"""
AFTER_MIGRATION = """
GRANT USAGE ON SCHEMA dagster_wandb_secure TO dws_writer_{n}, dws_reader_{n}, dws_readonly_{n};
GRANT SELECT ON ALL TABLES IN SCHEMA dagster_wandb_secure
    TO dws_writer_{n}, dws_reader_{n}, dws_readonly_{n};
GRANT INSERT, UPDATE (artifact_version, version_num) ON dagster_wandb_secure.signatures
    TO dws_writer_{n};
GRANT INSERT, UPDATE ON dagster_wandb_secure.aliases TO dws_writer_{n}, dws_reader_{n};
"""


def entry(n: int) -> dict[str, Any]:
    return {
        "key_id": "0123456789abcdef",
        "alg": "ed25519",
        "digest": hashlib.sha256(str(n).encode()).hexdigest(),
        "length": n,
        "context": {"artifact": "model"},
        "serializer": "pickle",
        "signed_at": "2024-05-01T12:00:00.000000Z",
    }


def as_role(url: str, role: str) -> PostgresLedger:
    return PostgresLedger(url.replace("postgres:@", f"{role}:@", 1))


def test_grants_per_role(pg_server: PgServer) -> None:
    url = pg_server.new_database("roles")
    database = url.split("?")[0].rsplit("/", 1)[1]
    n = database.split("_")[-1]
    pg_server.psql(GRANTS.format(n=n), database)
    owner = as_role(url, f"dws_owner_{n}")
    owner.ping()  # the owner applies the migrations into its schema
    pg_server.psql(AFTER_MIGRATION.format(n=n), database)

    writer = as_role(url, f"dws_writer_{n}")
    row = writer.record_signature(**entry(1))
    writer.attach_version(row, artifact_version="v2", aliases=["prod"])
    writer.note_seen("model", "latest", 3)
    assert writer.newest_version("model") == 3

    reader = as_role(url, f"dws_reader_{n}")
    assert reader.find_digest(entry(1)["digest"])[0].artifact_version == "v2"
    reader.note_seen("model", "latest", 4)
    with pytest.raises(LedgerError, match="GRANT"):
        reader.record_signature(**entry(2))
    with pytest.raises(LedgerError):
        reader.attach_version(row, artifact_version="v9")

    readonly = as_role(url, f"dws_readonly_{n}")
    assert readonly.newest_version("model") == 4 and readonly.count() == 1
    for write in (
        lambda: readonly.note_seen("model", "latest", 5),
        lambda: readonly.record_signature(**entry(3)),
    ):
        with pytest.raises(LedgerError):
            write()
    assert owner.count() == 1 and owner.newest_version("model") == 4
