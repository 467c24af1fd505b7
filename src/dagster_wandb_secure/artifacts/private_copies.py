"""Run-private, verified copies of artifact files, and their safe cleanup.

A file handed to user code (a ``get_path`` path, a W&B object's media, a whole-artifact view) is
never the store's or the download cache's file: it is copied, while being hashed, into a folder
only this process uses (mode 0700) and compared with the digest from the signed manifest. Anyone
able to write the cache cannot swap it after the check.

Layout::

    <base_dir>/dagster-wandb-secure-cache/
      <run8>-<pid>-<random>/        one folder per process (0700), holds verified copies
      <run8>-<pid>-<random>.lock    held (flock) by the owning process for its whole life

Cleanup (``cache_duration_in_minutes``) is safe with several processes: a folder is removed only
when its owner's lock can be taken (the owner has exited) and it was not used for that long.
With a duration of 0, a process also removes its own folder when it exits.
"""

from __future__ import annotations

import atexit
import contextlib
import hmac
import os
import secrets
import shutil
import stat
import threading
import time
from pathlib import Path

from filelock import FileLock, Timeout

from ..core.digests import get_digest
from ..core.errors import TamperedPayloadError, UnsafePathError
from ..core.fsutil import PRIVATE_DIR_MODE, open_no_follow, safe_relpath

CACHE_DIR_NAME = "dagster-wandb-secure-cache"
CHUNK = 1 << 20

_OWNED: dict[str, PrivateCopies] = {}
_OWNED_LOCK = threading.Lock()


def copy_verified(
    source: Path,
    target: Path,
    expected_sha256: str,
    *,
    artifact: str,
    key_id: str | None,
    version: str | None = None,
    digest_alg: str = "sha256",
) -> Path:
    """Copy ``source`` to ``target`` (0600) hashing the bytes copied (under ``digest_alg``, the
    manifest entry's algorithm); refuse on digest mismatch.

    The source is opened without following symlinks; ``target`` must not exist."""
    try:
        opened = open_no_follow(source)
    except OSError as exc:  # the store removed or replaced it after the manifest check
        raise TamperedPayloadError(
            f"signed file {target.name!r} could not be read after the manifest check "
            f"({exc.strerror or type(exc).__name__})",
            artifact=artifact,
            key_id=key_id,
            version=version,
        ) from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o600)
    except BaseException:
        opened.close()
        raise
    digest = get_digest(digest_alg).new()
    try:
        with opened as src, os.fdopen(fd, "wb") as dst:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                dst.write(chunk)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        raise
    if not hmac.compare_digest(digest.hexdigest(), expected_sha256):
        target.unlink()
        raise TamperedPayloadError(
            f"file {target.name!r} changed between the manifest check and the copy "
            f"(its {digest_alg} digest differs from the signed one)",
            artifact=artifact,
            key_id=key_id,
            version=version,
        )
    os.chmod(target, 0o400)
    return target


def check_private_root(folder: Path) -> None:
    """Refuse a cache root that is a symlink, not ours, or writable by group or others: whoever
    can write it can rename this process's folder away and put other files in its place."""

    st = folder.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(
            f"the private copy folder {folder} is a symlink or not a folder",
            hint=f"remove it (rm {folder}); it is re-created as a private folder",
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise UnsafePathError(
            f"the private copy folder {folder} belongs to user id {st.st_uid}, not to this "
            "process's user",
            hint=f"remove it or set base_dir to a folder of your own (rm -r {folder})",
        )
    if st.st_mode & 0o022:
        raise UnsafePathError(
            f"the private copy folder {folder} has mode {stat.S_IMODE(st.st_mode):o}, writable "
            "by group or others, so verified copies could be replaced after the check",
            hint=f"run: chmod 700 {folder}",
        )


class PrivateCopies:
    """This process's private folder of verified copies under one cache root."""

    def __init__(self, cache_root: Path, run_id: str | None, duration_minutes: int) -> None:
        self.cache_root = cache_root
        self.duration_minutes = duration_minutes
        cache_root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        check_private_root(cache_root)
        tag = (run_id or "norun")[:8]
        stem = f"{tag}-{os.getpid()}-{secrets.token_hex(4)}"
        self.folder = cache_root / stem
        self._lock = FileLock(str(cache_root / f"{stem}.lock"), mode=0o600)
        self._lock.acquire()
        self.folder.mkdir(mode=PRIVATE_DIR_MODE)
        self._counter = 0
        self._counter_lock = threading.Lock()

    @classmethod
    def for_process(
        cls, base_dir: Path, run_id: str | None, duration_minutes: int
    ) -> PrivateCopies:
        """One instance per (cache root, run) in this process, created on first use."""
        cache_root = base_dir / CACHE_DIR_NAME
        key = f"{cache_root.absolute()}|{run_id}|{os.getpid()}"
        with _OWNED_LOCK:
            found = _OWNED.get(key)
            if found is not None:
                check_private_root(cache_root)
            if found is None or not found.folder.is_dir():
                found = cls(cache_root, run_id, duration_minutes)
                _OWNED[key] = found
                if duration_minutes == 0:
                    atexit.register(found.remove_own)
            return found

    def new_version_dir(self, label: str) -> Path:
        """A fresh folder for the files of one read of one version."""
        with self._counter_lock:
            self._counter += 1
            n = self._counter
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:100]
        folder = self.folder / f"{n:05d}-{safe}"
        folder.mkdir(mode=PRIVATE_DIR_MODE)
        self.touch()
        return folder

    def target(self, version_dir: Path, relpath: str) -> Path:
        relpath = safe_relpath(relpath, what="artifact file name")
        return version_dir / relpath

    def touch(self) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.folder)

    def release(self) -> None:
        """The run that used this folder is over: drop its lock (the open file it holds), so a
        long-lived process does not keep one per run, and forget it. The copies stay for
        ``duration_minutes`` (other processes' ``cleanup`` removes them after that, as for a
        process that exited); with a duration of 0 they are removed now."""
        with _OWNED_LOCK:
            for key in [k for k, v in _OWNED.items() if v is self]:
                del _OWNED[key]
        if self.duration_minutes == 0:
            self.remove_own()
            return
        with contextlib.suppress(OSError):
            self._lock.release()

    def remove_own(self) -> None:
        with contextlib.suppress(OSError):
            _make_writable(self.folder)
            shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._lock.release()
            Path(self._lock.lock_file).unlink()

    def cleanup(self) -> int:
        """Remove other processes' folders unused for the configured duration; returns a count."""
        self.touch()
        horizon = time.time() - self.duration_minutes * 60
        removed = 0
        try:
            candidates = list(self.cache_root.iterdir())
        except OSError:
            return 0
        for path in candidates:
            if path == self.folder or path.suffix == ".lock" or not path.is_dir():
                continue
            if path.is_symlink():
                continue
            try:
                if path.stat().st_mtime > horizon:
                    continue
            except OSError:
                continue
            lock = FileLock(str(path) + ".lock", mode=0o600)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # its owner is alive
            try:
                _make_writable(path)
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
            finally:
                lock.release()
                with contextlib.suppress(OSError):
                    Path(str(path) + ".lock").unlink()
        return removed


def _make_writable(folder: Path) -> None:
    for root, dirs, _files in os.walk(folder):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, d), PRIVATE_DIR_MODE)
        with contextlib.suppress(OSError):
            os.chmod(root, PRIVATE_DIR_MODE)


__all__ = ["CACHE_DIR_NAME", "PrivateCopies", "check_private_root", "copy_verified"]
