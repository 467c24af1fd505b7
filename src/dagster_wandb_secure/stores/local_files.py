"""Reading a local version folder: open its files and list it without following any symlink.

``root`` is always the folder the store computed from its layout (never ``av.root``); ``where``
names the version in error messages.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

from ..core.errors import SecureArtifactError, UnsafePathError
from ..core.fsutil import safe_relpath
from .base import (
    ArtifactNotFoundError,
    ArtifactVersion,
    DiskEntry,
    ManifestItem,
    StoreError,
    check_artifact_name,
    check_name_part,
    parse_version,
    read_capped,
    walk_version_folder,
)

try:  # POSIX only; without it a version file is opened blocking
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MAX_LISTED_ENTRIES",
    "FolderListing",
    "list_version",
    "list_versions_below",
    "open_in_version",
    "read_in_versions",
]

MAX_LISTED_ENTRIES = 100_000

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC


def open_in_version(root: Path, relpath: str, where: str) -> tuple[int, Path]:
    """Open a file of the version folder ``root`` without following any symlink on the way;
    returns a read-only descriptor of a regular file and its path.

    Every component below ``root`` is opened relative to its parent's descriptor with
    ``O_NOFOLLOW``, so a symlink anywhere below ``root`` is refused outright: stronger than a
    ``resolve_inside`` check (a symlink that stays inside), which is therefore not made as
    well (it resolved ``root`` and the file's folder again, per file opened)."""
    try:
        rel = safe_relpath(relpath)
    except UnsafePathError as exc:
        raise exc.with_location(artifact=where) from None
    try:
        dir_fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePathError(
                f"the version folder {root} is a symlink or not a folder", artifact=where
            ) from exc
        raise _missing_root(root, where, exc) from exc
    try:
        return _open_below(dir_fd, rel, where), root / rel
    finally:
        os.close(dir_fd)


def _open_below(dir_fd: int, rel: str, where: str) -> int:
    """A read-only descriptor of the regular file ``rel`` (already ``safe_relpath``) below
    the open folder ``dir_fd``, no symlink followed on the way (``dir_fd`` stays open)."""
    parts = rel.split("/")
    fd = dir_fd
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                _raise_open_error(exc, "/".join(parts[: i + 1]), rel, where, folder=True)
            if fd != dir_fd:
                os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(
                parts[-1], os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK, dir_fd=fd
            )
        except OSError as exc:
            _raise_open_error(exc, rel, rel, where, folder=False)
    finally:
        if fd != dir_fd:
            os.close(fd)
    return _regular(file_fd, rel, where)


def _regular(fd: int, rel: str, where: str) -> int:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePathError(f"{rel!r} is not a regular file", artifact=where)
    if _O_NONBLOCK and fcntl is not None:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_NONBLOCK)
    return fd


def read_in_versions(
    artifacts: Path,
    folders: Sequence[str],
    versions: Iterable[ArtifactVersion],
    relpath: str,
    max_bytes: int,
) -> Iterator[ManifestItem]:
    """The bytes of file ``relpath`` (at most ``max_bytes``) in the folder ``v<N>`` of each of
    ``versions``, below ``artifacts/<folders...>`` (entity, project, name: validated names).

    Every folder below ``artifacts`` and the file are opened relative to their parent's
    descriptor without following a symlink, so nothing outside the store is read (the same
    guarantee as ``open_in_version`` after the store's ``check_inside``, without resolving
    paths per version). A version whose file cannot be read comes with its typed error."""
    label = "/".join(folders)
    rel = safe_relpath(relpath)
    base_fd: int | None = None
    base_error: SecureArtifactError | None = None
    try:
        base_fd = _open_dirs(artifacts, folders, label)
    except SecureArtifactError as exc:
        base_error = exc
    try:
        for av in versions:
            where = av.qualified_name
            if base_fd is None:
                assert base_error is not None
                yield av, base_error
                continue
            try:
                fd = _open_below(base_fd, f"v{av.version}/{rel}", where)
                with os.fdopen(fd, "rb") as fh:
                    data = read_capped(fh, max_bytes, rel, where)
            except SecureArtifactError as exc:
                yield av, exc
                continue
            except OSError as exc:
                yield av, StoreError(f"cannot read {rel!r}: {exc.strerror or exc}",
                                     artifact=where)
                continue
            yield av, data
    finally:
        if base_fd is not None:
            os.close(base_fd)


def _open_dirs(artifacts: Path, folders: Sequence[str], label: str) -> int:
    """A descriptor of ``artifacts/<folders...>``, no symlink followed below ``artifacts``."""
    try:
        fd = os.open(artifacts, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError as exc:
        raise _missing_root(artifacts, label, exc) from exc
    for i, part in enumerate(folders):
        try:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            _raise_open_error(exc, "/".join(folders[: i + 1]), label, label, folder=True)
        os.close(fd)
        fd = next_fd
    return fd


def _raise_open_error(exc: OSError, part: str, rel: str, where: str, *, folder: bool) -> None:
    if exc.errno == errno.ELOOP or (folder and exc.errno == errno.ENOTDIR):
        kind = "a symlink or not a folder" if folder else "a symlink"
        raise UnsafePathError(
            f"{part!r} (of {rel!r}) is {kind}; refusing to follow it", artifact=where
        ) from exc
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        raise ArtifactNotFoundError(f"{where} has no file {rel!r}", artifact=where) from exc
    raise StoreError(f"cannot open {rel!r}: {exc.strerror or exc}", artifact=where) from exc


def _missing_root(root: Path, where: str, exc: OSError) -> StoreError:
    return StoreError(
        f"the folder {root} of this version cannot be opened: {exc.strerror or exc}",
        artifact=where,
        hint="the store folder was changed outside dagster-wandb-secure; re-materialize the "
        "asset or restore the store from a backup",
    )


def list_version(root: Path, where: str) -> list[DiskEntry]:
    """Every entry on disk in the version folder ``root`` (which must be a real folder),
    sorted by path, following nothing."""
    try:
        st = os.lstat(root)
    except OSError as exc:
        raise _missing_root(root, where, exc) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(
            f"the version folder {root} is a symlink or not a folder", artifact=where
        )
    try:
        return walk_version_folder(root, max_entries=MAX_LISTED_ENTRIES, where=where)
    except OSError as exc:
        raise StoreError(f"cannot list {root}: {exc.strerror or exc}", artifact=where) from exc


# (version, its folder's path below the resolved artifacts folder, its entries or the typed error)
FolderListing = tuple[ArtifactVersion, Path, list[DiskEntry] | SecureArtifactError]


def list_versions_below(artifacts: Path, versions: Iterable[ArtifactVersion]) -> Iterator[FolderListing]:
    """``list_version`` of many versions (an audit), with one path resolution in all instead of
    one per version and per file: each version's folder is opened below the open descriptor
    of its artifact folder, which is kept for consecutive versions of one artifact, and listed
    through its descriptor.

    ``artifacts`` is the store's artifacts folder, already resolved; it is opened without
    following a symlink, and so is every folder below it (entity, project, name, ``v<N>``,
    subfolders): a symlink anywhere below ``artifacts`` is refused (``UnsafePathError``),
    also one that stays inside the store, which ``check_inside`` lets through. This is never
    weaker than ``list_version`` after ``check_inside``: the folder listed is the one below
    ``artifacts`` at that moment, with no path re-resolved. The path returned is
    ``artifacts/<e>/<p>/<name>/v<N>`` (the index's validated names), for callers that open the
    listed files by path with ``O_NOFOLLOW`` as the verifier does; a version whose folder cannot
    be listed comes with its typed error."""
    try:
        base_fd = os.open(artifacts, _DIR_FLAGS)
    except OSError as exc:
        error: SecureArtifactError = (
            UnsafePathError(f"the artifacts folder {artifacts} is a symlink or not a folder")
            if exc.errno in (errno.ELOOP, errno.ENOTDIR)
            else _missing_root(artifacts, "the store", exc)
        )
        for av in versions:
            yield av, artifacts, error
        return
    with ExitStack() as stack:
        stack.callback(os.close, base_fd)
        current: tuple[str, str, str] | None = None
        art: list[int | SecureArtifactError] = []  # the current artifact folder's descriptor
        stack.callback(lambda: [os.close(fd) for fd in art if isinstance(fd, int)])
        for av in versions:
            where = av.qualified_name
            try:  # the store's own checks of index data (``_root_of``)
                ident = (check_name_part(av.entity, "entity"), check_name_part(av.project, "project"),
                         check_artifact_name(av.name))
                number = parse_version(av.version, av.name)
            except SecureArtifactError as exc:
                yield av, artifacts, exc.with_location(artifact=where)
                continue
            root = artifacts.joinpath(*ident, f"v{number}")
            if ident != current:
                while art:
                    fd = art.pop()
                    if isinstance(fd, int):
                        os.close(fd)
                current = ident
                try:
                    art.append(_open_chain(base_fd, ident, "/".join(ident)))
                except SecureArtifactError as exc:
                    art.append(exc)
            got = art[0]
            if isinstance(got, int):
                yield av, root, _list_below(got, f"v{number}", root, where)
            else:
                yield av, root, got


def _open_chain(dir_fd: int, parts: Sequence[str], label: str) -> int:
    """A descriptor of ``parts`` below the open folder ``dir_fd``, following no symlink."""
    fd = dir_fd
    for i, part in enumerate(parts):
        try:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if fd != dir_fd:
                os.close(fd)
            _raise_open_error(exc, "/".join(parts[: i + 1]), label, label, folder=True)
        if fd != dir_fd:
            os.close(fd)
        fd = next_fd
    return fd


def _list_below(art_fd: int, folder: str, root: Path, where: str) -> list[DiskEntry] | SecureArtifactError:
    """The entries of version folder ``folder`` below the artifact folder ``art_fd``."""
    try:
        fd = os.open(folder, _DIR_FLAGS, dir_fd=art_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return UnsafePathError(
                f"the version folder {root} is a symlink or not a folder", artifact=where
            )
        return _missing_root(root, where, exc)
    try:
        return _walk_fd(fd, root, where)
    except SecureArtifactError as exc:
        return exc
    except OSError as exc:
        return StoreError(f"cannot list {root}: {exc.strerror or exc}", artifact=where)
    finally:
        os.close(fd)


def _walk_fd(top: int, root: Path, where: str) -> list[DiskEntry]:
    """``base.walk_version_folder`` of the open folder ``top``: every entry below it, sorted by
    path; subfolders opened relative to their parent without following a symlink (a folder
    replaced by a symlink while listed is an UnsafePathError)."""
    found: list[DiskEntry] = []
    pending: list[tuple[str, int]] = [("", top)]
    try:
        while pending:
            prefix, fd = pending.pop()
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        rel = prefix + entry.name
                        est = entry.stat(follow_symlinks=False)
                        mode = est.st_mode
                        if stat.S_ISLNK(mode):
                            target = os.readlink(entry.name, dir_fd=fd)
                            found.append(DiskEntry(rel, "symlink", est.st_size, target))
                        elif stat.S_ISDIR(mode):
                            try:
                                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                            except OSError as exc:
                                _raise_open_error(exc, rel, rel, where, folder=True)
                            pending.append((rel + "/", sub))
                        elif stat.S_ISREG(mode):
                            found.append(DiskEntry(rel, "file", est.st_size))
                        else:
                            found.append(DiskEntry(rel, "other", 0))
                        if len(found) + len(pending) > MAX_LISTED_ENTRIES:
                            raise StoreError(
                                f"the version folder {root} holds more than "
                                f"{MAX_LISTED_ENTRIES} entries",
                                artifact=where,
                            )
            finally:
                if fd != top:
                    os.close(fd)
    finally:
        for _, fd in pending:
            if fd != top:
                os.close(fd)
    found.sort(key=lambda e: e.path)
    return found
