"""The ledger contract: the same cases against both backends (SQLite file, real PostgreSQL)."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.errors import KeyStoreError
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.ledger import Ledger, LedgerRow
from dagster_wandb_secure.core.ledger_api import (
    LedgerBackend,
    LedgerError,
    export_marks,
    ledger_status,
    open_ledger,
)
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger

FORK = multiprocessing.get_context("fork")
BACKENDS = ["sqlite", "postgres"]


def digest(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def entry(n: int, artifact: str = "model", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "key_id": "0123456789abcdef",
        "alg": "ed25519",
        "digest": digest(n),
        "length": n,
        "context": {"artifact": artifact, "type": "dataset", "partition": None, "asset_key": "a/b"},
        "serializer": "pickle",
        "signed_at": "2024-05-01T12:00:00.000000Z",
    }
    base.update(kw)
    return base


@pytest.fixture(params=BACKENDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The ledger setting: None (SQLite in the key store) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def ledger(spec: str | None, tmp_path: Path) -> LedgerBackend:
    opened = open_ledger(spec, tmp_path)
    yield opened
    opened.close()


def reopen(spec: str | None, tmp_path: Path) -> LedgerBackend:
    """A second, independent handle on the same ledger (another process would see this)."""
    return open_ledger(spec, tmp_path)


def test_both_backends_implement_the_interface(ledger: LedgerBackend) -> None:
    assert isinstance(ledger, LedgerBackend)
    assert isinstance(Ledger, type) and isinstance(PostgresLedger, type)


def test_record_and_read_back(ledger: LedgerBackend) -> None:
    row_id = ledger.record_signature(**entry(1), run_id="run-1")
    (row,) = ledger.rows()
    assert isinstance(row, LedgerRow) and row.id == row_id
    assert (row.key_id, row.alg, row.digest, row.length) == (
        "0123456789abcdef", "ed25519", digest(1), 1,
    )
    assert (row.artifact, row.artifact_type, row.partition, row.asset_key) == (
        "model", "dataset", None, "a/b",
    )
    assert row.context == entry(1)["context"]
    assert (row.serializer, row.run_id, row.origin, row.artifact_version) == (
        "pickle", "run-1", "signed", None,
    )
    assert row.signed_at == "2024-05-01T12:00:00.000000Z" and row.recorded_at.endswith("Z")
    assert ledger.find_digest(digest(1)) == [row]
    assert ledger.find_digest(digest(1).upper()) == [row]
    assert ledger.find_digest(digest(2)) == []
    assert ledger.rows(artifact="model") == [row] and ledger.rows(artifact="other") == []
    assert ledger.count() == 1


def test_origins_and_versions_at_record_time(ledger: LedgerBackend) -> None:
    for origin in ("signed", "adopted", "resigned"):
        ledger.record_signature(**entry(1, origin=origin, context={"artifact": "x", "e": "y"}))
    rows = ledger.find_digest(digest(1))
    assert [r.origin for r in rows] == ["signed", "adopted", "resigned"]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert rows[0].context == {"artifact": "x", "e": "y"} and rows[0].artifact_type is None
    ledger.record_signature(**entry(2, artifact="y"), artifact_version="v4")
    assert ledger.newest_version("y") == 4


@pytest.mark.parametrize(
    "bad",
    [
        {"digest": "xyz"},
        {"length": -1},
        {"length": True},
        {"origin": "forged"},
        {"context": {"artifact": 5}},
        {"key_id": ""},
        {"artifact_version": "latest"},
        {"serializer": "x" * 5000},
    ],
)
def test_invalid_rows_are_refused(ledger: LedgerBackend, bad: dict[str, Any]) -> None:
    with pytest.raises(KeyStoreError):
        ledger.record_signature(**entry(1, **bad))
    assert ledger.rows() == []


def test_versions_and_marks(ledger: LedgerBackend) -> None:
    assert ledger.newest_version("model") is None
    r1 = ledger.record_signature(**entry(1))
    ledger.attach_version(r1, artifact_version="v0")
    r2 = ledger.record_signature(**entry(2))
    ledger.attach_version(r2, artifact_version="v2", aliases=["prod", "prod"])
    assert ledger.newest_version("model") == 2
    assert ledger.newest_version("model", alias="prod") == 2
    assert ledger.aliases("model") == {"latest": 2, "prod": 2}
    assert [r.artifact_version for r in ledger.rows()] == ["v0", "v2"]
    ledger.note_seen("model", "latest", 1)  # never lowers
    assert ledger.newest_version("model") == 2
    ledger.note_seen("model", "champion", 9)  # any alias's version counts for latest
    assert ledger.newest_version("model") == 9
    ledger.note_seen("other", "latest", 3)
    assert ledger.newest_version("other") == 3 and ledger.newest_version("model") == 9
    marks = export_marks(ledger)
    assert ("model", "champion", 9, "reader") in marks and ("model", "prod", 2, "writer") in marks
    with pytest.raises(KeyStoreError):
        ledger.attach_version(10_000, artifact_version="v1")
    with pytest.raises(KeyStoreError):
        ledger.attach_version(r1, artifact_version="1")
    with pytest.raises(KeyStoreError):
        ledger.attach_version(r1, artifact_version="v1", aliases="prod")  # type: ignore[arg-type]
    for bad in (-1, True, "3"):
        with pytest.raises(KeyStoreError):
            ledger.note_seen("model", "latest", bad)  # type: ignore[arg-type]
    nameless = ledger.record_signature(**entry(3, context={"type": "x"}))
    with pytest.raises(KeyStoreError, match="no artifact name"):
        ledger.attach_version(nameless, artifact_version="v1", aliases=["prod"])
    ledger.attach_version(nameless, artifact_version="v1")


def test_record_many_is_atomic(ledger: LedgerBackend) -> None:
    ids = ledger.record_many(entry(i, artifact=f"art-{i % 5}") for i in range(500))
    assert len(ids) == len(set(ids)) == 500 and ids == sorted(ids)
    assert ledger.count() == 500 and len(ledger.rows(artifact="art-3")) == 100
    assert [r.id for r in ledger.rows()] == ids
    with pytest.raises(KeyStoreError):
        ledger.record_many([entry(1), entry(2, digest="nope")])
    assert ledger.count() == 500
    assert ledger.record_many([]) == []


def test_batch_is_one_transaction(ledger: LedgerBackend, spec: str | None, tmp_path: Path) -> None:
    other = reopen(spec, tmp_path)
    assert other.count() == 0  # opened (and its schema created) before the batch starts
    with ledger.batch() as b:
        first = b.record_signature(**entry(1))
        b.attach_version(first, artifact_version="v1", aliases=["prod"])
        b.note_seen("model", "latest", 4)
        assert b.count() == 1  # this thread sees its own writes
        assert other.count() == 0  # another connection does not, yet
    assert other.count() == 1 and other.newest_version("model") == 4
    with pytest.raises(RuntimeError), ledger.batch():
        ledger.record_signature(**entry(2))
        ledger.note_seen("model", "latest", 9)
        raise RuntimeError("abort")
    assert ledger.count() == 1 and ledger.newest_version("model") == 4
    other.close()


def test_close_and_reopen(ledger: LedgerBackend) -> None:
    with ledger:
        ledger.record_signature(**entry(1))
    assert ledger.count() == 1


def test_status(ledger: LedgerBackend) -> None:
    row = ledger.record_signature(**entry(1))
    ledger.attach_version(row, artifact_version="v0", aliases=["prod"])
    status = ledger_status(ledger)
    assert status["schema_version"] == status["code_schema_version"] == 1
    assert (status["signatures"], status["artifacts"], status["marks"]) == (1, 1, 2)
    assert status["backend"] in ("sqlite", "postgresql")


def test_key_store_uses_an_attached_ledger(spec: str | None, tmp_path: Path) -> None:
    ks = KeyStore.open(tmp_path / "ks")
    ledger = open_ledger(spec, ks.path)
    ks.attach_ledger(ledger)
    assert ks.ledger is ledger
    ks.ledger.record_signature(**entry(3))
    assert reopen(spec, ks.path).find_digest(digest(3))
    ks.close()


def test_threads_share_one_ledger(ledger: LedgerBackend) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(20):
                row = ledger.record_signature(**entry(t * 100 + i, artifact=f"t{t}"))
                ledger.attach_version(row, artifact_version=f"v{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert ledger.count() == 80 and all(ledger.newest_version(f"t{t}") == 19 for t in range(4))


def _write_rows(spec: str | None, folder: str, worker: int, count: int) -> None:
    ledger = open_ledger(spec, Path(folder))
    for i in range(count):
        row = ledger.record_signature(**entry(worker * 10_000 + i, artifact=f"w{worker}"))
        if i % 10 == 0:
            ledger.attach_version(row, artifact_version=f"v{i}", aliases=["prod"])
            ledger.note_seen("shared", "latest", worker * 1000 + i)
    ledger.close()


def test_four_processes_write_at_once(spec: str | None, tmp_path: Path) -> None:
    """A fresh ledger (PostgreSQL: an empty database, so the four race to migrate it too)."""
    procs = [
        FORK.Process(target=_write_rows, args=(spec, str(tmp_path), w, 60)) for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ledger = open_ledger(spec, tmp_path)
    rows = ledger.rows()
    assert len(rows) == 240 and len({r.id for r in rows}) == 240
    for w in range(4):
        assert len(ledger.rows(artifact=f"w{w}")) == 60
        assert ledger.newest_version(f"w{w}", alias="prod") == 50
    assert ledger.newest_version("shared") == 3050


def _use_inherited(ledger: LedgerBackend, queue: Any) -> None:
    queue.put(ledger.record_signature(**entry(99)))


def test_connection_is_not_shared_across_fork(ledger: LedgerBackend) -> None:
    ledger.record_signature(**entry(1))
    queue = FORK.Queue()
    proc = FORK.Process(target=_use_inherited, args=(ledger, queue))
    proc.start()
    child_row = queue.get(timeout=60)
    proc.join(60)
    assert proc.exitcode == 0
    assert [r.id for r in ledger.find_digest(digest(99))] == [child_row]
    ledger.record_signature(**entry(2))
    assert ledger.count() == 3


def test_open_ledger_specs(tmp_path: Path) -> None:
    assert isinstance(open_ledger(None, tmp_path), Ledger)
    assert open_ledger("", tmp_path).path == tmp_path / "ledger.sqlite3"  # type: ignore[attr-defined]
    assert open_ledger(f"sqlite:{tmp_path}/x.db", tmp_path).path == tmp_path / "x.db"  # type: ignore[attr-defined]
    assert isinstance(open_ledger("postgresql://u:p@db.example/x", tmp_path), PostgresLedger)
    for bad in ("mysql://u:secret@h/db", "keys/ledger.db", "http://x"):
        with pytest.raises(LedgerError) as info:
            open_ledger(bad, tmp_path)
        assert "secret" not in str(info.value)
