"""A publish by move flushes its staged files, its folders, the folder it was renamed into and
the caller's barrier (the ledger's ``durable()``) at the same time, after the rename and before
the index commit that makes the version visible (issue 16, sessions 4 and 5): one round of
flushes instead of one after the other, and no separate round for the rename."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dagster_wandb_secure.stores.base import StagedDigest
from dagster_wandb_secure.stores.local import LocalArtifactStore
from dagster_wandb_secure.stores.local_fsync import fsync_together


def _publish_two_files(store: LocalArtifactStore, barrier: object = None) -> object:
    with store.staging_area() as area:
        files = {}
        for rel in ("output.pickle", "manifest.dws"):
            (area.path / rel).write_bytes(b"x" * 10)
            files[rel] = area.path / rel
        return store.publish(
            entity="e", project="p", name="m", type="t", files=files, staged=area,
            digests={r: StagedDigest(10, "blake3", "ab" * 32) for r in files},
            barrier=barrier,  # type: ignore[arg-type]
        )


def test_rename_then_files_folders_and_barrier_flushed_in_one_round_then_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Session 5: the rename comes first (nothing names the folder yet), then 2 files + the
    version folder + the folder renamed into + the barrier are flushed at the same time, and
    only then the index commit makes the version visible: two flush rounds, not three."""
    store = LocalArtifactStore(tmp_path / "s")
    _publish_two_files(store)  # the artifact's folders exist: the steady state
    events: list[str] = []
    # each of the five waits until all five are in flight: one after the other would break
    # the barrier (timeout) and fail the publish
    together = threading.Barrier(5, timeout=10)
    real_fsync, real_rename = os.fsync, os.rename
    real_rows = LocalArtifactStore._write_rows

    def fsync(fd: int) -> None:
        together.wait()
        events.append("fsync")
        real_fsync(fd)

    def barrier() -> None:
        together.wait()
        events.append("barrier")

    def rename(a: object, b: object) -> None:
        if "/artifacts/" in str(b):
            events.append("rename")
        real_rename(a, b)  # type: ignore[arg-type]

    def rows(self: LocalArtifactStore, conn: object, **kw: object) -> None:
        events.append("rows")
        real_rows(self, conn, **kw)  # type: ignore[arg-type]

    dir_syncs: list[object] = []
    monkeypatch.setattr("dagster_wandb_secure.stores.local.fsync_dir", dir_syncs.append)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(LocalArtifactStore, "_write_rows", rows)
    av = _publish_two_files(store, barrier)
    assert events[0] == "rename"
    assert sorted(events[1:6]) == ["barrier", "fsync", "fsync", "fsync", "fsync"]
    assert events[6:] == ["rows"]  # the index commit comes after every flush
    assert dir_syncs == []  # no separate round for the rename's folder
    assert sorted(av.files) == ["manifest.dws", "output.pickle"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("failing", ["fsync", "barrier"])
def test_a_failed_flush_after_the_rename_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """The folder is renamed before the flush round: when that round fails (an fsync or the
    ledger barrier), the publish fails, the folder is taken back out, and no version exists."""
    from dagster_wandb_secure.core.errors import KeyStoreError
    from dagster_wandb_secure.stores.base import ArtifactNotFoundError, StoreError

    store = LocalArtifactStore(tmp_path / "s")
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if failing == "fsync":
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    def barrier() -> None:
        if failing == "barrier":
            raise KeyStoreError("cannot make the ledger durable: Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    expected = StoreError if failing == "fsync" else KeyStoreError
    with pytest.raises(expected, match="Input/output error"):
        _publish_two_files(store, barrier)
    monkeypatch.setattr(os, "fsync", real_fsync)
    with pytest.raises(ArtifactNotFoundError):
        store.resolve("e", "p", "m")
    assert not (tmp_path / "s" / "artifacts" / "e" / "p" / "m" / "v0").exists()
    assert _publish_two_files(store).version == 0  # type: ignore[attr-defined]


def test_every_flush_finishes_and_the_first_error_is_raised(tmp_path: Path) -> None:
    done: list[int] = []

    def ok() -> None:
        done.append(1)

    def fails() -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        fsync_together([], (fails, ok, ok, ok, ok))
    assert len(done) == 4  # the others still ran to their end before the error surfaced
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fsync_together([fd])  # one job: the calling thread runs it
    finally:
        os.close(fd)


def test_the_first_extra_job_runs_on_the_calling_thread(tmp_path: Path) -> None:
    where: list[int] = []
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fsync_together([fd, fd], (lambda: where.append(threading.get_ident()),))
    finally:
        os.close(fd)
    assert where == [threading.get_ident()]  # the ledger's barrier keeps its thread (its lock)
