"""The local store's SQLite index survives ``fork()``: a forked child never closes a connection
it inherited (core/sqlite_fork.py). Regression: with a dropped store still holding its
connection (CPython frees sqlite3 connections only in a garbage collection), forked publishers
that collected garbage closed it and the index lost every row they committed."""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagster_wandb_secure.core import sqlite_fork
from dagster_wandb_secure.stores.local import LocalArtifactStore

E, P = "ent", "proj"
WORKERS, EACH = 4, 8
_INHERITED: list[LocalArtifactStore] = []  # a store the parent hands its forked children


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[Path, Path, list[LocalArtifactStore]]]:
    """(store root, source folder, [a store holding one version]: the list is its only
    reference); garbage is collected only where a test says so (in the children)."""
    gc.collect()
    gc.disable()
    root, src = tmp_path / "s", tmp_path / "src"
    src.mkdir()
    box = [LocalArtifactStore(root)]
    _publish(box[0], src, "parent")
    try:
        yield root, src, box
    finally:
        gc.enable()


def _publish(store: LocalArtifactStore, src: Path, tag: str) -> int:
    f = src / f"{tag}.txt"
    f.write_text(tag)
    return store.publish(
        entity=E, project=P, name="shared", type="dataset", files={"a.txt": f}, run_id=tag
    ).version


def _child(root: str, src: str, worker: int, out: multiprocessing.Queue) -> None:
    _INHERITED.clear()  # drop what the parent handed over
    store = LocalArtifactStore(root)
    for i in range(EACH):
        _publish(store, Path(src), f"w{worker}-{i}")
        if i == worker:  # collect the garbage inherited from the parent, while others publish
            gc.collect()
    out.put(len(sqlite_fork.PINNED))


def _run_children(root: Path, src: Path) -> list[int]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(str(root), str(src), w, out)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    pinned = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    return pinned


def _open_files() -> set[str]:
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor listdir itself used
            pass
    return found


def _versions(root: Path) -> list[int]:
    return [v.version for v in LocalArtifactStore(root).list_versions(name="shared")]


def test_a_dropped_store_closes_its_connection_before_a_fork(
    started: tuple[Path, Path, list[LocalArtifactStore]],
) -> None:
    root, src, box = started
    box.clear()  # the store's last reference; no garbage collection runs here from now on
    open_now = _open_files()
    _run_children(root, src)
    assert _versions(root) == list(range(1 + WORKERS * EACH))
    assert str(root / "index.sqlite3") not in open_now  # closed at once, not at a collection


def test_a_live_store_in_the_parent_is_pinned_not_closed_in_children(
    started: tuple[Path, Path, list[LocalArtifactStore]],
) -> None:
    root, src, (kept,) = started
    _INHERITED.append(kept)
    try:
        pinned = _run_children(root, src)
    finally:
        _INHERITED.clear()
    assert _publish(kept, src, "parent-after") == 1 + WORKERS * EACH  # the parent's still works
    assert _versions(root) == list(range(2 + WORKERS * EACH))
    assert all(n >= 1 for n in pinned)  # each child pinned the parent's connection
    kept.close()
