"""A publish by move fsyncs its large staged files (``EARLY_FSYNC_BYTES`` or more) once they
are checked, before the store lock is taken (issue 16: a 64 MiB publish held the lock for the
41-58 ms of its payload's writeback); small files, the folders, the folder renamed into and the
ledger barrier stay in the one flush round after the rename, before the index commit."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagster_wandb_secure.stores import local_staging
from dagster_wandb_secure.stores.base import ArtifactNotFoundError, StagedDigest, StoreError
from dagster_wandb_secure.stores.local import LocalArtifactStore

BIG = getattr(local_staging, "EARLY_FSYNC_BYTES", 1 << 20)  # 1 MiB


def _publish(store: LocalArtifactStore, sizes: dict[str, int], barrier: object = None) -> object:
    with store.staging_area() as area:
        files = {}
        for rel, size in sizes.items():
            (area.path / rel).write_bytes(b"x" * size)
            files[rel] = area.path / rel
        return store.publish(
            entity="e", project="p", name="m", type="t", files=files, staged=area,
            digests={r: StagedDigest(sizes[r], "blake3", "ab" * 32) for r in files},
            barrier=barrier,  # type: ignore[arg-type]
        )


def _record_fsyncs(
    monkeypatch: pytest.MonkeyPatch, fail_large: bool = False
) -> list[tuple[str, bool]]:
    """Every ``os.fsync`` as (what: "large" / "small" file or "folder", under the store lock)."""
    held = [False]
    seen: list[tuple[str, bool]] = []
    real_fsync, real_locked = os.fsync, LocalArtifactStore._locked

    @contextlib.contextmanager
    def locked(self: LocalArtifactStore) -> Iterator[None]:
        with real_locked(self):
            held[0] = True
            try:
                yield
            finally:
                held[0] = False

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        what = "folder" if stat.S_ISDIR(st.st_mode) else "large" if st.st_size >= BIG else "small"
        seen.append((what, held[0]))
        if fail_large and what == "large":
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(LocalArtifactStore, "_locked", locked)
    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_a_large_payload_is_flushed_before_the_lock_the_rest_in_one_round_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    _publish(store, {"output.pickle": 10, "manifest.dws": 10})  # the artifact's folders exist
    barrier_held: list[bool] = []
    seen = _record_fsyncs(monkeypatch)
    av = _publish(
        store,
        {"output.pickle": BIG + 1, "manifest.dws": 10},
        barrier=lambda: barrier_held.append(True),
    )
    assert seen[0] == ("large", False)  # the payload's writeback: outside the store lock
    # then, under the lock after the rename: the manifest, the version folder, the folder
    # renamed into (and the barrier), one round, as before
    assert sorted(seen[1:]) == [("folder", True), ("folder", True), ("small", True)]
    assert barrier_held == [True]
    assert av.version == 1  # type: ignore[attr-defined]
    assert store.resolve("e", "p", "m").version == 1


def test_small_files_are_all_flushed_in_the_round_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the threshold nothing changes: no flush round of their own for small files."""
    store = LocalArtifactStore(tmp_path / "s")
    _publish(store, {"output.pickle": 10, "manifest.dws": 10})
    seen = _record_fsyncs(monkeypatch)
    _publish(store, {"output.pickle": BIG - 1, "manifest.dws": 10})
    assert sorted(seen) == [("folder", True), ("folder", True), ("small", True), ("small", True)]


def test_a_failed_early_flush_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    seen = _record_fsyncs(monkeypatch, fail_large=True)
    with pytest.raises(StoreError, match="Input/output error"):
        _publish(store, {"output.pickle": BIG, "manifest.dws": 10})
    assert seen == [("large", False)]  # failed before the lock, the rename, any other flush
    with pytest.raises(ArtifactNotFoundError):
        store.resolve("e", "p", "m")
    assert not (tmp_path / "s" / "artifacts" / "e" / "p" / "m" / "v0").exists()
    assert list((tmp_path / "s" / "staging").iterdir()) == []
