"""A reader whose PostgreSQL role may only SELECT (docs/deployment.md's read-only role), through
real ``materialize`` runs: with ``ledger_mode: read-only`` it reads valid artifacts, refuses a
rollback the shared ledger has marks against, keeps its own advances in its key store's SQLite
ledger and enforces them on its next read, and writes nothing to PostgreSQL. Without the mode,
the same role fails the read with a typed error saying what to set."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dagster import asset, materialize
from dagster_wandb_secure import WandbArtifactsIOManager
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.ledger import Ledger
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.dagster_runs import ENTITY, PROJECT, failure_text, read_via, store_of
from kit.pg_roles import roles_database
from kit.postgres import PgServer


def model(value: Any) -> Any:
    @asset(name="model", io_manager_key="m")
    def _model() -> dict[str, Any]:
        return {"value": value}

    return _model


def database_rows(admin: PostgresLedger) -> tuple[Any, ...]:
    return (admin.count(), admin.rows(), admin.history_rows(), admin.marks())


def test_a_select_only_reader_checks_shared_marks_and_keeps_its_own(
    tmp_path: Path, pg_server: PgServer
) -> None:
    db = roles_database(pg_server)
    store = tmp_path / "store"

    def iom(keys: Path, **cfg: Any) -> WandbArtifactsIOManager:
        return WandbArtifactsIOManager(
            key_store=str(keys), store="local", local_store_dir=str(store),
            base_dir=str(tmp_path), entity=ENTITY, project=PROJECT, **cfg,
        )

    writer = KeyStore.open(tmp_path / "writer-keys")
    writer.generate("ed25519")

    def reader_keys(name: str) -> Path:
        ks = KeyStore.open(tmp_path / name)
        ks.import_public(writer.export_public(writer.primary().kid))
        return ks.path

    wrote = iom(writer.path, ledger=db.url_of("writer"))
    for value in (0, 1):
        assert materialize([model(value)], resources={"m": wrote}).success
    admin = PostgresLedger(db.url)
    before = database_rows(admin)
    readonly = {"ledger": db.url_of("readonly"), "ledger_mode": "read-only"}
    keys = reader_keys("reader-keys")

    # without ledger_mode the role cannot record its marks: a typed error naming the fix
    plain = read_via(iom(keys, ledger=db.url_of("readonly")), model(None))
    assert not plain.success and not plain.seen
    text = failure_text(plain)
    assert "LedgerPermissionError" in text and "ledger_mode: read-only" in text, text

    # (b) the writer's mark in the shared ledger refuses a rollback to v0
    local = store_of(store)
    local.move_alias(ENTITY, PROJECT, "model", "latest", "v0")
    back = read_via(iom(keys, **readonly), model(None))
    assert not back.success and not back.seen  # the value never reached user code
    assert "RollbackError" in failure_text(back), failure_text(back)

    # (a) a valid latest is read
    local.move_alias(ENTITY, PROJECT, "model", "latest", "v1")
    ok = read_via(iom(keys, **readonly), model(None))
    assert ok.success and ok.seen["value"] == {"value": 1}

    # (c) a version the shared ledger never heard of (signed with a copy of the key, recorded
    # only in that copy's own ledger): the reader accepts it and keeps the advance locally ...
    offline = tmp_path / "offline-keys"
    shutil.copytree(writer.path, offline, ignore=shutil.ignore_patterns("ledger.sqlite3*"))
    assert materialize([model(2)], resources={"m": iom(offline)}).success
    ahead = read_via(iom(keys, **readonly), model(None))
    assert ahead.success and ahead.seen["value"] == {"value": 2}
    mark = Ledger(keys / "ledger.sqlite3").history_mark(f"{ENTITY}/{PROJECT}/model", "latest")
    assert mark is not None and mark.sequence == 3
    # ... and enforces it on its next read: latest moved back to v1 is refused by this reader,
    local.move_alias(ENTITY, PROJECT, "model", "latest", "v1")
    again = read_via(iom(keys, **readonly), model(None))
    assert not again.success and not again.seen
    assert "RollbackError" in failure_text(again), failure_text(again)
    # while a fresh read-only reader, with only the shared marks, accepts v1
    fresh = read_via(iom(reader_keys("fresh-keys"), **readonly), model(None))
    assert fresh.success and fresh.seen["value"] == {"value": 1}

    # (d) nothing this role did reached PostgreSQL
    assert database_rows(admin) == before
    admin.close()
