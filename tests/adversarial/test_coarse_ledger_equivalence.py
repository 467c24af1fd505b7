"""The coarse publish calls refuse alike on SQLite and PostgreSQL: the same error (type and
message) for the same input, typed (a ``KeyStoreError``, never ``OverflowError`` from the
sqlite3 module), and nothing written.

- ``record_version`` names the first row, in the order given, that it cannot record (SQLite
  attaches row by row; PostgreSQL's one statement named any missing row first);
- a row id, a position's sequence or a floor outside SQL's 64-bit integers is refused before
  anything is written (SQLite raised ``OverflowError`` while binding it, PostgreSQL a
  ``LedgerError`` from the server)."""

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
BIG = 1 << 63  # one above SQL's largest integer


def pos(sequence: int) -> Position:
    return Position(sequence, AT, digest(f"m{sequence}"))


def state(ledger: LedgerBackend) -> tuple[Any, ...]:
    return ([(r.id, r.artifact_version) for r in ledger.rows()], ledger.marks(),
            ledger.history_rows())


def refusal(ledger: LedgerBackend, call: Any) -> str:
    """The message of the typed error ``call`` raises; nothing was written."""
    before = state(ledger)
    with pytest.raises(KeyStoreError) as info:
        call()
    assert state(ledger) == before
    return str(info.value).split(". What to do")[0]


def refusals(tmp_path: Path, pg_url: str) -> dict[str, list[str]]:
    """Every case's message on each backend (the same ids on both: fresh ledgers)."""
    out: dict[str, list[str]] = {}
    for name, spec in (("sqlite", None), ("postgres", pg_url)):
        (tmp_path / name).mkdir()
        ledger = open_ledger(spec, tmp_path / name)
        try:
            rows = ledger.record_many([entry(1), entry(2)])
            nameless = ledger.record_many([entry(9, context={"type": "dataset"})])[0]
            missing = nameless + 100

            def version(ids: list[int], position: Position = pos(1), **kw: Any) -> Any:
                return lambda: ledger.record_version(
                    ids, artifact_version="v1", history_key=ART,
                    manifest_digest=position.digest, position=position, **kw,
                )

            cases = {
                "nameless then missing": version([nameless, missing], aliases=("prod",)),
                "missing then nameless": version([missing, nameless], aliases=("prod",)),
                "row id beyond 64 bits": version([*rows, BIG]),
                "row id below 64 bits": version([-BIG - 1]),
                "sequence beyond 64 bits": version(rows, Position(BIG, AT, digest("x"))),
                "floor with no sequence above it": lambda: ledger.allocate_next(
                    ART, floor=BIG - 1
                ),
                "floor beyond 64 bits": lambda: ledger.allocate_next(ART, floor=BIG),
            }
            for case, call in cases.items():
                out.setdefault(case, []).append(refusal(ledger, call))
        finally:
            ledger.close()
    return out


def test_the_coarse_calls_refuse_alike_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    found = refusals(tmp_path, pg_url)
    differ = {case: pair for case, pair in found.items() if pair[0] != pair[1]}
    assert differ == {}
    assert "no artifact name" in found["nameless then missing"][0]
    assert "no row" in found["missing then nameless"][0]


def test_the_last_sequence_is_allocated_once_then_refused_typed(
    tmp_path: Path, pg_url: str
) -> None:
    for name, spec in (("sqlite", None), ("postgres", pg_url)):
        (tmp_path / name).mkdir()
        ledger = open_ledger(spec, tmp_path / name)
        try:
            assert ledger.allocate_next(ART, floor=BIG - 2)[0] == BIG - 1  # the largest
            with pytest.raises(KeyStoreError, match="no signed sequence is left"):
                ledger.allocate_next(ART, floor=0)
            with pytest.raises(KeyStoreError, match="no signed sequence is left"):
                ledger.allocate_sequence(ART, floor=0)
            assert ledger.history_rows()["sequences"] == [(ART, BIG - 1)]
        finally:
            ledger.close()
