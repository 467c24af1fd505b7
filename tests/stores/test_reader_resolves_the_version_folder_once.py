"""A reader's ``files_on_disk`` resolves the version folder per version, not per file (session 5:
``list_files`` and then ``file_path`` for each file each resolved it: 1 + files full path
resolutions; then one for the listing and one for all the paths; session 6: one for both,
``list_files_with_paths``); every file is still opened by the descriptor walk."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_wandb_secure.artifacts.verification import files_on_disk
from dagster_wandb_secure.core.errors import UnsafePathError
from dagster_wandb_secure.stores import local_files
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.counting import count_calls


def _published(tmp_path: Path) -> tuple[LocalArtifactStore, object]:
    store = LocalArtifactStore(tmp_path / "s")
    files = {}
    for rel in ("output.pickle", "manifest.dws", "sub/extra.txt"):
        src = tmp_path / rel.replace("/", "_")
        src.write_bytes(rel.encode())
        files[rel] = src
    return store, store.publish(entity="e", project="p", name="m", type="t", files=files)


def test_files_on_disk_resolves_the_folder_per_version_and_opens_each_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, av = _published(tmp_path)
    resolves = count_calls(monkeypatch, LocalArtifactStore, "_version_dir")
    opens = count_calls(monkeypatch, local_files, "open_in_version")
    monkeypatch.setattr("dagster_wandb_secure.stores.local.open_in_version",
                        local_files.open_in_version)
    got = files_on_disk(store, av)  # type: ignore[arg-type]
    assert sorted(got) == ["manifest.dws", "output.pickle", "sub/extra.txt"]
    assert all(p.read_bytes() == rel.encode() for rel, p in got.items())
    assert len(resolves) == 1  # one for the listing and all three paths (was 1 + 3, then 2)
    assert len(opens) == 3  # each file still checked by the descriptor walk


def test_a_symlinked_file_is_still_refused(tmp_path: Path) -> None:
    store, av = _published(tmp_path)
    folder = store.file_path(av, "output.pickle").parent  # type: ignore[arg-type]
    (folder / "sub").chmod(0o755)
    target = folder / "sub" / "extra.txt"
    target.chmod(0o644)
    target.unlink()
    target.symlink_to(tmp_path / "output.pickle")
    with pytest.raises(UnsafePathError):
        files_on_disk(store, av)  # type: ignore[arg-type]
