"""The plans a PostgreSQL ledger connection keeps for its statements (session 6, issue 16).

Every ledger connection keeps one generic plan per prepared statement (``plan_cache_mode =
force_generic_plan``), made at the statement's first execution on that connection, often when
the ledger's tables are one page (a new deployment, the benchmark). On a one-page table the
planner prices a sequential scan below an index lookup, and the plan kept it as the tables
grew: ``record_version`` scanned every signature row (twice) at each publish, so a publish's
server time grew with the ledger (~0.4 ms at 800 rows, ~1 ms at 6,000). The plans are read here
with ``EXPLAIN EXECUTE`` of a statement prepared on a young ledger, as the ledger's own
connections prepare it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from dagster_wandb_secure.core.ledger_postgres_sql import STATEMENTS
from kit.ledger_rows import digest, entry

TABLES = ("signatures", "aliases", "history_sequences", "history_marks", "history_seen")

ART = "model"  # the rows' artifact (kit.ledger_rows.entry) and the history key
AT = "2024-05-01T12:00:00.000000Z"
NOW = "2024-05-01T12:00:01.000000Z"

# the statements a publish or a read runs with values that name rows: key lookups all
PARAMS: dict[str, Any] = {
    "record_version_unflushed": {
        "ids": [1, 2], "n": 2, "version": "v1", "number": 1, "named": 2,
        "aliases": ["latest", "prod"], "now": NOW, "key": ART, "digest": digest("m"),
        "seq": 1, "at": AT, "pdigest": digest("m"), "marks": ["prod"],
    },
    "allocate_next_unflushed": {"a": ART, "floor": 0, "now": NOW},
    "attach": {"id": 1, "version": "v1", "number": 1, "named": 1, "aliases": ["latest", "x"],
               "now": NOW},
    "mark": (ART, "prod"),
    "marks_of": (ART,),
    "seen_manifest": (ART, digest("m")),
    "newest_seen": (ART,),
    "newest_alias": (ART, "prod"),
    "newest_latest": (ART, ART),
    "aliases": (ART,),
    "select_by_digest": (digest("m"),),
    "select_by_artifact": (ART,),
}


def _order(text: str, params: Any) -> list[Any]:
    """The values in the order psycopg numbers them ($1, $2, ...: a name at its first use)."""
    if not isinstance(params, dict):
        return list(params)
    names: list[str] = []
    for m in re.finditer(r"%\((\w+)\)s", text):
        if m.group(1) not in names:
            names.append(m.group(1))
    return [params[n] for n in names]


def kept_plan(conn: Any, name: str, query: bytes, params: Any) -> str:
    """The plan ``conn`` keeps for ``query`` after its first execution (inside a transaction
    that is rolled back, so the ledger stays empty)."""
    from psycopg import sql

    with conn.transaction(force_rollback=True):
        conn.execute(query, params, prepare=True)
        values = _order(STATEMENTS[name], params)
        pname, types = conn.execute(
            "SELECT name, parameter_types FROM pg_prepared_statements "
            "WHERE cardinality(parameter_types) = %s ORDER BY prepare_time DESC LIMIT 1",
            (len(values),),
            prepare=False,
        ).fetchone()
        args = sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Literal(v), sql.SQL(t))  # type: ignore[arg-type]
            for v, t in zip(values, types, strict=True)
        )
        plan = conn.execute(
            sql.SQL("EXPLAIN EXECUTE {}({})").format(sql.Identifier(pname), args), prepare=False
        ).fetchall()
    return "\n".join(r[0] for r in plan)


@pytest.fixture
def young_ledger(pg_url: str) -> Any:
    """A ledger with one publish's rows, analyzed (autovacuum's ANALYZE of a new deployment):
    every table one page, which the planner knows."""
    import psycopg

    ledger = PostgresLedger(pg_url)
    rows = ledger.record_many([entry(1), entry(2)])
    position = Position(1, AT, digest("m"))
    ledger.record_version(
        rows, artifact_version="v1", aliases=("latest", "prod"), history_key=ART,
        manifest_digest=position.digest, position=position, marks=("prod",),
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {', '.join(f'{ledger.schema}.{t}' for t in TABLES)}")
    yield ledger
    ledger.close()


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_a_plan_made_on_a_young_ledger_looks_rows_up_by_index(
    young_ledger: PostgresLedger, name: str
) -> None:
    """The plan a ledger connection keeps, made on one-page tables, is an index lookup (it was
    a sequential scan, kept as the tables grew)."""
    import psycopg

    query = young_ledger._statements()[name]
    with psycopg.connect(young_ledger._conninfo, **young_ledger._connect_kwargs()) as conn:
        plan = kept_plan(conn, name, query, PARAMS[name])
    assert "Seq Scan" not in plan, plan


def _publish(ledger: PostgresLedger, n: int, marks: tuple[str, ...]) -> None:
    rows = ledger.record_many([entry(10 * n), entry(10 * n + 1)])
    position = Position(n, AT, digest(f"m{n}"))
    ledger.record_version(
        rows, artifact_version=f"v{n}", aliases=marks, history_key=ART,
        manifest_digest=position.digest, position=position, marks=marks,
    )


@pytest.mark.parametrize("table", ["aliases", "history_marks"])
def test_record_version_locks_the_marks_in_the_order_of_their_names(
    pg_url: str, table: str
) -> None:
    """Two publishes of one artifact naming its aliases in different orders lock the marks in
    one order (a deadlock otherwise): while another session holds the mark ``zeta``, a
    ``record_version`` naming ``zeta`` then ``alpha`` already holds ``alpha`` (it was written
    first), whatever the caller's order."""
    import threading

    import psycopg

    ledger = PostgresLedger(pg_url)
    names = ("zeta", "alpha")
    _publish(ledger, 1, names)  # every mark exists: the next publish's upserts lock them
    where = f"{ledger.schema}.{table} WHERE artifact = %s AND alias = %s FOR UPDATE"
    holder = psycopg.connect(pg_url)
    holder.execute(f"SELECT 1 FROM {where}", (ART, "zeta"))
    done: list[BaseException | None] = []

    def publish() -> None:
        try:
            _publish(ledger, 2, names)
            done.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            done.append(exc)

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        with psycopg.connect(pg_url, autocommit=True) as probe:
            for _ in range(1000):  # until the publish waits for zeta's lock
                waiting = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND application_name = 'dagster-wandb-secure'"
                ).fetchone()[0]
                if waiting:
                    break
                threading.Event().wait(0.01)
            assert waiting == 1
            with pytest.raises(psycopg.errors.LockNotAvailable):  # alpha was locked before zeta
                probe.execute(f"SELECT 1 FROM {where} NOWAIT", (ART, "alpha"))
    finally:
        holder.rollback()
        holder.close()
        thread.join(60)
        ledger.close()
    assert done == [None]


def test_record_version_sorts_the_marks_before_it_writes_them(young_ledger: PostgresLedger) -> None:
    """The plan of the same: each mark-writing part of record_version inserts from a Sort on
    the marks' keys."""
    import psycopg

    name = "record_version_unflushed"
    with psycopg.connect(young_ledger._conninfo, **young_ledger._connect_kwargs()) as conn:
        plan = kept_plan(conn, name, young_ledger._statements()[name], PARAMS[name])
    parts = {p.split("\n", 1)[0].strip(): p for p in plan.split("  CTE ")[1:]}
    assert re.search(r"Sort Key: u\.artifact, n\.alias", parts["marked"]), plan
    assert re.search(r"Sort Key: n(_\d+)?\.alias", parts["hmarks"]), plan
