"""A thread's connection to the local store index is closed when the thread ends.

Regression: every connection is registered so that dropping the store closes it at once
(core/sqlite_fork.py), and that registry kept the connection of every thread that ever used the
store: a long-lived store used from short-lived threads (a thread per request, a pool that
recycles its workers) held three descriptors per thread ended, until the store itself went."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from dagster_wandb_secure.stores.local import LocalArtifactStore

THREADS = 40


def _index_files(root: Path) -> int:
    found = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            found += os.readlink(f"/proc/self/fd/{fd}").startswith(str(root / "index.sqlite3"))
        except OSError:  # the descriptor listdir itself used
            pass
    return found


def test_an_ended_thread_leaves_no_connection_open(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("a")
    root = tmp_path / "s"
    store = LocalArtifactStore(root)
    store.publish(entity="e", project="p", name="n", type="dataset", files={"a.txt": src})
    seen: list[dict[str, int]] = []

    def threads(n: int) -> int:
        for _ in range(n):
            thread = threading.Thread(target=lambda: seen.append(store.aliases("e", "p", "n")))
            thread.start()
            thread.join()
        return _index_files(root)

    # SQLite may keep one closed descriptor of a file this process still locks, for reuse
    after_one = threads(1)
    assert threads(THREADS) == after_one  # each ended thread's connection was closed
    assert seen == [{"latest": 0}] * (1 + THREADS)
    assert len(store._index._conns.conns) == 1  # the main thread's only
    assert store.aliases("e", "p", "n") == {"latest": 0}  # the main thread's still works


def test_a_thread_still_running_keeps_its_connection(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("a")
    store = LocalArtifactStore(tmp_path / "s")
    store.publish(entity="e", project="p", name="n", type="dataset", files={"a.txt": src})
    go, done = threading.Event(), threading.Event()
    answers: list[dict[str, int]] = []

    def worker() -> None:
        answers.append(store.aliases("e", "p", "n"))
        go.wait(60)
        answers.append(store.aliases("e", "p", "n"))  # the same connection, still open
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    for _ in range(THREADS):  # other threads come and go meanwhile
        other = threading.Thread(target=lambda: store.aliases("e", "p", "n"))
        other.start()
        other.join()
    go.set()
    thread.join(60)
    assert done.is_set() and answers == [{"latest": 0}] * 2
