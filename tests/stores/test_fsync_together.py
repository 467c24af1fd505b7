"""A publish by move flushes its staged files, its folder and the caller's barrier (the
ledger's ``durable()``) at the same time, all before the rename (issue 16): one round of
flushes instead of one after the other, with the same durability."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dagster_wandb_secure.stores.base import StagedDigest
from dagster_wandb_secure.stores.local import LocalArtifactStore
from dagster_wandb_secure.stores.local_fsync import fsync_together


def test_staged_files_folder_and_barrier_are_flushed_together_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "s")
    events: list[str] = []
    # 2 files + the staging folder + the barrier: each waits until all four are in flight, so
    # flushing them one after the other breaks the barrier (timeout) and fails the publish
    together = threading.Barrier(4, timeout=10)
    armed = threading.Event()
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        if armed.is_set():
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

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    with store.staging_area() as area:
        files = {}
        for rel in ("output.pickle", "manifest.dws"):
            (area.path / rel).write_bytes(b"x" * 10)
            files[rel] = area.path / rel
        armed.set()
        real = LocalArtifactStore._check_staged

        def check(*a: object) -> object:
            try:
                return real(*a)  # type: ignore[arg-type]
            finally:
                armed.clear()

        monkeypatch.setattr(LocalArtifactStore, "_check_staged", staticmethod(check))
        av = store.publish(
            entity="e", project="p", name="m", type="t", files=files, staged=area,
            digests={r: StagedDigest(10, "blake3", "ab" * 32) for r in files}, barrier=barrier,
        )
    assert sorted(events[:4]) == ["barrier", "fsync", "fsync", "fsync"]
    assert events[4] == "rename"
    assert sorted(av.files) == ["manifest.dws", "output.pickle"]


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
