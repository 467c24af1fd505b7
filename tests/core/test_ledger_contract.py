"""The ledger contract: the same cases against both backends (SQLite file, real PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.errors import KeyStoreError
from dagster_wandb_secure.core.history import Position, SeenManifest
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.ledger import Ledger, LedgerRow
from dagster_wandb_secure.core.ledger_api import (
    LedgerBackend,
    LedgerError,
    LedgerLockTimeoutError,
    export_history,
    export_marks,
    ledger_status,
    open_ledger,
)
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.ledger_rows import digest, entry

FORK = multiprocessing.get_context("fork")
BACKENDS = ["sqlite", "postgres"]




def pos(sequence: int, second: int = 0, d: int | str | None = None) -> Position:
    """A signed history position (sequence, signed_at, manifest digest)."""
    at = f"2024-05-01T12:00:{second:02d}.000000Z"
    return Position(sequence, at, digest(f"m{sequence}-{second}" if d is None else d))




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
    ledger.allocate_sequence("e/p/model", floor=0)
    ledger.record_manifest("e/p/model", digest(7), pos(1), version="v0", source="writer")
    ledger.advance_mark("e/p/model", "latest", pos(1), source="writer")
    status = ledger_status(ledger)
    assert status["schema_version"] == status["code_schema_version"] == 2
    assert (status["signatures"], status["artifacts"], status["marks"]) == (1, 1, 2)
    assert (status["sequences"], status["history_marks"], status["manifests"]) == (1, 1, 1)
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


# -- the signed version history -------------------------------------------------------------------

ART = "team/proj/model"


def test_allocate_sequence(ledger: LedgerBackend, spec: str | None, tmp_path: Path) -> None:
    assert ledger.allocate_sequence(ART, floor=0) == 1
    assert ledger.allocate_sequence(ART, floor=0) == 2  # never reused
    assert ledger.allocate_sequence(ART, floor=10) == 11  # the store's head is ahead
    assert ledger.allocate_sequence(ART, floor=3) == 12  # a low floor never lowers it
    assert ledger.allocate_sequence("team/proj/other", floor=0) == 1  # per artifact
    assert reopen(spec, tmp_path).allocate_sequence(ART, floor=0) == 13  # remembered
    for bad in (-1, True, "3", 1.5):
        with pytest.raises(KeyStoreError):
            ledger.allocate_sequence(ART, floor=bad)  # type: ignore[arg-type]
    with pytest.raises(KeyStoreError):
        ledger.allocate_sequence("", floor=0)
    assert export_history(ledger)["sequences"] == [(ART, 13), ("team/proj/other", 1)]


def test_history_marks_only_move_forward(ledger: LedgerBackend) -> None:
    assert ledger.history_mark(ART, "latest") is None and ledger.history_marks(ART) == {}
    ledger.advance_mark(ART, "latest", pos(2), source="writer")
    ledger.advance_mark(ART, "latest", pos(1), source="reader")  # lower: ignored
    assert ledger.history_mark(ART, "latest") == pos(2)
    ledger.advance_mark(ART, "latest", pos(2, 5), source="reader")  # same seq, signed later
    assert ledger.history_mark(ART, "latest") == pos(2, 5)
    ledger.advance_mark(ART, "latest", pos(2, 1), source="writer")  # same seq, earlier
    assert ledger.history_mark(ART, "latest") == pos(2, 5)
    # the full order: sequence, then signed_at, then digest (compared as Python compares them)
    low, high = sorted([pos(3, 0, "a"), pos(3, 0, "b")])
    ledger.advance_mark(ART, "prod", high, source="writer")
    ledger.advance_mark(ART, "prod", low, source="reader")
    assert ledger.history_marks(ART) == {"latest": pos(2, 5), "prod": high}
    ledger.advance_mark(ART, "latest", pos(9), source="reader")
    assert ledger.history_mark(ART, "latest") == pos(9)
    assert ledger.history_marks("team/proj/other") == {}
    marks = export_history(ledger)["marks"]
    assert (ART, "latest", pos(9), "reader") in marks and (ART, "prod", high, "writer") in marks
    for bad_pos in (
        Position(0, pos(1).signed_at, pos(1).digest),
        Position(1, "yesterday", pos(1).digest),
        Position(1, pos(1).signed_at, "nope"),
        (1, pos(1).signed_at, pos(1).digest),
    ):
        with pytest.raises(KeyStoreError):
            ledger.advance_mark(ART, "latest", bad_pos, source="reader")  # type: ignore[arg-type]
    with pytest.raises(KeyStoreError):
        ledger.advance_mark(ART, "latest", pos(10), source="attacker")
    assert ledger.history_mark(ART, "latest") == pos(9)


def test_manifests_keep_the_first_sighting(ledger: LedgerBackend) -> None:
    assert ledger.seen_manifest(ART, digest("x")) is None and ledger.newest_seen(ART) is None
    ledger.record_manifest(ART, digest("x"), pos(1), version="v0", source="writer")
    ledger.record_manifest(ART, digest("x"), pos(1), version="v7", source="reader")  # replayed
    assert ledger.seen_manifest(ART, digest("x")) == SeenManifest(digest("x"), pos(1), "v0")
    ledger.record_manifest(ART, digest("old"), None, version="v1", source="reader")  # format 1
    assert ledger.seen_manifest(ART, digest("old")) == SeenManifest(digest("old"), None, "v1")
    assert ledger.newest_seen(ART) == SeenManifest(digest("x"), pos(1), "v0")
    positions = [pos(4, 1, "a"), pos(4, 1, "b"), pos(4, 0), pos(3, 9)]
    for n, position in enumerate(positions):
        ledger.record_manifest(ART, digest(f"y{n}"), position, version=None, source="reader")
    newest = ledger.newest_seen(ART)
    assert newest is not None and newest.position == max(positions)
    assert ledger.newest_seen("team/proj/other") is None
    for bad in (
        lambda: ledger.record_manifest(ART, "xyz", pos(1), version="v0", source="writer"),
        lambda: ledger.record_manifest(ART, digest(1), pos(1), version=5, source="writer"),  # type: ignore[arg-type]
        lambda: ledger.record_manifest(ART, digest(1), pos(1), version="v0", source="x"),
        lambda: ledger.record_manifest(ART, digest(1), "p", version="v0", source="writer"),  # type: ignore[arg-type]
    ):
        with pytest.raises(KeyStoreError):
            bad()
    assert len(export_history(ledger)["manifests"]) == 6


def test_history_writes_join_a_batch(ledger: LedgerBackend) -> None:
    with pytest.raises(RuntimeError), ledger.batch():
        ledger.record_manifest(ART, digest("b"), pos(5), version="v5", source="writer")
        ledger.advance_mark(ART, "latest", pos(5), source="writer")
        raise RuntimeError("abort")
    assert ledger.seen_manifest(ART, digest("b")) is None
    assert ledger.history_mark(ART, "latest") is None
    with ledger.batch():
        ledger.record_manifest(ART, digest("b"), pos(5), version="v5", source="writer")
        ledger.advance_mark(ART, "latest", pos(5), source="writer")
    assert ledger.history_mark(ART, "latest") == pos(5)


def _holds_lock(spec: str | None, folder: str, held: Any, release: Any) -> None:
    ledger = open_ledger(spec, Path(folder))
    with ledger.history_lock(ART):
        held.set()
        release.wait(60)
    ledger.close()


def test_history_lock_excludes_other_processes(spec: str | None, tmp_path: Path) -> None:
    held, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_holds_lock, args=(spec, str(tmp_path), held, release))
    holder.start()
    try:
        assert held.wait(60)
        ledger = open_ledger(spec, tmp_path)
        got = threading.Event()

        def take() -> None:
            with ledger.history_lock(ART):
                got.set()

        waiter = threading.Thread(target=take)
        waiter.start()
        assert not got.wait(1.0)  # held elsewhere: we wait
        with ledger.history_lock("team/proj/other"):  # another artifact's lock is free
            pass
        release.set()
        assert got.wait(60)  # released on exit: we get it
        waiter.join(60)
        with ledger.history_lock(ART):  # and it was released again
            pass
        ledger.close()
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0


def test_history_lock_wait_is_bounded(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL: a writer waits at most ``lock_timeout`` ms, then a typed error."""
    held, release = FORK.Event(), FORK.Event()
    holder = FORK.Process(target=_holds_lock, args=(pg_url, str(tmp_path), held, release))
    holder.start()
    try:
        assert held.wait(60)
        impatient = PostgresLedger(pg_url + "&lock_timeout=200")
        with pytest.raises(LedgerLockTimeoutError) as info, impatient.history_lock(ART):
            pass
        assert ART in str(info.value)
        impatient.close()
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0


def _allocate_and_mark(spec: str | None, folder: str, worker: int, out: Any) -> None:
    """One writer: 15 allocations under the history lock (the writers' protocol) and 15 bare
    ones, advancing the shared mark each time and checking it never moved back."""
    ledger = open_ledger(spec, Path(folder))
    got: list[int] = []
    seen_marks: list[Position] = []
    for i in range(30):
        if i % 2:
            with ledger.history_lock(ART):
                newest = ledger.newest_seen(ART)
                floor = newest.position.sequence if newest and newest.position else 0
                sequence = ledger.allocate_sequence(ART, floor=floor)
                position = pos(sequence, worker, f"{worker}-{i}")
                with ledger.batch():
                    ledger.record_manifest(
                        ART, position.digest, position, version=f"v{sequence}", source="writer"
                    )
                    ledger.advance_mark(ART, "latest", position, source="writer")
        else:
            sequence = ledger.allocate_sequence(ART, floor=0)
            position = pos(sequence, worker, f"{worker}-{i}")
            ledger.advance_mark(ART, "latest", position, source="reader")
        got.append(sequence)
        mark = ledger.history_mark(ART, "latest")
        assert mark is not None and mark >= position
        seen_marks.append(mark)
    ledger.close()
    out.put((worker, got, seen_marks))


def test_four_processes_allocate_at_once(spec: str | None, tmp_path: Path) -> None:
    """Four writers (a fresh ledger: the PostgreSQL migration races too): every sequence handed
    out once, increasing within each writer; the mark ends at the highest and never moved back
    as any writer saw it."""
    out = FORK.Queue()
    procs = [
        FORK.Process(target=_allocate_and_mark, args=(spec, str(tmp_path), w, out))
        for w in range(4)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    everything: list[int] = []
    for _worker, got, seen_marks in results:
        assert got == sorted(got) and len(set(got)) == len(got)
        assert seen_marks == sorted(seen_marks)
        everything += got
    assert sorted(everything) == list(range(1, 121))  # distinct, no gap, no reuse
    ledger = open_ledger(spec, tmp_path)
    final = ledger.history_mark(ART, "latest")
    assert final is not None and final.sequence == 120
    assert ledger.allocate_sequence(ART, floor=0) == 121
    ledger.close()


def test_schema_1_database_is_migrated_to_2(pg_server: Any) -> None:
    """A PostgreSQL ledger made by the schema-1 code: its rows are kept, the history tables are
    added on first use by the new code, and the history works."""
    url = pg_server.new_database("v1")
    database = url.split("?")[0].rsplit("/", 1)[1]
    first = PostgresLedger(url)
    row = first.record_signature(**entry(1))
    first.attach_version(row, artifact_version="v0", aliases=["prod"])
    first.close()
    pg_server.psql(
        "DROP TABLE dagster_wandb_secure.history_sequences, dagster_wandb_secure.history_marks, "
        "dagster_wandb_secure.history_seen; "
        "DELETE FROM dagster_wandb_secure.schema_migrations WHERE version = 2;",
        database,
    )
    again = PostgresLedger(url)
    assert ledger_status(again)["schema_version"] == 2
    assert again.count() == 1 and again.aliases("model") == {"latest": 0, "prod": 0}
    assert again.allocate_sequence(ART, floor=0) == 1
    again.advance_mark(ART, "latest", pos(1), source="writer")
    assert again.history_mark(ART, "latest") == pos(1)
    again.close()
