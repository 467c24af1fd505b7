"""The embedded local artifact store: W&B artifact semantics on a local folder.

It is what the demo, the tests and air-gapped users run on. It moves bytes only: whether the
bytes can be trusted is decided above it, by the core (envelopes, signed manifests) working on
the files this store hands out (``open_file``, ``file_path``, ``list_files``).

Layout of a store folder::

    <root>/
      index.sqlite3        the index (SQLite, WAL journal, busy timeout): the source of truth
      publish.lock         inter-process lock held while a version number is allocated
      staging/<id>/        publishes in progress (and discarded folders); ignored by readers
      artifacts/<entity>/<project>/<name>/v<N>/<files...>   one folder per published version

The index (tables, schema version, connections) lives in ``local_index``; checking a publish's
inputs and copying its sources into staging in ``local_staging``; opening and listing the files
of a version folder without following symlinks in ``local_files``.

Publishing a version:

1. Validate every name, alias and relative file name, before touching the disk.
2. Copy each source into a fresh ``staging/<id>/`` folder (streamed in 1 MiB chunks, SHA-256
   computed while copying, sources opened without following symlinks), fsync every file and
   folder. The publisher holds an ``flock`` on its staging folder while it works. Publish by
   move: the publisher got the ``staging/<id>/`` folder from ``staging_area()`` (flock held the
   same way) and wrote the files there itself; ``publish(staged=..., digests=...)`` checks them
   in place (``local_staging.check_staged``: no second read) and keeps them open.
3. Under ``publish.lock``: allocate the next number (``max + 1``, per artifact), commit a
   ``pending`` row, rename the staging folder to ``v<N>`` (never over a version the index
   knows), fsync the parent (by move: together with the checked files, the version's folders
   and the ledger barrier, one round), then insert the version, alias and lineage rows and
   delete the ``pending`` row in one SQLite transaction.

Crash safety: a version is visible only once its rows are committed, and its folder is complete
before that. A crash (even SIGKILL) before the commit leaves either a staging folder (ignored;
removed by a later publish once it is older than ``staging_max_age`` and no live publisher holds
its ``flock``) or a renamed folder with its ``pending`` row, which the next process to open the
store (or to publish) removes under the lock. Either way, once the store is opened again, a
version is in the index with its folder complete, or in neither. Versions are never overwritten
or modified by the store; their files are created read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from ..core.errors import ConfigurationError, SecureArtifactError, UnsafePathError
from ..core.fsutil import InterProcessLock, fsync_dir
from .base import (
    MAX_VERSION_NUMBER,
    ArtifactNotFoundError,
    ArtifactVersion,
    DiskEntry,
    FileEntry,
    ManifestItem,
    StagedDigest,
    StagingArea,
    StoreError,
    VersionRowError,
    check_alias,
    check_artifact_name,
    check_inside,
    check_name_part,
    parse_version,
    walk_version_folder,
)
from .local_files import (
    MAX_LISTED_ENTRIES,
    FolderListing,
    list_version,
    list_versions_below,
    open_in_version,
    read_in_versions,
)
from .local_index import (
    BUSY_TIMEOUT_S,
    INDEX_NAME,
    SCHEMA_VERSION,
    LocalIndex,
    artifact_label,
    version_folder,
)
from .local_recovery import Recovery
from .local_rows import RowIdentity, check_number, scan_stub_from_row
from .local_staging import (
    COPY_CHUNK,
    LATEST,
    MAX_FILES_PER_VERSION,
    MAX_RUN_ID_CHARS,
    CheckedStaging,
    check_aliases,
    check_description,
    check_run_id,
    check_staged,
    check_type,
    clean_staging,
    copy_one,
    encode_metadata,
    hold_staging,
    plan_files,
)

# DiskEntry, walk_version_folder and the constants below moved to .base, .local_index,
# .local_files and .local_staging; they stay importable from here.
__all__ = [
    "BUSY_TIMEOUT_S",
    "COPY_CHUNK",
    "INDEX_NAME",
    "MAX_FILES_PER_VERSION",
    "MAX_LISTED_ENTRIES",
    "MAX_RUN_ID_CHARS",
    "MAX_VERSION_NUMBER",
    "SCHEMA_VERSION",
    "DiskEntry",
    "Lineage",
    "LocalArtifactStore",
    "walk_version_folder",
]

LOCK_NAME = "publish.lock"
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
STAGING_DIR = "staging"
ARTIFACTS_DIR = "artifacts"
DEFAULT_STAGING_MAX_AGE = 15 * 60.0


@dataclass(frozen=True)
class Lineage:
    """Which runs wrote and read one version."""

    writer: str | None
    readers: tuple[str, ...]


def _same_entry(path: Path, st: os.stat_result) -> bool:
    """``path`` (not followed) is the very file system entry ``st`` was taken of."""
    try:
        return os.path.samestat(os.lstat(path), st)
    except OSError:
        return False


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class LocalArtifactStore:
    """W&B artifact semantics (versions, aliases, types, lineage) in a local folder.

    Safe to use from several threads and processes at once. See the module docstring for the
    layout and the crash-safety argument."""

    def __init__(
        self,
        root: str | Path,
        *,
        staging_max_age: float = DEFAULT_STAGING_MAX_AGE,
        lock_timeout: float = 60.0,
    ) -> None:
        self.root = Path(root).absolute()
        self.index_path = self.root / INDEX_NAME
        self.staging_max_age = staging_max_age
        self._staging = self.root / STAGING_DIR
        self._artifacts = self.root / ARTIFACTS_DIR
        self._artifacts_real: Path | None = None  # resolved once, on first use
        self._artifacts_real_lock = threading.Lock()  # audit threads ask for it at once
        try:
            for folder in (self.root, self._staging, self._artifacts):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the local artifact store at {self.root}: {exc}",
                hint="choose a writable folder for the store",
            ) from exc
        self._lock = InterProcessLock(self.root / LOCK_NAME, timeout=lock_timeout)
        self._areas: dict[Path, int | None] = {}  # live staging areas -> their flocked fd
        self._index = LocalIndex(
            self.index_path, store_root=self.root, artifacts_dir=self._artifacts
        )
        self._init_index()

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    # --- index and lock ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's publish lock. Taking it fails with a typed error (the store folder is
        hostile: a symlink or folder planted at ``publish.lock``, or a file system without
        ``flock``), never a raw OSError; errors of the body pass through unchanged."""
        try:
            self._lock.__enter__()
        except TimeoutError as exc:
            raise StoreError(
                f"timed out waiting for the store lock {self.root / LOCK_NAME}",
                hint="another process is publishing or hung; retry, or stop the stuck process",
            ) from exc
        except OSError as exc:
            raise self._lock_error(exc) from None
        try:
            yield
        finally:
            self._lock.__exit__(None, None, None)

    @contextlib.contextmanager
    def _locked_if_free(self) -> Iterator[bool]:
        """The publish lock if nobody holds it (True), else nothing (False), without waiting:
        opening the store recovers a ``pending`` row only then. A held lock means a live
        publisher (whose flush round, payload fsyncs included, runs under it), and every
        publisher recovers under the lock before it allocates, so no reader waits for one."""
        lock = InterProcessLock(self.root / LOCK_NAME, timeout=0)
        try:
            lock.__enter__()
        except TimeoutError:
            yield False
            return
        except OSError as exc:
            raise self._lock_error(exc) from None
        try:
            yield True
        finally:
            lock.__exit__(None, None, None)

    def _lock_error(self, exc: OSError) -> StoreError:
        return StoreError(
            f"cannot take the store lock {self.root / LOCK_NAME}: {exc.strerror or exc}",
            hint="publish.lock must be a regular file (not a symlink or folder) on a file "
            "system with flock (a local disk, or NFS with locking)",
        )

    def _init_index(self) -> None:
        self._index.initialize(self._locked, self._recover_pending, self._locked_if_free)

    def _version_dir(self, entity: str, project: str, name: str, number: int) -> Path:
        """The folder of one version, from validated components, resolving (symlinks followed)
        inside ``artifacts/``: every path the store builds from index data comes from here."""
        folder = version_folder(self._artifacts, entity, project, name, number)
        return check_inside(
            self._artifacts, folder, f"the folder of {artifact_label(entity, project, name)}:"
            f"v{number}", real_base=self._resolved_artifacts()
        )

    def _resolved_artifacts(self) -> Path:
        if self._artifacts_real is None:
            with self._artifacts_real_lock:
                if self._artifacts_real is None:
                    self._artifacts_real = self._artifacts.resolve()
        return self._artifacts_real

    # --- publishing ----------------------------------------------------------------------------

    def _new_staging(self, label: str | None) -> tuple[Path, int | None]:
        clean_staging(self._staging, self.staging_max_age)
        staging = self._staging / f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            staging.mkdir(mode=0o755)
        except OSError as exc:
            raise StoreError(
                f"cannot create a staging folder in {self._staging}: {exc}", artifact=label
            ) from exc
        try:
            return staging, hold_staging(staging)
        except OSError:
            return staging, None  # no flock: the folder is then protected by its age alone

    @contextlib.contextmanager
    def staging_area(self) -> Iterator[StagingArea]:
        """A fresh ``staging/<id>/`` folder on the store's file system for one publish by move
        (see ``base.ArtifactStore.publish``); removed on exit unless it was published."""
        staging, fd = self._new_staging(None)
        self._areas[staging] = fd
        try:
            yield StagingArea(staging, by_move=True, store_root=self.root)
        finally:
            self._areas.pop(staging, None)
            if fd is not None:
                os.close(fd)
            if os.path.lexists(staging):
                shutil.rmtree(staging, ignore_errors=True)

    def _check_area(self, area: StagingArea, label: str) -> Path:
        """``area`` is a live one this store handed out, still the very folder it created."""
        if not isinstance(area, StagingArea) or area.path not in self._areas:
            raise ConfigurationError(
                f"publish(staged=...) takes a staging area of this store's staging_area(), "
                f"not {area!r}",
                artifact=label,
            )
        fd = self._areas[area.path]
        try:
            st = os.lstat(area.path)
            same = fd is None or os.path.samestat(st, os.fstat(fd))
        except OSError as exc:
            raise StoreError(f"the staging folder {area.path} is gone: {exc}", artifact=label) from exc
        if not stat.S_ISDIR(st.st_mode) or not same:
            raise UnsafePathError(
                f"the staging folder {area.path} was replaced after the store created it; "
                "nothing was published",
                artifact=label,
            )
        return area.path

    def close(self) -> None:
        """Close this thread's index connection (the store stays usable: it reopens)."""
        self._index.close_thread_connection()

    def publish(
        self,
        *,
        entity: str,
        project: str,
        name: str,
        type: str,
        files: Mapping[str, Path] | Mapping[str | bytes, str | os.PathLike[str]],
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = (),
        run_id: str | None = None,
        staged: StagingArea | None = None,
        digests: Mapping[str, StagedDigest] | None = None,
        barrier: Callable[[], None] | None = None,
    ) -> ArtifactVersion:
        """Publish a new immutable version ``v<N>`` from ``files`` (relpath -> source file).

        ``latest`` and every alias given move to the new version. Atomic: on any failure or
        crash, no part of the version becomes visible. With ``staged`` (an area of
        ``staging_area()`` holding exactly ``files``) the folder is published by rename after
        ``check_staged``; ``digests`` are then what the index records (else SHA-256 in place).
        ``barrier`` (the ledger's ``durable()``): run before the index commit makes the version
        visible; when staged, alongside the fsyncs of the staged files (but those of 1 MiB or
        more, which ``check_staged`` flushed before the lock), the version's folders and the
        folder it was renamed into (one round, after the rename), else first, before anything
        is copied; publish fails (and publishes nothing) if it raises."""
        check_name_part(entity, "entity")
        check_name_part(project, "project")
        check_artifact_name(name)
        label = artifact_label(entity, project, name)
        try:
            check_name_part(type, "artifact type")
            alias_list = check_aliases(aliases)
            metadata_json = encode_metadata(metadata)
            check_description(description)
            if run_id is not None:
                check_run_id(run_id)
            plan = plan_files(files)
        except SecureArtifactError as exc:
            raise exc.with_location(artifact=label) from None

        with self._index.connect() as conn:
            art = self._index.artifact_row(conn, entity, project, name)
        if art is not None:
            check_type(label, art[1], type)

        if staged is not None:
            staging, staging_fd = self._check_area(staged, label), None
        else:
            staging, staging_fd = self._new_staging(label)
        checked: CheckedStaging | None = None
        try:
            if staged is not None:
                checked = self._check_staged(staging, plan, dict(digests or {}), label)
                entries = checked.entries
            else:
                if barrier is not None:
                    barrier()
                entries = self._copy_all(staging, plan, label)
            return self._commit(
                staging,
                entity=entity,
                project=project,
                name=name,
                type=type,
                entries=entries,
                description=description,
                metadata_json=metadata_json,
                aliases=alias_list,
                run_id=run_id,
                label=label,
                checked=checked,
                barrier=barrier if checked is not None else None,
            )
        except OSError as exc:  # anything not already turned into a typed error above
            raise StoreError(
                f"publishing into the local store {self.root} failed: {exc}",
                artifact=label,
                hint="check disk space and permissions of the store folder",
            ) from exc
        finally:
            if checked is not None:
                checked.close()
            if staging_fd is not None:
                os.close(staging_fd)
            # still there: the publish failed before the rename (an area: its block removes it)
            if staged is None and os.path.lexists(staging):
                shutil.rmtree(staging, ignore_errors=True)

    def publish_dir(
        self,
        directory: str | Path,
        *,
        entity: str,
        project: str,
        name: str,
        type: str,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = (),
        run_id: str | None = None,
    ) -> ArtifactVersion:
        """Publish every regular file under ``directory`` (symlinks and special files refused)."""
        label = artifact_label(entity, project, name)
        base = Path(directory)
        if base.is_symlink() or not base.is_dir():
            raise UnsafePathError(f"{base} is not a folder (or is a symlink)", artifact=label)
        files: dict[str, Path] = {}
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            here = Path(dirpath)
            for entry in [*dirnames, *filenames]:
                st = (here / entry).lstat()
                rel = (here / entry).relative_to(base).as_posix()
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafePathError(
                        f"{rel!r} in {base} is a symlink; refusing to follow it", artifact=label
                    )
                if stat.S_ISREG(st.st_mode):
                    files[rel] = here / entry
                elif not stat.S_ISDIR(st.st_mode):
                    raise UnsafePathError(
                        f"{rel!r} in {base} is not a regular file", artifact=label
                    )
        return self.publish(
            entity=entity,
            project=project,
            name=name,
            type=type,
            files=files,
            description=description,
            metadata=metadata,
            aliases=aliases,
            run_id=run_id,
        )

    def _copy_all(
        self, staging: Path, plan: list[tuple[str, Path]], label: str
    ) -> dict[str, FileEntry]:
        entries: dict[str, FileEntry] = {}
        folders: set[Path] = {staging}
        for rel, source in plan:
            target = staging / rel
            if target.parent not in folders:
                target.parent.mkdir(parents=True, exist_ok=True)
                folders.update(p for p in target.parents if p == staging or staging in p.parents)
            entries[rel] = self._copy_one(source, target, rel, label)
        # make the new folder entries durable, deepest first
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(folder)
        return entries

    _copy_one = staticmethod(copy_one)  # class attributes: the crash tests wrap them
    _check_staged = staticmethod(check_staged)

    def _commit(
        self,
        staging: Path,
        *,
        entity: str,
        project: str,
        name: str,
        type: str,
        entries: dict[str, FileEntry],
        description: str | None,
        metadata_json: str,
        aliases: list[str],
        run_id: str | None,
        label: str,
        checked: CheckedStaging | None = None,
        barrier: Callable[[], None] | None = None,
    ) -> ArtifactVersion:
        """Number, rename and index commit of one version, under the store lock.

        ``checked`` (a publish by move): its files (but the large ones, already flushed by
        ``check_staged``) and folders are flushed after the rename,
        together with the folder renamed into and ``barrier`` (the ledger's ``durable()``), in
        one round; only then does the index commit make the version visible. The folder is
        in ``artifacts/`` before it is durable, but nothing names it: a crash leaves it with
        its ``pending`` row (undone by ``_recover_pending``) or, after a power cut, with no row
        (an orphan no reader sees, removed by the next publish of that number)."""
        files_json = json.dumps(
            {p: [e.size, e.sha256, e.digest_kind] for p, e in entries.items()},
            sort_keys=True,
            ensure_ascii=False,
        )
        with self._locked(), self._index.connect() as conn:
            art = self._index.artifact_row(conn, entity, project, name)
            if art is not None:
                check_type(label, art[1], type)
                number = conn.execute(
                    "SELECT coalesce(max(number) + 1, 0) FROM versions WHERE artifact_id = ?",
                    (art[0],),
                ).fetchone()[0]
            else:
                number = 0
            self._recover_pending(conn)
            target = self._version_dir(entity, project, name, number)
            self._make_parents(target.parent)
            if os.path.lexists(target):
                self._recovery().discard_orphan(conn, entity, project, name, number, target)
            # Intent first, so a crash between the rename and the commit is undone by the next
            # process that opens the store (_recover_pending). Not fsynced on its own: a process
            # crash keeps it, the final commit below fsyncs it; a power cut before that may lose
            # it with the version, leaving a folder no row names, which readers never see and
            # the next publish of this number removes (_discard_orphan).
            with self._index.transaction(conn, durable=False):
                pending_id = conn.execute(
                    "INSERT INTO pending (entity, project, name, number, started_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (entity, project, name, number, _now()),
                ).lastrowid
            committed = False
            ours = os.lstat(staging)  # the folder a failure takes back out: ours, no other
            try:
                try:
                    os.rename(staging, target)
                except OSError as exc:
                    raise StoreError(
                        f"cannot move the new version into {target}: {exc}",
                        artifact=label,
                        version=f"v{number}",
                    ) from exc
                if checked is None:
                    fsync_dir(target.parent)
                else:  # files, folders, the rename and the ledger rows: one round, then commit
                    parent_fd = os.open(target.parent, _DIR_FLAGS)
                    try:
                        checked.flush([parent_fd], () if barrier is None else (barrier,))
                    finally:
                        os.close(parent_fd)
                created_at = _now()
                with self._index.transaction(conn):
                    conn.execute("DELETE FROM pending WHERE id = ?", (pending_id,))
                    self._write_rows(
                        conn,
                        art_id=None if art is None else art[0],
                        entity=entity,
                        project=project,
                        name=name,
                        type=type,
                        number=number,
                        description=description,
                        metadata_json=metadata_json,
                        created_at=created_at,
                        run_id=run_id,
                        files_json=files_json,
                        aliases=aliases,
                    )
                committed = True
            finally:
                if not committed:  # take the folder back out so the index never lags behind it
                    with contextlib.suppress(StoreError, UnsafePathError, sqlite3.Error):
                        # only our own: a rename that failed onto something else (or a folder
                        # another publisher put there, the store lock bypassed) is not ours
                        if _same_entry(target, ours):
                            self._recovery().discard_folder(target)
                        conn.execute("DELETE FROM pending WHERE id = ?", (pending_id,))
        return ArtifactVersion(
            entity=entity,
            project=project,
            name=name,
            version=number,
            type=type,
            description=description,
            metadata=json.loads(metadata_json),
            aliases=tuple(sorted(aliases)),
            files=dict(sorted(entries.items())),
            created_at=datetime.fromisoformat(created_at),
            created_by_run=run_id,
            root=target,
            extra={"store": "local"},
        )

    def _write_rows(self, conn: sqlite3.Connection, **rows: Any) -> None:
        """All index rows of one new version; called inside the publish transaction."""
        self._index.write_rows(conn, **rows)

    def _make_parents(self, folder: Path) -> None:
        """Create ``artifacts/<entity>/<project>/<name>`` durably."""
        missing: list[Path] = []
        probe = folder
        while not probe.exists() and probe != self._artifacts:
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            fsync_dir(path.parent)

    def _recovery(self) -> Recovery:
        # built per use: a Recovery kept on the store would hold a bound method of the store
        # (a reference cycle keeps a dropped store, and its index connections, until a GC)
        return Recovery(self._index, self._artifacts, self._staging, self._version_dir)

    def _recover_pending(self, conn: sqlite3.Connection) -> None:
        """Undo publishes that died between their rename and their commit (``Recovery``)."""
        self._recovery().pending(conn)

    # --- reading -------------------------------------------------------------------------------

    def resolve(
        self,
        entity: str,
        project: str,
        name: str,
        *,
        version: int | str | None = None,
        alias: str | None = None,
    ) -> ArtifactVersion:
        """One version by number (``3`` or ``"v3"``) or alias (default ``latest``)."""
        check_name_part(entity, "entity")
        check_name_part(project, "project")
        check_artifact_name(name)
        label = artifact_label(entity, project, name)
        if version is not None and alias is not None:
            raise ConfigurationError(
                f"both version {version!r} and alias {alias!r} were given; give one of them",
                artifact=label,
            )
        if version is not None:
            number: int | None = parse_version(version, label)
            where = f"{label}:v{number}"
        else:
            alias = check_alias(alias if alias is not None else LATEST)
            number = None
            where = f"{label}:{alias}"
        with self._index.connect() as conn:
            art_id, _ = self._index.require_artifact(conn, entity, project, name, where)
            if number is None:
                row = conn.execute(
                    "SELECT number FROM aliases WHERE artifact_id = ? AND alias = ?",
                    (art_id, alias),
                ).fetchone()
                found = (
                    None
                    if row is None
                    else self._index.load_version(
                        conn,
                        art_id,
                        check_number(
                            row[0],
                            RowIdentity(entity, project, name, row[0]),
                            f"version number of alias {alias!r}",
                        ),
                    )
                )
                what = f"alias {alias!r}"
            else:
                found = self._index.load_version(conn, art_id, number)
                what = f"version v{number}"
            if found is None:
                raise ArtifactNotFoundError(
                    f"no {what} of {label} in the local store {self.root}; "
                    + self._index.available(conn, art_id),
                    artifact=where,
                )
            return found

    def aliases(self, entity: str, project: str, name: str) -> dict[str, int]:
        """Every alias of an artifact and the version number it names."""
        check_name_part(entity, "entity")
        check_name_part(project, "project")
        check_artifact_name(name)
        label = artifact_label(entity, project, name)
        with self._index.connect() as conn:
            art_id, _ = self._index.require_artifact(conn, entity, project, name, label)
            rows = conn.execute(
                "SELECT alias, number FROM aliases WHERE artifact_id = ? ORDER BY alias", (art_id,)
            ).fetchall()
        out: dict[str, int] = {}
        for a, n in rows:  # index data: a malformed alias row is refused, not coerced
            ident = RowIdentity(entity, project, name, n)
            if not isinstance(a, str):
                raise ident.error(f"an alias is {type(a).__name__}, not text")
            out[a] = check_number(n, ident, f"version number of alias {a[:80]!r}")
        return out

    def list_versions(
        self, *, entity: str | None = None, project: str | None = None, name: str | None = None
    ) -> Iterator[ArtifactVersion]:
        """Every version (optionally filtered), ordered by entity, project, name, number.

        One query; the file system is not touched. A malformed index row raises its
        ``VersionRowError`` (``scan_versions`` lists past it)."""
        for item in self.scan_versions(entity=entity, project=project, name=name):
            if isinstance(item, VersionRowError):
                raise item
            yield item

    def scan_versions(
        self, *, entity: str | None = None, project: str | None = None, name: str | None = None
    ) -> Iterator[ArtifactVersion | VersionRowError]:
        """Like ``list_versions``, with each malformed index row given as its
        ``VersionRowError`` in its place (see ``base.scan_versions``)."""
        filters: list[tuple[str, str]] = []
        for column, value, what in (
            ("a.entity", entity, "entity"),
            ("a.project", project, "project"),
            ("a.name", name, "artifact name"),
        ):
            if value is not None:
                check_name_part(value, what)
                filters.append((column, value))
        for row in self._index.version_rows(filters):
            item: ArtifactVersion | VersionRowError
            try:
                item = self._index.to_version(row)
            except VersionRowError as exc:
                item = exc
            yield item

    def list_manifests(
        self, *, entity: str, project: str, name: str, relpath: str, max_bytes: int
    ) -> Iterator[ManifestItem]:
        """``base.ArtifactStore.list_manifests``: one index query for identities and types
        only (malformed rows skipped), then each version's file opened below the artifact
        folder, following no symlink. The versions are stubs (``scan_stub_from_row``)."""
        base = version_folder(self._artifacts, entity, project, name, 0).parent
        versions = []
        for row in self._index.identity_rows(entity, project, name):
            with contextlib.suppress(VersionRowError, ValueError):
                versions.append(scan_stub_from_row(row, base))
        yield from read_in_versions(
            self._artifacts, (entity, project, name), versions, relpath, max_bytes
        )

    def move_alias(
        self, entity: str, project: str, name: str, alias: str, version: int | str
    ) -> ArtifactVersion:
        """Point ``alias`` (``latest`` included) at an existing version; returns that version.

        This is an operator's tool; readers detect an unexpected move of an alias (a rollback)
        with the ledger, not here."""
        check_name_part(entity, "entity")
        check_name_part(project, "project")
        check_artifact_name(name)
        label = artifact_label(entity, project, name)
        check_alias(alias)
        number = parse_version(version, label)
        where = f"{label}:v{number}"
        with self._index.connect() as conn:
            with self._index.transaction(conn):
                art_id, _ = self._index.require_artifact(conn, entity, project, name, where)
                exists = conn.execute(
                    "SELECT 1 FROM versions WHERE artifact_id = ? AND number = ?",
                    (art_id, number),
                ).fetchone()
                if exists is None:
                    raise ArtifactNotFoundError(
                        f"cannot move alias {alias!r}: {where} does not exist; "
                        + self._index.available(conn, art_id),
                        artifact=where,
                    )
                conn.execute(
                    "INSERT INTO aliases (artifact_id, alias, number) VALUES (?, ?, ?) "
                    "ON CONFLICT (artifact_id, alias) DO UPDATE SET number = excluded.number",
                    (art_id, alias, number),
                )
            found = self._index.load_version(conn, art_id, number)
        assert found is not None
        return found

    def record_use(self, av: ArtifactVersion, run_id: str | None) -> None:
        """Lineage: run ``run_id`` read ``av`` (recorded once per run; ``None`` records nothing)."""
        if run_id is None:
            return
        try:
            check_run_id(run_id)
        except ConfigurationError as exc:
            raise exc.with_location(artifact=av.qualified_name) from None
        # Lineage is a record, not the store's integrity: a power cut may lose the last reads
        with self._index.connect() as conn, self._index.transaction(conn, durable=False):
            art_id = self._index.version_key(conn, av)
            conn.execute(
                "INSERT OR IGNORE INTO lineage (artifact_id, number, run_id, direction, at) "
                "VALUES (?, ?, ?, 'read', ?)",
                (art_id, av.version, run_id, _now()),
            )

    def lineage(self, av: ArtifactVersion) -> Lineage:
        """The run that wrote ``av`` and the runs that read it (first read first)."""
        with self._index.connect() as conn:
            art_id = self._index.version_key(conn, av)
            rows = conn.execute(
                "SELECT run_id, direction FROM lineage WHERE artifact_id = ? AND number = ? "
                "ORDER BY id",
                (art_id, av.version),
            ).fetchall()
        writer = next((r for r, d in rows if d == "write"), None)
        return Lineage(writer=writer, readers=tuple(r for r, d in rows if d == "read"))

    # --- files of a version ----------------------------------------------------------------

    def _root_of(self, av: ArtifactVersion) -> Path:
        """The version folder, computed from the store layout (``av.root`` is not trusted)."""
        check_name_part(av.entity, "entity")
        check_name_part(av.project, "project")
        check_artifact_name(av.name)
        number = parse_version(av.version, av.name)
        try:
            return self._version_dir(av.entity, av.project, av.name, number)
        except UnsafePathError as exc:
            raise exc.with_location(artifact=av.qualified_name) from None

    def open_file(self, av: ArtifactVersion, relpath: str) -> BinaryIO:
        """Open one file of a version for reading. Refuses unsafe names, symlinks anywhere on
        the path inside the version folder, and non-regular files (typed errors)."""
        fd, _ = open_in_version(self._root_of(av), relpath, av.qualified_name)
        return os.fdopen(fd, "rb")

    def file_path(self, av: ArtifactVersion, relpath: str) -> Path:
        """The path of one file of a version, after the same checks as ``open_file``."""
        return self.file_paths(av, [relpath])[relpath]

    def file_paths(self, av: ArtifactVersion, relpaths: Iterable[str]) -> dict[str, Path]:
        """``file_path`` of several files of one version, its folder resolved once (a reader's
        ``files_on_disk`` asks for every file of the version it just listed): each file is
        still opened by the ``O_NOFOLLOW`` descriptor walk below that folder."""
        return _paths_below(self._root_of(av), relpaths, av.qualified_name)

    def list_files_with_paths(
        self, av: ArtifactVersion
    ) -> tuple[list[DiskEntry], Callable[[Iterable[str]], dict[str, Path]]]:
        """``list_files`` and ``file_paths`` of one version with its folder resolved once for
        both (a reader's ``files_on_disk``: it lists, checks the listing, then asks for the
        paths of every file listed). The paths function still opens each file by the
        ``O_NOFOLLOW`` descriptor walk below that folder."""
        root, label = self._root_of(av), av.qualified_name
        return list_version(root, label), lambda relpaths: _paths_below(root, relpaths, label)

    def list_files(self, av: ArtifactVersion) -> list[DiskEntry]:
        """What is actually on disk in the version folder, sorted by path, following nothing.

        Symlinks and special files are reported (not skipped) so the verifier can refuse them,
        and files planted after publishing show up; directories themselves are not listed."""
        return list_version(self._root_of(av), av.qualified_name)

    def list_files_of(self, versions: Iterable[ArtifactVersion]) -> Iterator[FolderListing]:
        """``list_files`` of many versions (the audit), resolving no path per version: each
        folder opened below the artifacts folder (resolved once) following no symlink, one
        artifact folder descriptor for consecutive versions (``local_files.list_versions_below``)."""
        return list_versions_below(self._resolved_artifacts(), versions)


def _paths_below(root: Path, relpaths: Iterable[str], label: str) -> dict[str, Path]:
    """The path of each file of ``relpaths`` in the version folder ``root``, each checked by
    opening it with the ``O_NOFOLLOW`` descriptor walk (``open_in_version``)."""
    out: dict[str, Path] = {}
    for rel in relpaths:
        fd, path = open_in_version(root, rel, label)
        os.close(fd)
        out[rel] = path
    return out
