"""The least-privilege roles of docs/deployment.md on the test server: a database of its own
with the owner, writer, reader and read-only roles created, the ledger migrated by the owner
and the documented GRANTs (read from the docs, so the docs are what is tested) applied."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.postgres import PgServer

ROLES_SQL = """
CREATE ROLE dws_owner_{n} LOGIN;
CREATE ROLE dws_writer_{n} LOGIN;
CREATE ROLE dws_reader_{n} LOGIN;
CREATE ROLE dws_readonly_{n} LOGIN;
CREATE SCHEMA dagster_wandb_secure AUTHORIZATION dws_owner_{n};
"""
DOCS = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def documented_grants() -> str:
    """The SQL block of docs/deployment.md's "GRANTs per role" step, role names suffixed."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("**GRANTs per role**") :]
    start = section.index("```sql") + len("```sql")
    block = section[start : section.index("```", start)]
    assert "GRANT" in block
    return re.sub(r"\b(dws_(?:owner|writer|reader|readonly))\b", r"\1_{n}", block)


@dataclass(frozen=True)
class RolesDatabase:
    """A migrated ledger database whose roles hold exactly the documented GRANTs."""

    url: str  # the superuser's URL
    database: str
    n: str

    def url_of(self, role: str) -> str:
        """The URL of role ``role`` (``owner``, ``writer``, ``reader`` or ``readonly``)."""
        return self.url.replace("postgres:@", f"dws_{role}_{self.n}:@", 1)

    def ledger_of(self, role: str) -> PostgresLedger:
        return PostgresLedger(self.url_of(role))


def roles_database(pg_server: PgServer) -> RolesDatabase:
    url = pg_server.new_database("roles")
    database = url.split("?")[0].rsplit("/", 1)[1]
    n = database.split("_")[-1]
    pg_server.psql(ROLES_SQL.format(n=n), database)
    db = RolesDatabase(url, database, n)
    owner = db.ledger_of("owner")
    owner.ping()  # the owner applies the migrations into its schema
    owner.close()
    pg_server.psql(documented_grants().format(n=n), database)
    return db
