"""Red team of ``core.fsutil.InterProcessLock`` (one ``O_NOFOLLOW`` open + ``flock`` per
acquire, re-entrant per thread; session 5, merge e211ba8).

- The store's ``publish.lock`` lives in the store folder, which is attacker-controlled: a
  symlink or a folder planted at its name, or a file system without ``flock`` (some NFS/FUSE
  mounts: ``ENOLCK``), must give a typed ``StoreError`` naming the lock, never a raw OSError
  traceback, also when it is met on opening the store (a ``pending`` row makes the store take
  its lock at once).
- A ``fork`` child shares the parent's open file description: a child that unwinds a ``with``
  block it inherited must not ``LOCK_UN`` it (that releases the parent's lock for everyone),
  and a child that takes the lock itself inside an inherited block must not lose the
  inherited frame.
- Timeouts are ``filelock.Timeout`` (a ``TimeoutError``); an interrupt while waiting leaks no
  descriptor and leaves the lock free; a lock file replaced while we waited is opened again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import filelock
import pytest

from dagster_wandb_secure.core import fsutil
from dagster_wandb_secure.core.fsutil import InterProcessLock
from dagster_wandb_secure.stores.base import StoreError
from dagster_wandb_secure.stores.local import LocalArtifactStore


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _store_with_a_pending_row(root: Path) -> None:
    store = LocalArtifactStore(root)
    src = root.parent / "x.bin"
    src.write_bytes(b"1")
    store.publish(entity="e", project="p", name="m", type="t", files={"x.bin": src})
    conn = sqlite3.connect(store.index_path)
    conn.execute(
        "INSERT INTO pending (entity, project, name, number, started_at) "
        "VALUES ('e', 'p', 'm', 7, '2026-01-01T00:00:00')"
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("planted", ["symlink", "folder"])
def test_a_planted_lock_name_is_a_typed_error_on_open_and_on_publish(
    tmp_path: Path, planted: str
) -> None:
    root = tmp_path / "s"
    _store_with_a_pending_row(root)
    victim = tmp_path / "victim"
    (root / "publish.lock").unlink()
    if planted == "symlink":
        (root / "publish.lock").symlink_to(victim)
    else:
        (root / "publish.lock").mkdir()
    with pytest.raises(StoreError, match="publish.lock"):
        LocalArtifactStore(root)  # the pending row: the store takes its lock on opening
    assert not victim.exists()


def test_a_file_system_without_flock_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "s"
    _store_with_a_pending_row(root)
    real = fcntl.flock

    def flock(fd: int, op: int) -> None:
        if op & fcntl.LOCK_EX:
            raise OSError(errno.ENOLCK, "No locks available")
        real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    before = _fds()
    with pytest.raises(StoreError, match="No locks available"):
        LocalArtifactStore(root)
    assert _fds() == before  # the lock file's descriptor was closed


def test_a_fork_child_unwinding_an_inherited_block_keeps_the_parents_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.lock"
    lock = InterProcessLock(path, timeout=0)
    with lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                lock.__exit__(None, None, None)  # what unwinding the inherited block does
            except BaseException:  # noqa: BLE001
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        # still ours: another open description cannot take it
        with pytest.raises(filelock.Timeout):
            with InterProcessLock(path, timeout=0):
                pass
    with InterProcessLock(path, timeout=0):  # released by our own exit
        pass


def test_a_fork_child_taking_the_lock_inside_an_inherited_block(tmp_path: Path) -> None:
    """The child waits for the parent's lock like any process, and its own acquire and
    release leave the inherited frame in place (its unwinding neither fails nor unlocks)."""
    path = tmp_path / "b.lock"
    lock = InterProcessLock(path, timeout=0)
    read_fd, write_fd = os.pipe()
    with lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                try:
                    with lock:  # the parent holds it: not re-entrant across processes
                        code = 4
                except filelock.Timeout:
                    pass
                os.write(write_fd, b"1")
                lock.timeout = 30
                with lock:  # once the parent let go
                    pass
                lock.__exit__(None, None, None)  # unwinding the inherited block
            except BaseException:  # noqa: BLE001
                code = code or 3
            os._exit(code)
        assert os.read(read_fd, 1) == b"1"
    _, status = os.waitpid(pid, 0)
    os.close(read_fd)
    os.close(write_fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    with InterProcessLock(path, timeout=0):
        pass


@contextlib.contextmanager
def _held_by_another_thread(path: Path) -> Iterator[None]:
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with InterProcessLock(path):
            held.set()
            done.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(30)
    try:
        yield
    finally:
        done.set()
        t.join(30)


def test_a_timeout_is_filelock_timeout_after_one_try_with_timeout_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.lock"
    with _held_by_another_thread(path):
        opens = []
        real_open = os.open
        monkeypatch.setattr(os, "open", lambda *a, **k: opens.append(a[0]) or real_open(*a, **k))
        with pytest.raises(filelock.Timeout) as info:
            with InterProcessLock(path, timeout=0):
                pass
        assert isinstance(info.value, TimeoutError)
        assert opens == [path]


def test_an_interrupt_while_waiting_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.lock"
    lock = InterProcessLock(path, timeout=30)
    with _held_by_another_thread(path):
        def sleep(_s: float) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(fsutil.time, "sleep", sleep)
        before = _fds()
        with pytest.raises(KeyboardInterrupt):
            lock.__enter__()
        assert _fds() == before
    monkeypatch.undo()
    with InterProcessLock(path, timeout=0):  # nobody holds it
        pass
    with lock:  # the interrupted object is usable again
        pass


def test_a_lock_file_replaced_while_waiting_is_opened_again(tmp_path: Path) -> None:
    """The holder's file is unlinked (and so released on a dead inode) while we wait: we get
    the file now at the name, never a lock on the dead inode."""
    path = tmp_path / "e.lock"
    holder = InterProcessLock(path)
    holder.__enter__()
    got = threading.Event()
    waiter = InterProcessLock(path, timeout=30)
    same: list[bool] = []

    def wait() -> None:
        with waiter:
            got.set()
            st = os.stat(path, follow_symlinks=False)
            probe = os.open(path, os.O_RDONLY)
            try:  # the file at the name is the one we hold: another description cannot lock it
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                same.append(os.path.samestat(st, os.fstat(probe)))
            finally:
                os.close(probe)

    t = threading.Thread(target=wait)
    t.start()
    assert not got.wait(0.05)
    os.unlink(path)
    holder.__exit__(None, None, None)
    t.join(30)
    assert got.is_set() and same == [True]


def test_sigkill_of_a_holder_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "f.lock"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        with InterProcessLock(path):
            os.write(write_fd, b"1")
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    assert os.read(read_fd, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(read_fd)
    os.close(write_fd)
    with InterProcessLock(path, timeout=0):
        pass
