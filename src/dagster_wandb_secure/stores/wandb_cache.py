"""The W&B store's download cache: one folder per version, locked, stamped, cleaned up safely.

The cache lives in ``<base_dir>/wandb-secure/cache/<entity>/<project>/<name>/v<N>/``. Each version
has a lock file (``.v<N>.lock``), a last-use stamp (``.v<N>.used``, touched on every resolve and
file access) and the W&B digest it was downloaded for (``.v<N>.digest``). ``cleanup`` removes a
version only while holding its lock, and only when its stamp is older than
``max(cache_duration, MIN_CACHE_AGE)``: a version that another process is downloading or has just
resolved is never removed. ``cache_duration=timedelta(0)`` means "keep nothing longer than
``MIN_CACHE_AGE``". Publishes and downloads are staged in ``.publish-*`` / ``.v<N>.download-*``
folders next to the versions and moved into place under the version lock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from filelock import Timeout as LockTimeout

from ..core.errors import UnsafePathError
from ..core.fsutil import InterProcessLock, atomic_write, open_no_follow, safe_relpath
from .base import (
    VERSION_LABEL_RE,
    ArtifactNotFoundError,
    ArtifactVersion,
    DiskEntry,
    FileEntry,
    StoreError,
    check_artifact_name,
    check_inside,
    check_name_part,
    walk_version_folder,
)

__all__ = [
    "CACHE_LOCK_TIMEOUT",
    "DEFAULT_CACHE_DURATION",
    "MIN_CACHE_AGE",
    "STALE_STAGING_AGE",
    "DownloadCache",
    "copy_hashing",
    "manifest_mismatch",
    "rmtree",
    "scan",
]

log = logging.getLogger(__name__)

DEFAULT_CACHE_DURATION = timedelta(days=30)
MIN_CACHE_AGE = timedelta(minutes=5)  # grace period protecting a version a reader just resolved
STALE_STAGING_AGE = timedelta(days=1)  # leftovers of crashed publishes/downloads
CACHE_LOCK_TIMEOUT = 600.0  # seconds to wait for another process downloading the same version
_CHUNK = 1 << 20
_DOWNLOAD_DIR_RE = re.compile(r"^\.v(\d{1,9})\.download-[0-9a-f]+$")


class DownloadCache:
    """The cached copies of W&B artifact versions below ``root``; safe with several processes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def name_dir(self, entity: str, project: str, name: str) -> Path:
        """``<root>/<entity>/<project>/<name>``, from validated names (W&B's records are hostile
        input) and resolving inside the cache (no symlink escapes)."""
        check_name_part(entity, "entity")
        check_name_part(project, "project")
        check_artifact_name(name)
        return check_inside(
            self.root, self.root / entity / project / name, f"the cache folder of {name}"
        )

    def version_dir(self, av: ArtifactVersion) -> Path:
        """The cache folder of ``av``, which must be where ``av.root`` says (checked)."""
        label = f"{av.entity}/{av.project}/{av.name}"
        if isinstance(av.version, bool) or not isinstance(av.version, int) or av.version < 0:
            raise StoreError(f"invalid version number {av.version!r}", artifact=label)
        vdir = self.name_dir(av.entity, av.project, av.name) / f"v{av.version}"
        if av.root != vdir:
            raise StoreError(
                f"version root {av.root} is not in this store's cache ({self.root})",
                artifact=label,
                version=av.version_label,
                hint="resolve the version through this store",
            )
        return vdir

    def version_lock(self, name_dir: Path, version: int, label: str) -> _Locked:
        return _Locked(name_dir / f".v{version}.lock", CACHE_LOCK_TIMEOUT, label, version)

    def cached_files(
        self,
        vdir: Path,
        name_dir: Path,
        version: int,
        digest: str,
        expected: Mapping[str, int | None],
    ) -> dict[str, FileEntry] | None:
        """The files of a complete cached copy of this digest, or ``None`` to download again."""
        if not vdir.is_dir() or vdir.is_symlink():
            return None
        try:
            cached_digest = (name_dir / f".v{version}.digest").read_text("utf-8")
        except OSError:
            return None
        if not digest or cached_digest != digest:
            return None
        try:
            files = scan(vdir, str(name_dir), f"v{version}")
        except UnsafePathError:
            return None  # something put a symlink in the cache: throw the copy away
        return None if manifest_mismatch(files, expected) else files

    def install(self, name_dir: Path, version: int, staging: Path, digest: str) -> Path:
        """Move a complete staging folder into place as ``v<N>``. The caller holds the lock."""
        vdir = name_dir / f"v{version}"
        if vdir.exists() or vdir.is_symlink():
            trash = name_dir / f".trash-{uuid.uuid4().hex}"
            os.rename(vdir, trash)
            rmtree(trash)
        os.rename(staging, vdir)
        atomic_write(name_dir / f".v{version}.digest", digest.encode("utf-8"))
        self.touch(name_dir, version)
        return vdir

    @staticmethod
    def touch(name_dir: Path, version: int) -> None:
        stamp = name_dir / f".v{version}.used"
        stamp.touch(exist_ok=True)
        os.utime(stamp)

    def cleanup(self, cache_duration: timedelta, *, now: float | None = None) -> list[Path]:
        """Remove cached versions unused for ``max(cache_duration, MIN_CACHE_AGE)``; safe with
        several processes. Returns the removed version folders."""
        if not self.root.is_dir():
            return []
        now = time.time() if now is None else now
        max_age = max(cache_duration, MIN_CACHE_AGE).total_seconds()
        stale_age = max(max_age, STALE_STAGING_AGE.total_seconds())
        removed: list[Path] = []
        for name_dir in sorted(self.root.glob("*/*/*")):
            if name_dir.is_symlink() or not name_dir.is_dir():
                continue
            try:
                children = list(name_dir.iterdir())
            except OSError as exc:
                log.warning("cache cleanup: cannot list %s: %s", name_dir, exc)
                continue
            for child in children:
                try:
                    m = VERSION_LABEL_RE.fullmatch(child.name)
                    if m:
                        if self._evict(name_dir, int(m[1]), now, max_age):
                            removed.append(child)
                    elif child.name.startswith(".trash-"):
                        rmtree(child)
                    elif (
                        child.name.startswith(".publish-")
                        and now - child.lstat().st_mtime > stale_age
                    ):
                        rmtree(child)
                    elif d := _DOWNLOAD_DIR_RE.fullmatch(child.name):
                        # downloads run under the version lock: free lock = dead download
                        lock = InterProcessLock(name_dir / f".v{d[1]}.lock", timeout=0)
                        try:
                            with lock:
                                rmtree(child)
                        except LockTimeout:
                            pass
                except OSError as exc:
                    log.warning("cache cleanup: cannot remove %s: %s", child, exc)
        return removed

    def _evict(self, name_dir: Path, version: int, now: float, max_age: float) -> bool:
        lock = InterProcessLock(name_dir / f".v{version}.lock", timeout=0)
        try:
            lock.__enter__()
        except LockTimeout:
            return False  # being downloaded or installed right now
        try:
            vdir = name_dir / f"v{version}"
            stamp = name_dir / f".v{version}.used"
            try:
                last_used = stamp.stat().st_mtime
            except FileNotFoundError:
                last_used = vdir.lstat().st_mtime
            if now - last_used < max_age:
                return False
            trash = name_dir / f".trash-{uuid.uuid4().hex}"
            os.rename(vdir, trash)
            for leftover in name_dir.glob(f".v{version}.download-*"):
                rmtree(leftover)
            (name_dir / f".v{version}.digest").unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
        finally:
            lock.__exit__(None, None, None)
        rmtree(trash)
        return True

    def fill(
        self,
        entity: str,
        project: str,
        name: str,
        version: int,
        digest: str,
        expected: Mapping[str, int | None],
        *,
        label: str,
        download: Callable[[Path], None],
    ) -> tuple[Path, dict[str, FileEntry]]:
        """The folder and files of a complete cached copy of ``digest``: the one already there,
        or a fresh one ``download`` writes into a staging folder, checked against ``expected``
        (relpath -> size the manifest promises) and moved into place under the version lock."""
        name_dir = self.name_dir(entity, project, name)
        name_dir.mkdir(parents=True, exist_ok=True)
        vdir = name_dir / f"v{version}"
        with self.version_lock(name_dir, version, label):
            files = self.cached_files(vdir, name_dir, version, digest, expected)
            if files is None:
                staging = name_dir / f".v{version}.download-{uuid.uuid4().hex}"
                staging.mkdir()
                try:
                    download(staging)
                    files = scan(staging, label, f"v{version}")
                    mismatch = manifest_mismatch(files, expected)
                    if mismatch:
                        raise StoreError(
                            f"the downloaded files do not match the W&B manifest ({mismatch})",
                            artifact=label,
                            version=f"v{version}",
                            hint="retry; if it persists, the artifact holds references that "
                            "cannot be downloaded",
                        )
                    self.install(name_dir, version, staging, digest)
                finally:
                    if staging.exists():
                        shutil.rmtree(staging, ignore_errors=True)
            self.touch(name_dir, version)
        return vdir, files

    # -- files of a cached version -----------------------------------------------------------

    def file_path(self, av: ArtifactVersion, relpath: str) -> Path:
        """The path of one file of a cached version: any regular file in the version folder (a
        file that is not in ``av.files`` is for the verifier to refuse); a symlink anywhere on
        the way, a non-regular file or an escaping name is refused."""
        label = f"{av.entity}/{av.project}/{av.name}"
        relpath = safe_relpath(relpath, what=f"file name in artifact {label}")
        current = self.version_dir(av)
        name_dir = current.parent
        mode = 0
        for part in ("", *relpath.split("/")):
            current = current / part if part else current
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError as exc:
                if part and relpath not in av.files:
                    raise ArtifactNotFoundError(
                        f"the version has no file {relpath!r}",
                        artifact=label,
                        version=av.version_label,
                        hint=f"files of this version: {', '.join(sorted(av.files)) or '<none>'}",
                    ) from exc
                raise StoreError(
                    f"the cached copy of {relpath!r} is gone (removed by cache cleanup?)",
                    artifact=label,
                    version=av.version_label,
                    hint="resolve the version again; raise cache_duration_in_minutes if this "
                    "recurs",
                ) from exc
            if stat.S_ISLNK(mode):
                raise UnsafePathError(
                    f"{relpath!r} leads through the symlink {current}; refusing to follow it",
                    artifact=label,
                    version=av.version_label,
                )
        if not stat.S_ISREG(mode):
            raise UnsafePathError(
                f"{relpath!r} is not a regular file", artifact=label, version=av.version_label
            )
        self.touch(name_dir, av.version)
        return current

    def open_file(self, av: ArtifactVersion, relpath: str) -> BinaryIO:
        """Open one file of a cached version for reading, after the checks of ``file_path``."""
        path = self.file_path(av, relpath)
        try:
            return open_no_follow(path)
        except UnsafePathError as exc:
            exc.with_location(
                artifact=f"{av.entity}/{av.project}/{av.name}", version=av.version_label
            )
            raise
        except FileNotFoundError as exc:
            raise StoreError(
                f"the cached copy of {relpath!r} is gone (removed by cache cleanup?)",
                artifact=f"{av.entity}/{av.project}/{av.name}",
                version=av.version_label,
                hint="resolve the version again",
            ) from exc

    def list_files(self, av: ArtifactVersion) -> list[DiskEntry]:
        """What is actually on disk in a cached version folder, following nothing."""
        label = f"{av.entity}/{av.project}/{av.name}"
        self.version_dir(av)
        try:
            found = walk_version_folder(av.root)
        except OSError as exc:
            raise StoreError(
                f"cannot list the cached copy {av.root}: {exc.strerror or exc}",
                artifact=label,
                version=av.version_label,
                hint="resolve the version again",
            ) from exc
        self.touch(self.name_dir(av.entity, av.project, av.name), av.version)
        return found


class _Locked:
    """The per-version cache lock, turning a lock timeout into a StoreError."""

    def __init__(self, path: Path, timeout: float, label: str, version: int) -> None:
        self._lock = InterProcessLock(path, timeout=timeout)
        self._label = label
        self._version = version

    def __enter__(self) -> _Locked:
        try:
            self._lock.__enter__()
        except LockTimeout as exc:
            raise StoreError(
                f"another process has held the cache lock {self._lock.path} for more than "
                f"{CACHE_LOCK_TIMEOUT:.0f} s",
                artifact=self._label,
                version=f"v{self._version}",
                hint="wait for the other download to finish, or remove a stale process",
            ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)


def manifest_mismatch(files: Mapping[str, FileEntry], expected: Mapping[str, int | None]) -> str:
    """Why the files on disk are not what the W&B manifest lists ('' if they are)."""
    problems = []
    if extra := sorted(set(files) - set(expected)):
        problems.append(f"not in the manifest: {extra}")
    if missing := sorted(set(expected) - set(files)):
        problems.append(f"missing: {missing}")
    resized = sorted(
        p
        for p, size in expected.items()
        if p in files and size is not None and files[p].size != size
    )
    if resized:
        problems.append(f"wrong size: {resized}")
    return "; ".join(problems)


def copy_hashing(src: Path, root: Path, rel: str, label: str) -> FileEntry:
    """Copy a regular file (never through a symlink) and hash exactly the bytes copied."""
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        source = open_no_follow(src)
    except UnsafePathError as exc:
        exc.with_location(artifact=label)
        raise
    except OSError as exc:
        raise StoreError(f"cannot read {src}: {exc}", artifact=label) from exc
    with source, open(dest, "xb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return FileEntry(path=rel, size=size, sha256=digest.hexdigest())


def scan(root: Path, label: str, version: str) -> dict[str, FileEntry]:
    """List and hash the files under ``root``; refuse symlinks and non-regular files."""
    files: dict[str, FileEntry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for entry in (*dirnames, *filenames):
            path = base / entry
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise UnsafePathError(
                    f"{rel!r} is a symlink; refusing it", artifact=label, version=version
                )
        for filename in filenames:
            path = base / filename
            rel = safe_relpath(path.relative_to(root).as_posix(), what=f"file name in {label}")
            digest = hashlib.sha256()
            size = 0
            try:
                fh = open_no_follow(path)
            except UnsafePathError as exc:
                exc.with_location(artifact=label, version=version)
                raise
            with fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            files[rel] = FileEntry(path=rel, size=size, sha256=digest.hexdigest())
    return files


def rmtree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)
