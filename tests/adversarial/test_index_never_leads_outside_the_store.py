"""Guarantee: no row of the local store's index makes the store touch a path outside its folder.

The attacker can write the store folder, so they can plant rows in ``index.sqlite3``. Recovery of
an interrupted publish used to build a folder path from a ``pending`` row unchecked and move the
folder it named into ``staging/`` and delete it: every process opening the store (reader, writer,
CLI) would then delete a folder outside the store, e.g. the reader's key store and ledger. Now
every component is validated (names by the publishing rules, the number as an integer), the
resolved path must lie inside ``artifacts/`` (no symlink escapes), and a bad row is a StoreError
naming it, with nothing outside the store touched.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from dagster_wandb_secure.core.errors import UnsafePathError
from dagster_wandb_secure.stores.base import ArtifactVersion, StoreError
from dagster_wandb_secure.stores.local import LocalArtifactStore
from dagster_wandb_secure.stores.wandb_cache import DownloadCache


def _victim(folder: Path) -> Path:
    """A folder outside the store that a reader cares about (think: its key store's ledger)."""
    folder.mkdir(parents=True)
    (folder / "ledger.sqlite3").write_bytes(b"rollback history")
    return folder


def _plant_pending(store_dir: Path, entity: object, project: object, name: object,
                   number: object) -> None:
    with sqlite3.connect(store_dir / "index.sqlite3") as conn:
        conn.execute(
            "INSERT INTO pending (entity, project, name, number, started_at) "
            "VALUES (?, ?, ?, ?, '2026-01-01T00:00:00+00:00')",
            (entity, project, name, number),
        )
    conn.close()


def _assert_untouched(victim: Path) -> None:
    assert (victim / "ledger.sqlite3").read_bytes() == b"rollback history"


@pytest.mark.parametrize(
    ("entity", "project", "name", "number"),
    [
        ("..", "..", "victim", 0),  # artifacts/../../victim/v0 == <tmp>/victim/v0
        ("team", "proj", "../../../../victim", 0),
        ("team", "proj", "m", "0/../../../../../victim/v0"),  # a number stored as text
        ("team", "proj", "m", 1.5),
        ("team", "proj", "m", -1),
        ("/", "proj", "m", 0),
    ],
)
def test_a_planted_pending_row_never_moves_a_folder_outside_the_store(
    tmp_path: Path, entity: object, project: object, name: object, number: object
) -> None:
    store_dir = tmp_path / "store"
    LocalArtifactStore(store_dir)
    victim = _victim(tmp_path / "victim" / "v0")
    _plant_pending(store_dir, entity, project, name, number)
    for _ in range(2):  # a reader, then a writer: every process that opens the store
        with pytest.raises(StoreError, match=r"pending row id=1 .*no folder was moved"):
            LocalArtifactStore(store_dir)
    _assert_untouched(victim)


def test_a_symlink_in_the_store_does_not_let_a_valid_pending_row_escape(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    LocalArtifactStore(store_dir)
    outside = tmp_path / "outside"
    victim = _victim(outside / "proj" / "m" / "v0")
    os.symlink(outside, store_dir / "artifacts" / "team")  # artifacts/team -> outside
    _plant_pending(store_dir, "team", "proj", "m", 0)  # every name valid
    with pytest.raises(StoreError, match=r"pending row id=1 .*outside the store folder"):
        LocalArtifactStore(store_dir)
    _assert_untouched(victim)


def test_a_symlinked_artifact_folder_is_not_read_through(tmp_path: Path) -> None:
    """Reading a version goes through the same check: ``artifacts/<entity>`` pointing elsewhere
    is refused before any file is opened, not only the version folder itself."""
    store = LocalArtifactStore(tmp_path / "store")
    src = tmp_path / "f"
    src.write_bytes(b"ours")
    av = store.publish(entity="team", project="proj", name="m", type="model", files={"f": src})
    outside = tmp_path / "outside"
    (outside / "proj" / "m" / "v0").mkdir(parents=True)
    (outside / "proj" / "m" / "v0" / "f").write_bytes(b"theirs")
    os.rename(tmp_path / "store" / "artifacts" / "team", tmp_path / "moved")
    os.symlink(outside, tmp_path / "store" / "artifacts" / "team")
    with pytest.raises(UnsafePathError, match="outside the store folder"):
        store.open_file(av, "f")
    with pytest.raises(UnsafePathError, match="outside the store folder"):
        store.list_files(av)


def test_the_wandb_cache_builds_paths_from_validated_names_only(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path / "cache")
    for bad in (("..", "proj", "m"), ("team", "proj", "../../x"), ("team", "", "m")):
        with pytest.raises(Exception) as info:
            cache.name_dir(*bad)
        assert type(info.value).__name__ == "ConfigurationError"
    (tmp_path / "cache").mkdir()
    os.symlink(tmp_path, tmp_path / "cache" / "team")
    with pytest.raises(UnsafePathError, match="outside the store folder"):
        cache.name_dir("team", "proj", "m")
    from datetime import UTC, datetime

    av = ArtifactVersion(
        entity="e", project="p", name="m", version="0/../../../x",  # type: ignore[arg-type]
        type="t", description=None, metadata={}, aliases=(), files={},
        created_at=datetime.now(UTC), created_by_run=None,
        root=tmp_path / "cache" / "e" / "p" / "m" / "v0/../../../x", extra={},
    )
    with pytest.raises(StoreError, match="invalid version number"):
        cache.file_path(av, "f")
