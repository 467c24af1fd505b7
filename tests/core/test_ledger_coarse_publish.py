"""A publish's coarse ledger steps, the same on both backends: ``allocate_next`` (the newest
seen manifest and the allocation above it), ``record_many`` of a publish's rows, and
``record_version`` (the writer's records of a published version, all or nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.errors import KeyStoreError
from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.ledger_api import LedgerBackend, open_ledger
from kit.ledger_rows import digest, entry

ART = "team/proj/model"
AT = "2024-05-01T12:00:00.000000Z"


def pos(sequence: int, d: str | None = None) -> Position:
    return Position(sequence, AT, digest(d or f"m{sequence}"))


@pytest.fixture
def ledger(any_ledger: LedgerBackend) -> LedgerBackend:
    return any_ledger  # each backend in turn (kit/postgres.py)


def state(ledger: LedgerBackend) -> tuple[Any, ...]:
    """Everything a publish's records can change."""
    return (
        [(r.id, r.artifact_version) for r in ledger.rows()],
        ledger.marks(),
        ledger.history_rows(),
    )


def publish_rows(ledger: LedgerBackend, n: int = 2, start: int = 0) -> list[int]:
    return ledger.record_many([entry(start + k) for k in range(n)])


def record(ledger: LedgerBackend, rows: list[int], version: str, position: Position,
           **kw: Any) -> None:
    ledger.record_version(
        rows, artifact_version=version, aliases=kw.pop("aliases", ("latest", "prod")),
        history_key=ART, manifest_digest=position.digest, position=position,
        marks=kw.pop("marks", ("prod",)), **kw,
    )


def test_record_many_returns_the_ids_in_the_entries_order(ledger: LedgerBackend) -> None:
    for n in (1, 2, 16, 17, 40):  # one statement up to 16 rows on PostgreSQL, then a batch
        before = ledger.count()
        ids = ledger.record_many([entry(1000 * n + k, length=k) for k in range(n)])
        assert len(ids) == n and ids == sorted(ids) and ledger.count() == before + n
        found = {r.id: r for r in ledger.rows()}
        assert [found[i].digest for i in ids] == [digest(1000 * n + k) for k in range(n)]


def test_record_many_of_a_publish_is_all_or_nothing(ledger: LedgerBackend) -> None:
    with pytest.raises(KeyStoreError):
        ledger.record_many([entry(1), entry(2, digest="not-hex")])
    assert ledger.count() == 0


def test_record_version_is_the_fine_calls_in_one(ledger: LedgerBackend, tmp_path: Path) -> None:
    """The same state as attach_version per row, record_manifest and advance_mark per alias
    (the calls publish_version made before), made on a fresh SQLite ledger."""
    rows = publish_rows(ledger)
    record(ledger, rows, "v3", pos(1))
    (tmp_path / "fine").mkdir()
    fine = open_ledger(None, tmp_path / "fine")
    try:
        fine_rows = publish_rows(fine)
        with fine.batch():
            for row in fine_rows:
                fine.attach_version(row, artifact_version="v3", aliases=("latest", "prod"))
            fine.record_manifest(ART, pos(1).digest, pos(1), version="v3", source="writer")
            for alias in ("latest", "prod"):
                fine.advance_mark(ART, alias, pos(1), source="writer")
        assert state(ledger) == state(fine)
    finally:
        fine.close()
    assert ledger.aliases("model") == {"latest": 3, "prod": 3}
    assert ledger.history_marks(ART) == {"latest": pos(1), "prod": pos(1)}
    seen = ledger.seen_manifest(ART, pos(1).digest)
    assert seen is not None and seen.position == pos(1) and seen.version == "v3"


def test_record_version_never_moves_a_mark_back(ledger: LedgerBackend) -> None:
    record(ledger, publish_rows(ledger), "v5", pos(5))
    record(ledger, publish_rows(ledger, start=10), "v2", pos(2))  # an older version, later
    assert ledger.aliases("model") == {"latest": 5, "prod": 5}
    assert ledger.history_marks(ART) == {"latest": pos(5), "prod": pos(5)}


@pytest.mark.parametrize("case", ["missing row", "nameless row with aliases"])
def test_a_refused_record_version_changes_nothing(ledger: LedgerBackend, case: str) -> None:
    rows = publish_rows(ledger)
    if case == "missing row":
        rows.append(10_000)
        match = "no row 10000"
    else:
        nameless = ledger.record_many([entry(9, context={"type": "dataset"})])
        rows.extend(nameless)
        match = f"row {nameless[0]} has no artifact name"
    before = state(ledger)
    with pytest.raises(KeyStoreError, match=match):
        record(ledger, rows, "v1", pos(1))
    assert state(ledger) == before


def test_a_refused_record_version_rolls_its_batch_back(ledger: LedgerBackend) -> None:
    with pytest.raises(KeyStoreError, match="no row 10000"), ledger.batch():
        rows = publish_rows(ledger)
        record(ledger, [*rows, 10_000], "v1", pos(1))
    assert ledger.count() == 0 and ledger.history_rows()["manifests"] == []


def test_record_version_inside_a_batch_commits_with_it(ledger: LedgerBackend) -> None:
    with ledger.batch():
        rows = publish_rows(ledger)
        record(ledger, rows, "v1", pos(1))
    assert [r.artifact_version for r in ledger.rows()] == ["v1", "v1"]
    assert ledger.history_mark(ART, "prod") == pos(1)


@pytest.mark.parametrize(
    "kw",
    [
        {"rows": "12"},
        {"rows": [True]},
        {"artifact_version": "7"},
        {"aliases": "prod"},
        {"marks": "prod"},
        {"position": None},
        {"manifest_digest": "xyz"},
        {"history_key": None},  # a manifest and a position without the history they belong to
    ],
)
def test_record_version_checks_everything_before_writing(
    ledger: LedgerBackend, kw: dict[str, Any]
) -> None:
    rows = publish_rows(ledger)
    args: dict[str, Any] = {
        "rows": rows, "artifact_version": "v1", "aliases": ("prod",), "history_key": ART,
        "manifest_digest": pos(1).digest, "position": pos(1), "marks": ("prod",), **kw,
    }
    before = state(ledger)
    with pytest.raises(KeyStoreError):
        ledger.record_version(args.pop("rows"), **args)
    assert state(ledger) == before


def test_record_version_without_history_attaches_only(ledger: LedgerBackend) -> None:
    rows = publish_rows(ledger)
    ledger.record_version(rows, artifact_version="v2", aliases=("latest",))
    assert ledger.aliases("model") == {"latest": 2}
    assert ledger.history_rows()["manifests"] == [] and ledger.history_marks(ART) == {}


def test_allocate_next_counts_the_newest_seen_manifest(ledger: LedgerBackend) -> None:
    assert ledger.allocate_next(ART, floor=0) == (1, None)
    assert ledger.allocate_next(ART, floor=5)[0] == 6  # the writer's floor (store head)
    ledger.record_manifest(ART, digest("seen"), pos(9, "p9"), version="v9", source="reader")
    sequence, seen = ledger.allocate_next(ART, floor=2)
    assert sequence == 10 and seen is not None and seen.digest == digest("seen")
    assert seen.position == pos(9, "p9") and seen.version == "v9"
    assert ledger.allocate_next(ART, floor=0)[0] == 11  # never reused, never below the last
    assert ledger.allocate_sequence(ART, floor=0) == 12  # the same counter as the fine call
    for floor in (-1, True, "3"):
        with pytest.raises(KeyStoreError):
            ledger.allocate_next(ART, floor=floor)  # type: ignore[arg-type]


def test_postgres_connections_keep_generic_plans(pg_url: str) -> None:
    """Every ledger connection (the pool's and the history-lock sessions) plans a prepared
    statement once: a publish's record_version was re-planned at every execution otherwise."""
    from dagster_wandb_secure.core.ledger_postgres import PostgresLedger

    ledger = PostgresLedger(pg_url)
    try:
        assert ledger._read("ping") == [(1,)]
        with ledger._pooled() as conn:
            assert conn.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
        with ledger.history_lock(ART):
            conn = ledger._get_lock_pool().getconn()
            try:
                assert conn.execute("SHOW plan_cache_mode").fetchone() == ("force_generic_plan",)
            finally:
                ledger._get_lock_pool().putconn(conn)
    finally:
        ledger.close()


def test_record_version_of_no_rows_records_the_history(ledger: LedgerBackend) -> None:
    """``history.note_published``: the manifest and the marks alone (no signature row)."""
    ledger.record_version((), artifact_version="v4", history_key=ART,
                          manifest_digest=pos(4).digest, position=pos(4), marks=("prod",))
    assert ledger.history_marks(ART) == {"latest": pos(4), "prod": pos(4)}
    assert ledger.aliases("model") == {} and ledger.count() == 0
