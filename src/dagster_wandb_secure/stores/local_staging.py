"""Preparing a local publish: checking its inputs and getting its files into a staging folder.

Either sources are copied (streamed in 1 MiB chunks, SHA-256 computed while copying, opened
without following symlinks) into files created read-only and fsynced, or (publish by move) the
publisher wrote them straight into a staging folder the store handed out, and ``check_staged``
checks them there without reading them: regular files at their names, one link each, on the
store's file system, of the size the publisher stated, nothing else in the folder; then made
read-only and kept open, to be fsynced once the store renamed the folder into place. A publisher holds an ``flock`` on its staging folder while it works, so
``clean_staging`` only removes folders of publishes that died.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.digests import HEX_DIGEST_RE
from ..core.errors import ConfigurationError, UnsafePathError
from ..core.fsutil import open_no_follow, safe_relpath
from .base import FileEntry, StagedDigest, StoreError, check_alias, walk_version_folder
from .local_files import open_in_version
from .local_fsync import fsync_together
from .local_rows import (
    DIGEST_KINDS,
    MAX_DESCRIPTION_CHARS,
    MAX_FILES_PER_VERSION,
    MAX_METADATA_CHARS,
    MAX_RUN_ID_CHARS,
    check_metadata_shape,
    check_run_id,
)

try:  # POSIX only; without it stale staging folders are judged by age alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CheckedStaging",
    "MAX_FILES_PER_VERSION",
    "MAX_RUN_ID_CHARS",
    "check_aliases",
    "check_description",
    "check_run_id",
    "check_staged",
    "check_type",
    "clean_staging",
    "copy_one",
    "encode_metadata",
    "hold_staging",
    "plan_files",
    "staging_is_held",
]

LATEST = "latest"
COPY_CHUNK = 1 << 20
# A staged file at least this large is fsynced by ``check_staged``, before the store lock is
# taken (its data writeback is what takes long: 41-58 ms for 64 MiB on the benchmark VM, all
# of it under the lock before); smaller ones stay in the one flush round after the rename
# (a round of their own would add a serial flush wait to every small publish).
EARLY_FSYNC_BYTES = 1 << 20

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)

def check_aliases(aliases: Sequence[str]) -> list[str]:
    if isinstance(aliases, str | bytes):
        raise ConfigurationError(
            f"aliases must be a list of strings, not the string {aliases!r}",
            hint=f"write aliases=[{aliases!r}]",
        )
    result = [LATEST]
    for alias in aliases:
        check_alias(alias)
        if alias not in result:
            result.append(alias)
    return result


def encode_metadata(metadata: Mapping[str, Any] | None) -> str:
    if metadata is None:
        return "{}"
    if not isinstance(metadata, Mapping):
        raise ConfigurationError(f"metadata must be a mapping, not {type(metadata).__name__}")
    problem = check_metadata_shape(dict(metadata))
    if problem is not None:  # before encoding: the encoder would recurse into any depth
        raise ConfigurationError(problem)
    try:
        text = json.dumps(dict(metadata), sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"metadata is not JSON-serializable: {exc}",
            hint="metadata values must be strings, numbers, booleans, None, lists or dicts",
        ) from exc
    if len(text) > MAX_METADATA_CHARS:
        raise ConfigurationError(f"metadata is over {MAX_METADATA_CHARS} characters as JSON")
    return text


def check_description(description: object) -> str | None:
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS
    ):
        raise ConfigurationError(
            f"description must be a string of at most {MAX_DESCRIPTION_CHARS} characters"
        )
    return description


def check_type(label: str, existing: str, wanted: str) -> None:
    if existing != wanted:
        raise StoreError(
            f"artifact {label} has type {existing!r}; a version of type {wanted!r} cannot "
            "be added to it (an artifact's type never changes)",
            artifact=label,
            hint=f"use type {existing!r} or publish under another artifact name",
        )


def plan_files(files: Mapping[Any, Any]) -> list[tuple[str, Path]]:
    if not isinstance(files, Mapping):
        raise ConfigurationError("files must map relative file names to source paths")
    if not files:
        raise StoreError(
            "a version needs at least one file",
            hint="add a file to the artifact before publishing it",
        )
    if len(files) > MAX_FILES_PER_VERSION:
        raise StoreError(f"a version holds at most {MAX_FILES_PER_VERSION} files")
    plan: dict[str, Path] = {}
    for raw, source in files.items():
        rel = safe_relpath(raw)
        if rel in plan:
            raise StoreError(f"file name {rel!r} is given twice")
        if not isinstance(source, str | os.PathLike):
            raise ConfigurationError(f"the source of {rel!r} must be a path, not {source!r}")
        plan[rel] = Path(source)
    for rel in plan:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in plan:
                raise StoreError(f"{prefix!r} is both a file and the folder of {rel!r}")
    return sorted(plan.items())


def hold_staging(staging: Path) -> int | None:
    """Lock our staging folder so a concurrent cleaner knows it is alive."""
    if fcntl is None:
        return None
    fd = os.open(staging, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def staging_is_held(folder: str | Path) -> bool:
    """True if a live publisher still holds ``folder`` (its ``hold_staging`` flock, which
    follows the folder when it is renamed to ``v<N>``). Recovery asks before removing a folder
    a ``pending`` row names: the store lock says its publisher is gone, unless that lock was
    bypassed (its file deleted or replaced while held), and then this still says it is not.
    Nothing followed; a folder that cannot be opened or locked here is not held."""
    if fcntl is None:
        return False
    try:
        fd = os.open(folder, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops our probe's lock
    return False


def copy_one(source: Path, target: Path, rel: str, label: str) -> FileEntry:
    try:
        st = os.lstat(source)
    except OSError as exc:
        raise StoreError(
            f"cannot read the source of {rel!r} ({source}): {exc.strerror or exc}",
            artifact=label,
            hint="check that the file exists and is readable",
        ) from exc
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(
            f"the source of {rel!r} ({source}) is a symlink; refusing to follow it",
            artifact=label,
            hint="pass the real file, not a symlink to it",
        )
    if not stat.S_ISREG(st.st_mode):  # checked before opening: a FIFO would block the open
        raise UnsafePathError(
            f"the source of {rel!r} ({source}) is not a regular file", artifact=label
        )
    digest = hashlib.sha256()
    size = 0
    try:
        with open_no_follow(source) as src:
            fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o444
            )
            with open(fd, "wb", buffering=0) as dst:
                while chunk := src.read(COPY_CHUNK):
                    digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        written = dst.write(view)
                        view = view[written:]
                    size += len(chunk)
                os.fsync(dst.fileno())
    except UnsafePathError as exc:
        raise exc.with_location(artifact=label) from None
    except OSError as exc:
        raise StoreError(
            f"copying {rel!r} from {source} into the store failed: {exc.strerror or exc}",
            artifact=label,
            hint="check disk space and permissions of the store folder",
        ) from exc
    return FileEntry(path=rel, size=size, sha256=digest.hexdigest())


class CheckedStaging:
    """The staged files of one publish by move, checked in place and still open.

    ``entries`` are the index entries; the descriptors are the checked files (the very ones
    checked) and every folder of the version. ``flush`` makes them durable together with what
    the caller adds (the folder the version was renamed into, the ledger's ``durable()``), all
    in one round (``local_fsync``); the store runs it after its rename and before the index
    commit that makes the version visible. ``close`` (idempotent) closes the descriptors."""

    def __init__(
        self, entries: dict[str, FileEntry], fds: list[int], label: str, flushed: Sequence[int] = ()
    ) -> None:
        self.entries = entries
        self._fds = fds
        self._flushed = list(flushed)  # held open too, already durable (``check_staged``)
        self._label = label

    @property
    def descriptors(self) -> int:
        """How many descriptors ``flush`` fsyncs of its own (files and folders)."""
        return len(self._fds)

    def flush(self, fds: Sequence[int] = (), also: Sequence[Callable[[], None]] = ()) -> None:
        """fsync every held descriptor not flushed yet and ``fds``, and run ``also``, at the
        same time; return when all completed (a ``StoreError`` if an fsync failed; ``also``'s
        errors as raised)."""
        _flush([*self._fds, *fds], also, self._label)

    def close(self) -> None:
        fds, self._fds, self._flushed = [*self._fds, *self._flushed], [], []
        for fd in fds:
            os.close(fd)


def _flush(fds: Sequence[int], also: Sequence[Callable[[], None]], label: str) -> None:
    try:
        fsync_together(fds, also)
    except OSError as exc:
        raise StoreError(
            f"making the staged files of {label} durable failed: {exc.strerror or exc}",
            artifact=label,
        ) from exc


def check_staged(
    staging: Path,
    plan: list[tuple[str, Path]],
    digests: Mapping[str, StagedDigest],
    label: str,
    early_fsync_bytes: int = EARLY_FSYNC_BYTES,
) -> CheckedStaging:
    """The index entries of files a publisher wrote straight into ``staging`` (publish by
    move), after checking them in place without reading their bytes: each source is
    ``staging/<relpath>``; everything in the folder is a regular file of the plan (a symlink,
    special file or stray file is refused); each file has one link (a hard link would let
    another name change the version later), lives on the staging folder's file system, and has
    the size its ``StagedDigest`` states. Each file is then made read-only. The checked files
    (through the very descriptors checked) and every folder of the version stay open in the
    returned ``CheckedStaging``, whose ``flush`` the store calls once the folder is renamed
    into place, before anything names it (one flush round with the rename's folder and the
    ledger barrier). The caller closes it. A file without a ``StagedDigest`` is hashed
    (SHA-256) in place instead. A file of ``early_fsync_bytes`` or more is fsynced here,
    once checked: still before the rename, but before the store lock is taken, so its data
    writeback no longer holds up other publishers (a failure publishes nothing)."""
    base = os.path.normpath(staging)
    planned = {rel for rel, _ in plan}
    for rel, source in plan:
        if os.path.normpath(os.path.abspath(source)) != os.path.join(base, *rel.split("/")):
            raise UnsafePathError(
                f"the staged file {rel!r} ({source}) is not in the staging folder {staging} "
                "under its own name; a publish by move takes only files written there",
                artifact=label,
            )
        given = digests.get(rel)
        if given is not None and (
            given.digest_kind not in DIGEST_KINDS
            or not isinstance(given.digest, str)
            or not HEX_DIGEST_RE.fullmatch(given.digest)
            or isinstance(given.size, bool)
            or not isinstance(given.size, int)
            or given.size < 0
        ):
            raise ConfigurationError(f"the staged digest of {rel!r} is malformed: {given!r}")
    for extra in set(digests) - planned:
        raise ConfigurationError(f"a staged digest names {extra!r}, which is not a file given")
    try:
        folder_st = os.lstat(staging)
        found = walk_version_folder(staging, max_entries=MAX_FILES_PER_VERSION + 1, where=label)
    except OSError as exc:
        raise StoreError(f"cannot list the staging folder {staging}: {exc}", artifact=label) from exc
    for entry in found:
        if entry.kind != "file":
            raise UnsafePathError(
                f"{entry.path!r} in the staging folder is a {entry.kind}, not a regular file; "
                "nothing was published",
                artifact=label,
            )
        if entry.path not in planned:
            raise StoreError(
                f"the staging folder holds {entry.path!r}, which is not a file of the version; "
                "nothing was published",
                artifact=label,
            )
    entries: dict[str, FileEntry] = {}
    fds: list[int] = []
    large: list[int] = []  # checked files of early_fsync_bytes or more: flushed right here
    try:
        for rel, _ in plan:
            fd, _path = open_in_version(staging, rel, label)
            fds.append(fd)
            entry = _check_one(fd, rel, digests.get(rel), folder_st, label)
            if entry.size >= early_fsync_bytes:
                large.append(fds.pop())
            entries[rel] = entry
        for folder in _folders(staging, entries):
            fds.append(os.open(folder, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC))
        if large:  # after every check and fchmod: what is flushed is what was checked
            _flush(large, (), label)
    except OSError as exc:
        for fd in (*fds, *large):
            os.close(fd)
        raise StoreError(
            f"opening the staged files of {label} failed: {exc.strerror or exc}",
            artifact=label,
        ) from exc
    except BaseException:
        for fd in (*fds, *large):
            os.close(fd)
        raise
    return CheckedStaging(entries, fds, label, flushed=large)


def _check_one(
    fd: int, rel: str, given: StagedDigest | None, folder_st: os.stat_result, label: str
) -> FileEntry:
    """One staged file, through its open descriptor (see ``check_staged``)."""
    try:
        st = os.fstat(fd)
        problem = (
            "has other hard links" if st.st_nlink != 1
            else "is on another file system" if st.st_dev != folder_st.st_dev
            else f"has {st.st_size} bytes, not the {given.size} the publisher wrote"
            if given is not None and st.st_size != given.size
            else None
        )
        if problem is not None:
            raise UnsafePathError(
                f"the staged file {rel!r} {problem}; nothing was published", artifact=label
            )
        os.fchmod(fd, 0o444)
        if given is None:
            return _hash_fd(fd, rel, st.st_size)
        return FileEntry(rel, given.size, given.digest, given.digest_kind)
    except OSError as exc:
        raise StoreError(
            f"checking the staged file {rel!r} failed: {exc.strerror or exc}",
            artifact=label,
        ) from exc


def _folders(staging: Path, relpaths: Iterable[str]) -> list[Path]:
    """``staging`` and every folder of ``relpaths`` in it, deepest first."""
    folders = {staging}
    for rel in relpaths:
        parts = rel.split("/")[:-1]
        folders.update(staging.joinpath(*parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(folders, key=lambda p: len(p.parts), reverse=True)


def _hash_fd(fd: int, rel: str, size: int) -> FileEntry:
    digest = hashlib.sha256()
    with open(os.dup(fd), "rb", buffering=0) as fh:
        while chunk := fh.read(COPY_CHUNK):
            digest.update(chunk)
    return FileEntry(path=rel, size=size, sha256=digest.hexdigest())


def clean_staging(staging_dir: Path, max_age: float) -> None:
    """Remove staging folders left by crashed publishes (old enough and not locked)."""
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(staging_dir))
    except OSError:
        return
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
            if st.st_mtime > cutoff:
                continue
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(entry.path)
                continue
            fd = os.open(entry.path, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
        except OSError:
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # alive publisher -> OSError
            shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            pass
        finally:
            os.close(fd)
