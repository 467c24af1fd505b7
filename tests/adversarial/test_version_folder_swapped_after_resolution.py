"""Readers resolve a version's folder once per version (``LocalArtifactStore.file_paths``,
``files_on_disk``; session 5, merge e211ba8). The folder swapped for a symlink (to a copy of
the version outside the store) after that resolution, between two of its files: every file is
still opened ``O_NOFOLLOW`` from the folder itself, so the swap is an ``UnsafePathError``, not a
read outside the store. (A folder *above* the version folder swapped after the resolution is
the race SECURITY.md names as remaining: readers verify every byte they load.)"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.artifacts.verification import files_on_disk
from dagster_wandb_secure.core.errors import UnsafePathError
from dagster_wandb_secure.stores import local as local_module
from dagster_wandb_secure.stores.local import LocalArtifactStore


def test_a_version_folder_swapped_between_two_files_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for rel in ("a.bin", "b.bin"):
        (src / rel).write_bytes(rel.encode())
    store = LocalArtifactStore(tmp_path / "s")
    av = store.publish_dir(src, entity="e", project="p", name="m", type="t")
    folder = tmp_path / "s" / "artifacts" / "e" / "p" / "m" / "v0"
    outside = tmp_path / "outside-copy"
    shutil.copytree(folder, outside)
    real = local_module.open_in_version
    opened: list[str] = []

    def open_then_swap(root: Path, rel: str, where: str) -> Any:
        got = real(root, rel, where)
        opened.append(rel)
        if len(opened) == 1:  # after the first file: the folder becomes a symlink outside
            shutil.rmtree(folder)
            folder.symlink_to(outside, target_is_directory=True)
        return got

    monkeypatch.setattr(local_module, "open_in_version", open_then_swap)
    with pytest.raises(UnsafePathError, match="symlink"):
        files_on_disk(store, av)
    assert opened == ["a.bin"]  # the second open was refused, not read through the symlink
