"""File-system primitives the security boundary relies on.

- ``atomic_write``: temp file in the same folder, fsync, rename, fsync of the folder. A crash leaves
  either the old file or the new one, never a torn one.
- ``InterProcessLock``: an exclusive lock shared by threads and processes (``flock``).
- ``safe_relpath``: validates a relative POSIX path from untrusted input (artifact files,
  manifests, ``get_path``): no ``..``, no absolute paths, no empty or doubled separators,
  no NUL or control characters, valid UTF-8 only.
- ``open_no_follow``: open a file for reading without following a symlink at the last component.
- ``check_private_mode``: refuse key material readable by group or others.
- ``check_owner``: refuse key material not owned by the current user (root: a warning).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock, Timeout

from .errors import KeyPermissionError, UnsafePathError

try:  # POSIX; without it InterProcessLock is filelock's
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
MAX_RELPATH_BYTES = 1024
MAX_RELPATH_PARTS = 32
# a NUL, C0 control character or DEL anywhere (one C scan instead of a loop over characters)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class ForeignOwnerWarning(UserWarning):
    """Root opened key material owned by another user (allowed for root, but suspicious)."""


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with file mode ``mode``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_output(
    path: str | Path, *, mode: int = 0o644, durable: bool = True
) -> Iterator[BinaryIO]:
    """Like ``atomic_write`` for streamed output: yields a binary file; publishes on success.

    ``durable=False`` skips the fsyncs (the rename is still atomic) for callers that make the
    result durable themselves, e.g. a store that fsyncs when it publishes a version."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


class InterProcessLock:
    """An exclusive lock file shared across threads and processes (re-entrant per thread).

    POSIX: ``flock`` on a descriptor of the lock file opened ``O_NOFOLLOW`` (a planted symlink
    is refused, not followed), one per acquiring thread, so two threads exclude each other as
    two processes do; a lock file unlinked or replaced while we waited is opened again (a lock
    on a dead inode excludes nobody). Waiting polls, 1 ms doubling to 50 ms, until ``timeout``
    (0: one try; negative: no limit), then ``filelock.Timeout`` (a ``TimeoutError``). This is
    what ``filelock.FileLock`` did, at ~8 us instead of ~60-190 us per acquire and release (a
    publish takes two: the artifact's history lock and the store's publish lock; issue 16,
    session 5). Without ``fcntl`` (Windows) it is ``filelock.FileLock``.

    Across ``fork`` the child shares the parent's open file description: a block the child
    inherited is never ``LOCK_UN``-ed there (only its descriptor closed), and the child's own
    acquire opens the file anew, so it waits for the parent like any other process."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._local = threading.local()  # per thread: frames [pid, descriptor, depth]
        self._fallback = (
            FileLock(str(self.path), timeout=timeout, mode=0o600) if fcntl is None else None
        )

    def __enter__(self) -> InterProcessLock:
        if self._fallback is not None:  # pragma: no cover - Windows
            self._fallback.acquire()
            return self
        frames = self._frames()
        if frames and frames[-1][0] == os.getpid():
            frames[-1][2] += 1
            return self
        # none, or one inherited across fork (the parent's lock, not ours): a frame of our own
        frames.append([os.getpid(), self._acquire(), 1])
        return self

    def _frames(self) -> list[list[int]]:
        frames = getattr(self._local, "held", None)
        if frames is None:
            frames = self._local.held = []
        return frames

    def __exit__(self, *exc: object) -> None:
        if self._fallback is not None:  # pragma: no cover - Windows
            self._fallback.release()
            return
        frames = self._frames()
        frame = frames[-1]
        if frame[2] > 1:
            frame[2] -= 1
            return
        frames.pop()
        if frame[0] != os.getpid():
            # inherited across fork: the description (and its lock) is shared with the parent,
            # so LOCK_UN here would release the parent's lock for everyone; closing our copy
            # leaves it held
            os.close(frame[1])
            return
        try:
            fcntl.flock(frame[1], fcntl.LOCK_UN)
        finally:
            os.close(frame[1])

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC
        try:
            return os.open(self.path, flags, 0o600)
        except FileNotFoundError:  # its folder is missing: made, as filelock did
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, flags, 0o600)

    def _acquire(self) -> int:
        deadline = None if self.timeout < 0 else time.monotonic() + self.timeout
        delay = 0.001
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if deadline is not None and time.monotonic() >= deadline:
                    raise Timeout(str(self.path)) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            except BaseException:
                os.close(fd)
                raise
            try:  # still the file at that name (not unlinked or replaced while we waited)
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                return fd
            os.close(fd)  # closing drops the lock on the dead inode; try the current file
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(str(self.path))


def safe_relpath(name: str | bytes, *, what: str = "file name") -> str:
    """Return ``name`` if it is a safe relative POSIX path; raise ``UnsafePathError`` otherwise."""
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnsafePathError(f"{what} is not valid UTF-8") from exc
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{what} is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_RELPATH_BYTES:
        raise UnsafePathError(f"{what} is longer than {MAX_RELPATH_BYTES} bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsafePathError(f"{what} {name!r} is not valid UTF-8") from exc
    if _CONTROL_RE.search(name):
        raise UnsafePathError(f"{what} {name!r} contains a NUL or control character")
    if "\\" in name:
        raise UnsafePathError(f"{what} {name!r} contains a backslash")
    if name.startswith("/"):
        raise UnsafePathError(f"{what} {name!r} is absolute")
    parts = name.split("/")
    if len(parts) > MAX_RELPATH_PARTS:
        raise UnsafePathError(f"{what} {name!r} is nested deeper than {MAX_RELPATH_PARTS}")
    for part in parts:
        if part == "":
            raise UnsafePathError(
                f"{what} {name!r} has an empty path component ('//' or trailing '/')"
            )
        if part in {".", ".."}:
            raise UnsafePathError(f"{what} {name!r} has a '.' or '..' component")
    return name


def resolve_inside(root: Path, relpath: str) -> Path:
    """Join a validated relative path to ``root`` and check no symlink leads outside it."""
    relpath = safe_relpath(relpath)
    candidate = root / relpath
    real_root = root.resolve()
    parent = candidate.parent.resolve()
    if parent != real_root and real_root not in parent.parents:
        raise UnsafePathError(f"file name {relpath!r} escapes its folder through a symlink")
    return candidate


def open_no_follow(path: str | Path) -> BinaryIO:
    """Open a regular file for reading; refuse a symlink (at the last component) or non-file."""
    # O_NONBLOCK: opening a planted FIFO must not hang waiting for a writer; it is cleared
    # again once the descriptor is known to be a regular file.
    flags = (
        os.O_RDONLY
        | getattr(os, "O_NOFOLLOW", 0)
        | getattr(os, "O_CLOEXEC", 0)
        | getattr(os, "O_NONBLOCK", 0)
    )
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(f"{path} is a symlink; refusing to follow it") from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePathError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def check_private_mode(path: Path) -> None:
    """Refuse a private file or folder that group or others can read, write or enter."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise KeyPermissionError(
            f"{path} is a symlink; private key material must be a regular file",
            hint=(
                "replace the symlink with the file itself: "
                f"cp --remove-destination $(readlink -f {path}) {path}"
            ),
        )
    if st.st_mode & 0o077:
        want = "700" if stat.S_ISDIR(st.st_mode) else "600"
        raise KeyPermissionError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):o}, readable by group or others",
            hint=f"run: chmod {want} {path}",
        )


def check_owner(path: str | Path, st: os.stat_result | None = None, *, what: str) -> None:
    """Refuse ``path`` (a key store folder, key file or ledger) unless the current user owns it.

    Another user who owns a file can rewrite it, so their key store is not this user's trust
    anchor. Root may open anyone's (backups, containers run as root) but gets a
    ``ForeignOwnerWarning``. ``st`` is the file's stat when the caller already has it."""
    if st is None:
        st = os.lstat(path)
    euid = os.geteuid()
    if st.st_uid == euid:
        return
    if euid == 0:
        warnings.warn(
            f"{what} {path} is owned by uid {st.st_uid}, not root; root opens it anyway",
            ForeignOwnerWarning,
            stacklevel=3,
        )
        return
    raise KeyPermissionError(
        f"{what} {path} is owned by uid {st.st_uid}, not by you (uid {euid}): its owner could "
        "replace the trusted keys",
        hint="use a key store you created (`dagster-wandb-secure keys init -k PATH`); import "
        "the public keys you trust into it",
    )
