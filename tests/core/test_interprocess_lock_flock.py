"""``InterProcessLock`` is one ``flock`` on one descriptor per acquire (session 5: it was
``filelock.FileLock``, ~60-190 us per acquire and release with its directory creation, path
checks and polling; a publish takes two), with the same guarantees: exclusive across threads
and processes, re-entrant per thread, ``filelock.Timeout`` after ``timeout``, and a planted
symlink at the lock's name refused rather than followed."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import filelock
import pytest

from dagster_wandb_secure.core.fsutil import InterProcessLock
from kit.counting import count_calls


def test_one_acquire_is_one_open_and_one_flock_and_no_filelock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = InterProcessLock(tmp_path / "a.lock", timeout=5)
    with lock:
        pass  # the file exists from now on: the steady state
    opens = count_calls(monkeypatch, os, "open", lambda p, *a, **k: str(p).endswith("a.lock"))
    flocks = count_calls(monkeypatch, fcntl, "flock")
    mkdirs = count_calls(monkeypatch, Path, "mkdir")
    filelocks = count_calls(monkeypatch, filelock.FileLock, "acquire")
    for _ in range(3):
        with lock, lock:  # re-entrant: the inner one costs nothing
            pass
    assert len(opens) == 3
    assert [c[0][1] for c in flocks] == [fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_UN] * 3
    assert mkdirs == [] and filelocks == []


def test_threads_exclude_each_other_and_time_out(tmp_path: Path) -> None:
    path = tmp_path / "b.lock"
    holder = InterProcessLock(path)
    shared = InterProcessLock(path, timeout=0)
    got: list[str] = []
    with holder:
        def other() -> None:
            try:
                with shared:
                    got.append("acquired")
            except filelock.Timeout:
                got.append("timeout")

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert got == ["timeout"]
        with pytest.raises(TimeoutError):  # the same instance on another thread waits too
            th_err: list[BaseException] = []

            def same() -> None:
                try:
                    with holder.__class__(path, timeout=0.05):
                        pass
                except BaseException as exc:  # noqa: BLE001
                    th_err.append(exc)

            t2 = threading.Thread(target=same)
            t2.start()
            t2.join()
            raise th_err[0]
    with shared:
        got.append("after")
    assert got == ["timeout", "after"]


def test_another_process_holding_it_makes_us_wait_then_time_out(tmp_path: Path) -> None:
    path = tmp_path / "c.lock"
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            with InterProcessLock(path):
                os.write(ready_w, b"1")
                os.read(go_r, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        with pytest.raises(filelock.Timeout):
            with InterProcessLock(path, timeout=0.05):
                pass
    finally:
        os.write(go_w, b"1")
        os.waitpid(pid, 0)
    with InterProcessLock(path, timeout=5):
        pass


def test_a_symlink_at_the_lock_name_is_refused_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    (tmp_path / "d.lock").symlink_to(victim)
    with pytest.raises(OSError):
        with InterProcessLock(tmp_path / "d.lock", timeout=0):
            pass
    assert not victim.exists()


def test_a_missing_folder_is_made(tmp_path: Path) -> None:
    with InterProcessLock(tmp_path / "new" / "e.lock", timeout=0):
        assert (tmp_path / "new" / "e.lock").is_file()
