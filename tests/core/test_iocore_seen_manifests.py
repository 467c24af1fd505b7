"""``seen_manifests``: the ledger's records of many manifest digests in one lookup (issue 16,
small assets: a writer's ``store_head`` looked every store version's manifest up with one read
each, so a publish's ledger reads grew with the artifact's versions). The same answers as
``seen_manifest`` one by one, on both backends and the layered ledger."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dagster_wandb_secure.core.history import Position, SeenManifest
from dagster_wandb_secure.core.ledger import Ledger
from dagster_wandb_secure.core.ledger_api import LedgerBackend
from dagster_wandb_secure.core.ledger_layered import LayeredLedger

ART = "team/proj/many"


def _d(tag: object) -> str:
    return hashlib.sha256(str(tag).encode()).hexdigest()


def _pos(n: int) -> Position:
    return Position(n, f"2024-05-01T12:00:{n % 60:02d}.000000Z", _d(f"p{n}"))


@pytest.fixture
def ledger(any_ledger: LedgerBackend) -> LedgerBackend:
    return any_ledger  # each backend in turn (kit/postgres.py)


def _fill(ledger: LedgerBackend, count: int) -> None:
    with ledger.batch():
        for n in range(count):
            position = None if n % 7 == 3 else _pos(n + 1)  # some format-1 manifests
            ledger.record_manifest(ART, _d(n), position, version=f"v{n}", source="writer")
        ledger.record_manifest("team/proj/other", _d("x"), _pos(1), version="v0", source="reader")


def test_many_digests_answer_as_one_by_one(ledger: LedgerBackend) -> None:
    _fill(ledger, 1203)  # more than two SQLite chunks
    asked = [_d(n) for n in range(0, 1300, 3)] + [_d("x"), _d(5), "z" * 64]
    got = ledger.seen_manifests(ART, asked)
    one_by_one = {d: ledger.seen_manifest(ART, d) for d in set(asked)}
    assert got == {d: s for d, s in one_by_one.items() if s is not None}
    assert len(got) == len(range(0, 1203, 3)) + 1  # and _d(5)
    assert got[_d(3)] == SeenManifest(_d(3), None, "v3")
    assert ledger.seen_manifests(ART, []) == {}


def test_the_layered_ledger_prefers_the_shared_record(tmp_path: Path) -> None:
    shared, local = Ledger(tmp_path / "shared.sqlite3"), Ledger(tmp_path / "local.sqlite3")
    shared.record_manifest(ART, _d(1), _pos(1), version="v1", source="writer")
    local.record_manifest(ART, _d(1), _pos(1), version="v9", source="reader")
    local.record_manifest(ART, _d(2), _pos(2), version="v2", source="reader")
    layered = LayeredLedger(shared, local)
    asked = [_d(1), _d(2), _d(3)]
    got = layered.seen_manifests(ART, asked)
    assert got == {d: layered.seen_manifest(ART, d) for d in asked[:2]}
    assert got[_d(1)].version == "v1"
