"""A reader's rollback marks are keyed by the artifact it asked for, never by a name the store's
index returns: a hostile index (here a NOCASE-collated ``artifacts`` table) that answers a read
of ``victim`` with a row named ``VICTIM`` must not move the read onto a history with no marks."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize
from kit.adversarial import store_iom  # the ``root`` fixture: tests/adversarial/conftest.py
from kit.dagster_runs import failure_text


def _write(root: Path, store: str, value: Any) -> None:
    @asset(name="victim", io_manager_key="m")
    def producer() -> Any:
        return value

    assert materialize([producer], resources={"m": store_iom(root, store)}).success


def _read(root: Path, store: str) -> tuple[bool, Any, str]:
    seen: dict[str, Any] = {}

    @asset(ins={"up": AssetIn(key=AssetKey("victim"), input_manager_key="m")})
    def reader(up: Any) -> None:
        seen["value"] = up

    result = materialize([SourceAsset(key=AssetKey("victim"), io_manager_key="m"), reader],
                         resources={"m": store_iom(root, store)}, selection=[reader],
                         raise_on_error=False)
    text = failure_text(result) if not result.success else ""
    return result.success, seen.get("value"), text


def _index(store_dir: Path) -> Path:
    found = [p for p in store_dir.rglob("*.sqlite*") if p.suffix in (".sqlite", ".sqlite3")]
    found += list(store_dir.rglob("*.db"))
    assert found, sorted(store_dir.rglob("*"))
    return found[0]


def _rename_under_nocase(store_dir: Path) -> None:
    """The registry writer rebuilds the index's artifacts table with NOCASE names, renames the
    row to VICTIM and puts v0's signed files (signed for 'victim') in as VICTIM's v1."""
    db = _index(store_dir)
    conn = sqlite3.connect(db)
    sql = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type='table' AND name='artifacts'"
    ).fetchone()[0]
    conn.executescript(
        "PRAGMA foreign_keys=OFF; ALTER TABLE artifacts RENAME TO old_artifacts;"
        + sql.replace("name TEXT NOT NULL", "name TEXT NOT NULL COLLATE NOCASE", 1)
        + "; INSERT INTO artifacts SELECT * FROM old_artifacts; DROP TABLE old_artifacts;"
        "UPDATE artifacts SET name='VICTIM' WHERE name='victim';"
    )
    conn.commit()
    conn.close()
    folders = [p for p in store_dir.rglob("victim") if p.is_dir() and (p / "v0").is_dir()]
    assert folders, sorted(store_dir.rglob("*"))
    src = folders[0]
    dst = src.parent / "VICTIM"
    shutil.copytree(src / "v0", dst / "v1")
    shutil.copytree(src / "v0", dst / "v0")


@pytest.mark.parametrize("store", ["local", "wandb"])
def test_a_renamed_index_row_never_escapes_the_readers_marks(root: Path, store: str) -> None:
    _write(root, store, 1)
    _write(root, store, 2)
    assert _read(root, store)[:2] == (True, 2)
    _rename_under_nocase(root / "store")
    ok, value, text = _read(root, store)
    assert value is None and not ok, "user code received rolled-back content"
    assert "VersionRowError" in text and "VICTIM" in text, text
