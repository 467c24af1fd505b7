"""Grouped signature rows are queued and inserted at the group's commit (ledger_groups.py), so a
row must be storable when it is queued: a value SQLite cannot take (an int beyond its 64-bit
range, a string that is not valid Unicode) is refused to ITS caller, typed, and the rows other
callers queued in the same group are not lost with it. Before, the bad row was handed an id; the
group's executemany then failed, rolled every queued row back and broke the ledger. And when a
queued insert fails anyway (the disk), the error says which rows, key ids and artifacts it lost."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core import ledger_groups
from dagster_wandb_secure.core.errors import KeyStoreError
from dagster_wandb_secure.core.ledger import Ledger
from kit.ledger_rows import digest, entry

UNSTORABLE = {
    "length-2^63": {"length": 1 << 63},
    "key-id-surrogate": {"key_id": "k\ud800"},
    "serializer-surrogate": {"serializer": "pickle\udc00"},
    "signed-at-surrogate": {"signed_at": "2024\ud800"},
    "run-id-surrogate": {"run_id": "run-\ud800"},
    "context-value-surrogate": {"context": {"artifact": "model\udfff"}},
    "context-key-surrogate": {"context": {"artifact": "model", "\ud800": "x"}},
}


@pytest.mark.parametrize("bad", list(UNSTORABLE.values()), ids=list(UNSTORABLE))
def test_an_unstorable_row_is_refused_at_its_call_and_loses_no_other_row(
    tmp_path: Path, bad: dict[str, Any]
) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        good = ledger.record_signature(**entry(1))  # opens the group: queued, not inserted
        with pytest.raises(KeyStoreError):
            ledger.record_signature(**entry(2, **bad))
        after = ledger.record_signature(**entry(3))
        ledger.durable()  # not broken
        assert [r.digest for r in ledger.find_digest(digest(1))] == [digest(1)]
        assert {r.id for r in ledger.rows()} == {good, after}
    finally:
        ledger.close()


def test_record_many_refuses_an_unstorable_row_typed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        with pytest.raises(KeyStoreError):
            ledger.record_many([entry(1), entry(2, length=1 << 64)])
        assert ledger.rows() == []
    finally:
        ledger.close()


class _FailingInserts:
    """A connection whose executemany fails as a full disk would (everything else passes)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def executemany(self, *args: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args: Any) -> Any:  # the grouped rows' multi-row INSERT
        if sql.startswith("INSERT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_failed_queued_insert_names_the_rows_it_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the group stays open until durable(): on a loaded machine (CI failed so under load) the
    # 2 ms window or the flusher committed both rows before the failing connection was in place
    monkeypatch.setattr(ledger_groups, "GROUP_WINDOW_S", 60.0)
    monkeypatch.setattr(ledger_groups, "FLUSHER_DELAY_S", 60.0)
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    first = ledger.record_signature(**entry(1, artifact="model-a"))
    time.sleep(0.02)  # longer than the default window: the rows must still be queued
    last = ledger.record_signature(**entry(2, artifact="model-b", key_id="fedcba9876543210"))
    time.sleep(0.02)  # ... and the default flusher delay
    real = ledger._conn
    assert real is not None
    ledger._conn = _FailingInserts(real)  # type: ignore[assignment]
    try:
        with pytest.raises(KeyStoreError) as caught:
            ledger.durable()
        text = str(caught.value)
        assert f"ids {first}-{last}" in text
        for name in ("0123456789abcdef", "fedcba9876543210", "model-a", "model-b", "disk is full"):
            assert name in text
        assert "Traceback" not in text
        with pytest.raises(KeyStoreError):  # broken until close(): fail closed
            ledger.record_signature(**entry(3))
    finally:
        ledger._conn = real
        with pytest.raises(KeyStoreError):
            ledger.close()  # reports the loss once more, and closes
    reopened = Ledger(tmp_path / "ledger.sqlite3")
    try:
        assert reopened.rows() == []
        reopened.record_signature(**entry(4))
        reopened.durable()
    finally:
        reopened.close()
