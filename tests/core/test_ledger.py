"""The digest ledger: real SQLite files, several real processes."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.errors import KeyStoreError
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.ledger import Ledger, LedgerRow, parse_version
from kit.ledger_rows import digest, entry

FORK = multiprocessing.get_context("fork")






@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.sqlite3")


def test_record_and_read_back(ledger: Ledger) -> None:
    row_id = ledger.record_signature(**entry(1), run_id="run-1")
    assert isinstance(row_id, int)
    (row,) = ledger.rows()
    assert isinstance(row, LedgerRow)
    assert row.id == row_id
    assert (row.key_id, row.alg, row.digest, row.length) == (
        "0123456789abcdef",
        "ed25519",
        digest(1),
        1,
    )
    assert (row.artifact, row.artifact_type, row.partition, row.asset_key) == (
        "model",
        "dataset",
        None,
        "a/b",
    )
    assert row.context == entry(1)["context"]
    assert json.loads(row.context_json) == entry(1)["context"]
    assert (row.serializer, row.run_id, row.origin, row.artifact_version) == (
        "pickle",
        "run-1",
        "signed",
        None,
    )
    assert row.signed_at == "2024-05-01T12:00:00.000000Z" and row.recorded_at.endswith("Z")
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.digest = "x"  # type: ignore[misc]
    assert ledger.find_digest(digest(1)) == [row]
    assert ledger.find_digest(digest(1).upper()) == [row]
    assert ledger.find_digest(digest(2)) == []
    assert ledger.rows(artifact="model") == [row] and ledger.rows(artifact="other") == []


def test_origins_and_context_extras(ledger: Ledger) -> None:
    for origin in ("signed", "adopted", "resigned"):
        ledger.record_signature(**entry(1, origin=origin, context={"artifact": "x", "extra": "y"}))
    rows = ledger.find_digest(digest(1))
    assert [r.origin for r in rows] == ["signed", "adopted", "resigned"]
    assert rows[0].context == {"artifact": "x", "extra": "y"} and rows[0].artifact_type is None


@pytest.mark.parametrize(
    "bad",
    [
        {"digest": "xyz"},
        {"digest": digest(1)[:-1]},
        {"length": -1},
        {"length": True},
        {"origin": "forged"},
        {"context": {"artifact": 5}},
        {"context": "artifact=x"},
        {"key_id": ""},
        {"artifact_version": "latest"},
        {"artifact_version": "v01"},
        {"serializer": "x" * 5000},
    ],
)
def test_invalid_rows_are_refused(ledger: Ledger, bad: dict[str, Any]) -> None:
    with pytest.raises(KeyStoreError):
        ledger.record_signature(**entry(1, **bad))
    assert ledger.rows() == []


def test_sqlite_settings(ledger: Ledger) -> None:
    ledger.record_signature(**entry(1))
    conn = sqlite3.connect(ledger.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[1] for r in conn.execute("PRAGMA index_list(signatures)")}
    assert {"signatures_by_digest", "signatures_by_artifact"} <= indexes
    conn.close()
    own = ledger._connection()
    assert own.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert own.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    full = Ledger(ledger.path, synchronous="FULL")
    full.record_signature(**entry(2))
    assert full._connection().execute("PRAGMA synchronous").fetchone()[0] == 2
    with pytest.raises(KeyStoreError):
        Ledger(ledger.path, synchronous="OFF")


def test_lazy_creation(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    assert not path.exists()
    assert ledger.rows() == []
    assert path.exists()
    with pytest.raises(KeyStoreError, match="does not exist"):
        Ledger(tmp_path / "missing" / "ledger.sqlite3").rows()


def test_key_store_ledger_lives_in_the_store(tmp_path: Path) -> None:
    ks = KeyStore.open(tmp_path / "ks")
    assert ks.ledger is ks.ledger
    assert ks.ledger.path == ks.path / "ledger.sqlite3"
    ks.ledger.record_signature(**entry(3))
    assert KeyStore.open(ks.path).ledger.find_digest(digest(3))


# --- versions, aliases, rollback marks -----------------------------------------------------------


def test_parse_version() -> None:
    assert parse_version("v0") == 0 and parse_version("v12") == 12
    for bad in ("12", "V1", "v-1", "v01", "v1.0", "latest", "", "v" + "9" * 30, None):
        with pytest.raises(KeyStoreError):
            parse_version(bad)  # type: ignore[arg-type]


def test_newest_version_from_writer_records(ledger: Ledger) -> None:
    assert ledger.newest_version("model") is None
    r1 = ledger.record_signature(**entry(1))
    ledger.attach_version(r1, artifact_version="v0")
    r2 = ledger.record_signature(**entry(2))
    ledger.attach_version(r2, artifact_version="v1", aliases=["prod"])
    r3 = ledger.record_signature(**entry(3))
    ledger.attach_version(r3, artifact_version="v2")
    assert ledger.newest_version("model") == 2
    assert ledger.newest_version("model", alias="latest") == 2
    assert ledger.newest_version("model", alias="prod") == 1
    assert ledger.newest_version("model", alias="staging") is None
    assert ledger.newest_version("other") is None
    assert [r.artifact_version for r in ledger.rows()] == ["v0", "v1", "v2"]
    # a writer moving prod back to v0 does not lower the mark: the reader will see a rollback
    ledger.attach_version(r1, artifact_version="v0", aliases=["prod"])
    assert ledger.newest_version("model", alias="prod") == 1
    assert ledger.aliases("model") == {"latest": 2, "prod": 1}
    # a version recorded with the row itself counts for "latest" too
    ledger.record_signature(**entry(4, artifact_version="v7"))
    assert ledger.newest_version("model") == 7
    with pytest.raises(KeyStoreError, match="no row"):
        ledger.attach_version(999_999, artifact_version="v1")
    with pytest.raises(KeyStoreError):
        ledger.attach_version(r1, artifact_version="1")
    with pytest.raises(KeyStoreError):
        ledger.attach_version(r1, artifact_version="v1", aliases="prod")  # type: ignore[arg-type]


def test_note_seen_only_moves_forward(ledger: Ledger) -> None:
    ledger.note_seen("model", "latest", 3)
    assert ledger.newest_version("model") == 3
    ledger.note_seen("model", "latest", 1)  # an older resolution never lowers the mark
    assert ledger.newest_version("model") == 3
    ledger.note_seen("model", "latest", 5)
    assert ledger.newest_version("model") == 5
    ledger.note_seen("model", "prod", 2)
    assert ledger.newest_version("model", alias="prod") == 2
    ledger.note_seen("model", "champion", 9)  # any alias's version exists, so latest >= 9
    assert ledger.newest_version("model") == 9
    # writer and reader records combine
    row = ledger.record_signature(**entry(1))
    ledger.attach_version(row, artifact_version="v11", aliases=["prod"])
    assert ledger.newest_version("model", alias="prod") == 11
    assert ledger.newest_version("model") == 11
    ledger.note_seen("model", "prod", 4)
    assert ledger.newest_version("model", alias="prod") == 11
    for bad in (-1, True, "3", 1.5):
        with pytest.raises(KeyStoreError):
            ledger.note_seen("model", "latest", bad)  # type: ignore[arg-type]
    with pytest.raises(KeyStoreError):
        ledger.note_seen("", "latest", 1)


def test_marks_are_per_artifact(ledger: Ledger) -> None:
    ledger.note_seen("a", "latest", 10)
    ledger.note_seen("b", "latest", 2)
    assert ledger.newest_version("a") == 10 and ledger.newest_version("b") == 2


# --- batching, processes, fork -------------------------------------------------------------------


def test_record_many_takes_10000_rows_all_or_nothing(ledger: Ledger) -> None:
    """10,000 rows in one call, every id distinct, and a bad row anywhere records none (speed is
    the benchmarks' business: a wall-clock bound here was only noise)."""
    ids = ledger.record_many(entry(i, artifact=f"art-{i % 50}") for i in range(10_000))
    assert len(ids) == len(set(ids)) == 10_000
    assert ledger.count() == 10_000
    assert len(ledger.rows(artifact="art-7")) == 200
    assert [r.length for r in ledger.find_digest(digest(1234))] == [1234]
    bad = [entry(1), entry(2, digest="nope")]
    with pytest.raises(KeyStoreError):
        ledger.record_many(bad)
    assert ledger.count() == 10_000  # all or nothing


# Several processes writing one fresh ledger at once: the contract suite
# (tests/core/test_ledger_contract.py::test_four_processes_write_at_once) runs it on SQLite and
# PostgreSQL.


def _use_inherited(ledger: Ledger, queue: Any) -> None:
    queue.put(ledger.record_signature(**entry(99)))


def test_connection_is_not_shared_across_fork(ledger: Ledger) -> None:
    ledger.record_signature(**entry(1))
    parent_conn = ledger._connection()
    queue = FORK.Queue()
    proc = FORK.Process(target=_use_inherited, args=(ledger, queue))
    proc.start()
    child_row = queue.get(timeout=30)
    proc.join(30)
    assert proc.exitcode == 0
    assert ledger._connection() is parent_conn  # the parent's connection is untouched
    assert [r.id for r in ledger.find_digest(digest(99))] == [child_row]
    ledger.record_signature(**entry(2))
    assert ledger.count() == 3


def test_close_and_reopen(ledger: Ledger) -> None:
    with ledger:
        ledger.record_signature(**entry(1))
    assert ledger._conn is None
    assert ledger.count() == 1


def test_batch_is_one_transaction(ledger: Ledger) -> None:
    with ledger.batch() as b:
        first = b.record_signature(**entry(1))
        b.attach_version(first, artifact_version="v1", aliases=["prod"])
        b.note_seen("model", "latest", 4)
        # another connection does not see the uncommitted rows yet
        other = sqlite3.connect(ledger.path)
        assert other.execute("SELECT COUNT(*) FROM signatures").fetchone()[0] == 0
        other.close()
    assert ledger.count() == 1 and ledger.newest_version("model") == 4
    with pytest.raises(RuntimeError), ledger.batch():
        ledger.record_signature(**entry(2))
        ledger.note_seen("model", "latest", 9)
        raise RuntimeError("abort")
    assert ledger.count() == 1 and ledger.newest_version("model") == 4  # all rolled back
    ledger.record_signature(**entry(3))  # usable afterwards
    assert ledger.count() == 2
