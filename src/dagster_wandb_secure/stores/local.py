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

Index tables (schema version in ``PRAGMA user_version``):

- ``artifacts(id, entity, project, name, type, created_at)``, unique ``(entity, project, name)``;
  the type of a name never changes.
- ``versions(artifact_id, number, description, metadata, created_at, created_by_run, files)``;
  ``metadata`` is a JSON object, ``files`` a JSON object ``{relpath: [size, sha256]}`` recorded
  while copying (a record of what was stored, not a trust statement).
- ``aliases(artifact_id, alias, number)``, unique ``(artifact_id, alias)``: an alias names one
  version; publishing moves ``latest`` (and any alias given) to the new version.
- ``lineage(id, artifact_id, number, run_id, direction, at)``: ``direction`` is ``write`` (the
  run that published the version) or ``read`` (runs that used it).
- ``pending(id, entity, project, name, number, started_at)``: the intent of a publish that is
  moving its folder into place; empty whenever no publish is in its final step.

Publishing a version:

1. Validate every name, alias and relative file name, before touching the disk.
2. Copy each source into a fresh ``staging/<id>/`` folder (streamed in 1 MiB chunks, SHA-256
   computed while copying, sources opened without following symlinks), fsync every file and
   folder. The publisher holds an ``flock`` on its staging folder while it works.
3. Under ``publish.lock``: allocate the next number (``max + 1``, per artifact), commit a
   ``pending`` row, rename the staging folder to ``v<N>`` (never over a version the index
   knows), fsync the parent, then insert the version, alias and lineage rows and delete the
   ``pending`` row in one SQLite transaction.

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
import errno
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

from ..core.errors import ConfigurationError, SecureArtifactError, UnsafePathError
from ..core.fsutil import InterProcessLock, fsync_dir, open_no_follow, resolve_inside, safe_relpath
from .base import (
    ARTIFACT_NAME_RE,
    ArtifactNotFoundError,
    ArtifactVersion,
    FileEntry,
    StoreError,
    check_alias,
    check_artifact_name,
)

try:  # POSIX only; without it stale staging folders are judged by age alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["DiskEntry", "Lineage", "LocalArtifactStore"]

INDEX_NAME = "index.sqlite3"
LOCK_NAME = "publish.lock"
STAGING_DIR = "staging"
ARTIFACTS_DIR = "artifacts"
SCHEMA_VERSION = 1
LATEST = "latest"
COPY_CHUNK = 1 << 20
DEFAULT_STAGING_MAX_AGE = 15 * 60.0
BUSY_TIMEOUT_S = 30.0
MAX_FILES_PER_VERSION = 100_000
MAX_LISTED_ENTRIES = 100_000
MAX_VERSION_NUMBER = 2**62
MAX_RUN_ID_CHARS = 256
_NOT_FOUND_CAP = 20

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS artifacts (
        id INTEGER PRIMARY KEY,
        entity TEXT NOT NULL, project TEXT NOT NULL, name TEXT NOT NULL,
        type TEXT NOT NULL, created_at TEXT NOT NULL,
        UNIQUE (entity, project, name))""",
    """CREATE TABLE IF NOT EXISTS versions (
        artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
        number INTEGER NOT NULL CHECK (number >= 0),
        description TEXT, metadata TEXT NOT NULL, created_at TEXT NOT NULL,
        created_by_run TEXT, files TEXT NOT NULL,
        PRIMARY KEY (artifact_id, number)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS aliases (
        artifact_id INTEGER NOT NULL, alias TEXT NOT NULL, number INTEGER NOT NULL,
        PRIMARY KEY (artifact_id, alias),
        FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number))""",
    "CREATE INDEX IF NOT EXISTS aliases_by_version ON aliases(artifact_id, number)",
    """CREATE TABLE IF NOT EXISTS lineage (
        id INTEGER PRIMARY KEY,
        artifact_id INTEGER NOT NULL, number INTEGER NOT NULL, run_id TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('write', 'read')), at TEXT NOT NULL,
        UNIQUE (artifact_id, number, run_id, direction),
        FOREIGN KEY (artifact_id, number) REFERENCES versions(artifact_id, number))""",
    """CREATE TABLE IF NOT EXISTS pending (
        id INTEGER PRIMARY KEY,
        entity TEXT NOT NULL, project TEXT NOT NULL, name TEXT NOT NULL,
        number INTEGER NOT NULL, started_at TEXT NOT NULL)""",
)

# One query for any listing: versions with their artifact and their aliases.
_SELECT_VERSIONS = """
    SELECT a.entity, a.project, a.name, a.type, v.number, v.description, v.metadata,
           v.created_at, v.created_by_run, v.files,
           (SELECT group_concat(al.alias, ',') FROM aliases al
             WHERE al.artifact_id = v.artifact_id AND al.number = v.number)
      FROM versions v JOIN artifacts a ON a.id = v.artifact_id
"""


@dataclass(frozen=True)
class DiskEntry:
    """One entry found on disk in a version folder by ``list_files`` (nothing is followed).

    ``kind`` is ``file`` (regular file), ``symlink`` (``link_target`` says where it points) or
    ``other`` (FIFO, socket, device). ``path`` is the POSIX path relative to the version folder;
    a name that is not valid UTF-8 on disk appears with surrogate escapes, which
    ``safe_relpath`` refuses."""

    path: str
    kind: Literal["file", "symlink", "other"]
    size: int
    link_target: str | None = None


def walk_version_folder(
    root: str | Path, *, max_entries: int | None = None, where: str | None = None
) -> list[DiskEntry]:
    """Every entry below ``root``, sorted by path, following no symlink (``list_files`` of both
    stores). Directories are walked, not listed. OSError from the file system propagates; more
    than ``max_entries`` entries (found plus folders still to walk) raises StoreError."""
    found: list[DiskEntry] = []
    stack: list[tuple[str, str]] = [("", str(root))]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                rel = prefix + entry.name
                est = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(est.st_mode):
                    found.append(DiskEntry(rel, "symlink", est.st_size, os.readlink(entry.path)))
                elif stat.S_ISDIR(est.st_mode):
                    stack.append((rel + "/", entry.path))
                elif stat.S_ISREG(est.st_mode):
                    found.append(DiskEntry(rel, "file", est.st_size))
                else:
                    found.append(DiskEntry(rel, "other", 0))
                if max_entries is not None and len(found) + len(stack) > max_entries:
                    raise StoreError(
                        f"the version folder {root} holds more than {max_entries} entries",
                        artifact=where,
                    )
    found.sort(key=lambda e: e.path)
    return found


@dataclass(frozen=True)
class Lineage:
    """Which runs wrote and read one version."""

    writer: str | None
    readers: tuple[str, ...]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_part(value: object, what: str) -> str:
    """Entity, project and type follow the artifact-name rules (they become folder names)."""
    if not isinstance(value, str) or not ARTIFACT_NAME_RE.fullmatch(value) or value in {".", ".."}:
        raise ConfigurationError(
            f"invalid {what} {value!r}: use 1-128 letters, digits, '-', '_' or '.'",
        )
    return value


def _label(entity: str, project: str, name: str) -> str:
    return f"{entity}/{project}/{name}"


def _parse_version(version: int | str, artifact: str) -> int:
    number: int | None = None
    if isinstance(version, int) and not isinstance(version, bool):
        number = version
    elif isinstance(version, str):
        digits = version[1:] if version[:1] == "v" else version
        if digits.isascii() and digits.isdigit() and len(digits) <= 19:
            number = int(digits)
    if number is None or not 0 <= number < MAX_VERSION_NUMBER:
        raise ConfigurationError(
            f"invalid version {version!r}: use a number like 3 or a label like 'v3'",
            artifact=artifact,
        )
    return number


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
        try:
            for folder in (self.root, self._staging, self._artifacts):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the local artifact store at {self.root}: {exc}",
                hint="choose a writable folder for the store",
            ) from exc
        self._lock = InterProcessLock(self.root / LOCK_NAME, timeout=lock_timeout)
        self._local = threading.local()
        self._init_index()

    def __repr__(self) -> str:
        return f"LocalArtifactStore({str(self.root)!r})"

    # --- index plumbing ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection in autocommit mode; SQLite errors become StoreError.

        One connection per thread and process, opened on first use and kept: opening and
        closing one per call cost about a millisecond each, several times per asset."""
        try:
            conn = self._thread_connection()
            yield conn
        except sqlite3.Error as exc:
            raise self._index_error(exc) from exc

    def _thread_connection(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        # a connection inherited across fork() must never be used by the child
        conn = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        local.conn, local.pid = conn, os.getpid()
        return conn

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _index_error(self, exc: sqlite3.Error) -> StoreError:
        return StoreError(
            f"the store index {self.index_path} failed: {exc}",
            hint="check that the store folder is on a local disk and the index is not corrupted "
            "(`sqlite3 index.sqlite3 'PRAGMA integrity_check'`)",
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            with self._lock:
                yield
        except TimeoutError as exc:
            raise StoreError(
                f"timed out waiting for the store lock {self.root / LOCK_NAME}",
                hint="another process is publishing or hung; retry, or stop the stuck process",
            ) from exc

    def _init_index(self) -> None:
        with self._connect() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current == SCHEMA_VERSION:
                if conn.execute("SELECT 1 FROM pending LIMIT 1").fetchone() is None:
                    return
        if current == SCHEMA_VERSION:
            with self._locked(), self._connect() as conn:
                self._recover_pending(conn)
            return
        self._check_schema_version(current)
        with self._locked(), self._connect() as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"the store index {self.index_path} cannot use the WAL journal (got {mode})",
                    hint="put the store on a local file system",
                )
            with self._transaction(conn):
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                self._check_schema_version(current)
                if current == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_schema_version(self, current: int) -> None:
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the store index {self.index_path} has schema version {current}; this release "
                f"reads version {SCHEMA_VERSION}",
                hint="upgrade dagster-wandb-secure to open this store",
            )

    def _artifact_row(
        self, conn: sqlite3.Connection, entity: str, project: str, name: str
    ) -> tuple[int, str] | None:
        row = conn.execute(
            "SELECT id, type FROM artifacts WHERE entity = ? AND project = ? AND name = ?",
            (entity, project, name),
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def _version_dir(self, entity: str, project: str, name: str, number: int) -> Path:
        return self._artifacts / entity / project / name / f"v{number}"

    def _to_version(self, row: Sequence[Any]) -> ArtifactVersion:
        entity, project, name, type_, number, description, metadata, created_at, run, files, al = (
            row
        )
        entries = {
            path: FileEntry(path=path, size=int(size), sha256=str(digest))
            for path, (size, digest) in json.loads(files).items()
        }
        return ArtifactVersion(
            entity=entity,
            project=project,
            name=name,
            version=int(number),
            type=type_,
            description=description,
            metadata=json.loads(metadata),
            aliases=tuple(sorted(al.split(","))) if al else (),
            files=entries,
            created_at=datetime.fromisoformat(created_at),
            created_by_run=run,
            root=self._version_dir(entity, project, name, int(number)),
            extra={"store": "local"},
        )

    def _load_version(
        self, conn: sqlite3.Connection, artifact_id: int, number: int
    ) -> ArtifactVersion | None:
        row = conn.execute(
            _SELECT_VERSIONS + " WHERE v.artifact_id = ? AND v.number = ?", (artifact_id, number)
        ).fetchone()
        return self._to_version(row) if row else None

    def _available(self, conn: sqlite3.Connection, artifact_id: int) -> str:
        numbers = [
            r[0]
            for r in conn.execute(
                "SELECT number FROM versions WHERE artifact_id = ? ORDER BY number DESC LIMIT ?",
                (artifact_id, _NOT_FOUND_CAP + 1),
            )
        ]
        total = conn.execute(
            "SELECT count(*) FROM versions WHERE artifact_id = ?", (artifact_id,)
        ).fetchone()[0]
        aliases = conn.execute(
            "SELECT alias, number FROM aliases WHERE artifact_id = ? ORDER BY alias LIMIT ?",
            (artifact_id, _NOT_FOUND_CAP + 1),
        ).fetchall()
        versions = ", ".join(f"v{n}" for n in numbers[:_NOT_FOUND_CAP])
        if total > _NOT_FOUND_CAP:
            versions += f", ... ({total} versions in all, newest first)"
        alias_text = ", ".join(f"{a}->v{n}" for a, n in aliases[:_NOT_FOUND_CAP])
        if len(aliases) > _NOT_FOUND_CAP:
            alias_text += ", ..."
        return f"available versions: {versions or 'none'}; aliases: {alias_text or 'none'}"

    def _require_artifact(
        self, conn: sqlite3.Connection, entity: str, project: str, name: str, where: str
    ) -> tuple[int, str]:
        art = self._artifact_row(conn, entity, project, name)
        if art is not None:
            return art
        others = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM artifacts WHERE entity = ? AND project = ? ORDER BY name LIMIT ?",
                (entity, project, _NOT_FOUND_CAP + 1),
            )
        ]
        listed = ", ".join(others[:_NOT_FOUND_CAP]) + (
            ", ..." if len(others) > _NOT_FOUND_CAP else ""
        )
        raise ArtifactNotFoundError(
            f"no artifact named {_label(entity, project, name)} in the local store {self.root}; "
            f"artifacts in {entity}/{project}: {listed or 'none'}",
            artifact=where,
        )

    # --- publishing ----------------------------------------------------------------------------

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
    ) -> ArtifactVersion:
        """Publish a new immutable version ``v<N>`` from ``files`` (relpath -> source file).

        ``latest`` and every alias given move to the new version. Atomic: on any failure or
        crash, no part of the version becomes visible."""
        _check_part(entity, "entity")
        _check_part(project, "project")
        check_artifact_name(name)
        label = _label(entity, project, name)
        try:
            _check_part(type, "artifact type")
            alias_list = self._check_aliases(aliases)
            metadata_json = self._encode_metadata(metadata)
            if description is not None and not isinstance(description, str):
                raise ConfigurationError(f"description must be a string, not {description!r}")
            if run_id is not None:
                self._check_run_id(run_id)
            plan = self._plan_files(files)
        except SecureArtifactError as exc:
            raise exc.with_location(artifact=label) from None

        with self._connect() as conn:
            art = self._artifact_row(conn, entity, project, name)
        if art is not None:
            self._check_type(label, art[1], type)

        self._clean_staging()
        staging = self._staging / f"{time.time_ns()}-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            staging.mkdir(mode=0o755)
        except OSError as exc:
            raise StoreError(
                f"cannot create a staging folder in {self._staging}: {exc}", artifact=label
            ) from exc
        try:
            staging_fd = self._hold_staging(staging)
        except OSError:
            staging_fd = None  # no flock: the folder is then protected by its age alone
        try:
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
            )
        except OSError as exc:  # anything not already turned into a typed error above
            raise StoreError(
                f"publishing into the local store {self.root} failed: {exc}",
                artifact=label,
                hint="check disk space and permissions of the store folder",
            ) from exc
        finally:
            if staging_fd is not None:
                os.close(staging_fd)
            if os.path.lexists(staging):  # still there: the publish failed before the rename
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
        label = _label(entity, project, name)
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

    @staticmethod
    def _check_aliases(aliases: Sequence[str]) -> list[str]:
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

    @staticmethod
    def _check_run_id(run_id: object) -> str:
        if (
            not isinstance(run_id, str)
            or not run_id
            or len(run_id) > MAX_RUN_ID_CHARS
            or any(ord(c) < 0x20 or c == "\x7f" for c in run_id)
        ):
            raise ConfigurationError(
                f"invalid run id {run_id!r}: use 1-{MAX_RUN_ID_CHARS} printable characters"
            )
        return run_id

    @staticmethod
    def _encode_metadata(metadata: Mapping[str, Any] | None) -> str:
        if metadata is None:
            return "{}"
        if not isinstance(metadata, Mapping):
            raise ConfigurationError(f"metadata must be a mapping, not {type(metadata).__name__}")
        try:
            return json.dumps(dict(metadata), sort_keys=True, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"metadata is not JSON-serializable: {exc}",
                hint="metadata values must be strings, numbers, booleans, None, lists or dicts",
            ) from exc

    def _check_type(self, label: str, existing: str, wanted: str) -> None:
        if existing != wanted:
            raise StoreError(
                f"artifact {label} has type {existing!r}; a version of type {wanted!r} cannot "
                "be added to it (an artifact's type never changes)",
                artifact=label,
                hint=f"use type {existing!r} or publish under another artifact name",
            )

    @staticmethod
    def _plan_files(files: Mapping[Any, Any]) -> list[tuple[str, Path]]:
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

    def _hold_staging(self, staging: Path) -> int | None:
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

    @staticmethod
    def _copy_one(source: Path, target: Path, rel: str, label: str) -> FileEntry:
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
    ) -> ArtifactVersion:
        files_json = json.dumps(
            {p: [e.size, e.sha256] for p, e in entries.items()}, sort_keys=True, ensure_ascii=False
        )
        with self._locked(), self._connect() as conn:
            art = self._artifact_row(conn, entity, project, name)
            if art is not None:
                self._check_type(label, art[1], type)
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
                self._discard_orphan(conn, entity, project, name, number, target)
            # Durable intent first, so a crash between the rename and the commit is undone by
            # the next process that opens the store (see _recover_pending).
            with self._transaction(conn):
                pending_id = conn.execute(
                    "INSERT INTO pending (entity, project, name, number, started_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (entity, project, name, number, _now()),
                ).lastrowid
            committed = False
            try:
                try:
                    os.rename(staging, target)
                except OSError as exc:
                    raise StoreError(
                        f"cannot move the new version into {target}: {exc}",
                        artifact=label,
                        version=f"v{number}",
                    ) from exc
                fsync_dir(target.parent)
                created_at = _now()
                with self._transaction(conn):
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
                    with contextlib.suppress(StoreError, sqlite3.Error):
                        if os.path.lexists(target):
                            self._discard_folder(target)
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

    def _write_rows(
        self,
        conn: sqlite3.Connection,
        *,
        art_id: int | None,
        entity: str,
        project: str,
        name: str,
        type: str,
        number: int,
        description: str | None,
        metadata_json: str,
        created_at: str,
        run_id: str | None,
        files_json: str,
        aliases: list[str],
    ) -> None:
        """All index rows of one new version; called inside the publish transaction."""
        if art_id is None:
            cur = conn.execute(
                "INSERT INTO artifacts (entity, project, name, type, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (entity, project, name, type, created_at),
            )
            art_id = int(cur.lastrowid or 0)
        conn.execute(
            "INSERT INTO versions (artifact_id, number, description, metadata, created_at, "
            "created_by_run, files) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (art_id, number, description, metadata_json, created_at, run_id, files_json),
        )
        conn.executemany(
            "INSERT INTO aliases (artifact_id, alias, number) VALUES (?, ?, ?) "
            "ON CONFLICT (artifact_id, alias) DO UPDATE SET number = excluded.number",
            [(art_id, alias, number) for alias in aliases],
        )
        if run_id is not None:
            conn.execute(
                "INSERT OR IGNORE INTO lineage (artifact_id, number, run_id, direction, at) "
                "VALUES (?, ?, ?, 'write', ?)",
                (art_id, number, run_id, created_at),
            )

    def _recover_pending(self, conn: sqlite3.Connection) -> None:
        """Undo publishes that died between their rename and their commit. Call under the lock:
        then every pending row belongs to a publisher that is gone."""
        rows = conn.execute("SELECT id, entity, project, name, number FROM pending").fetchall()
        for pending_id, entity, project, name, number in rows:
            target = self._version_dir(entity, project, name, number)
            art = self._artifact_row(conn, entity, project, name)
            indexed = (
                art is not None
                and conn.execute(
                    "SELECT 1 FROM versions WHERE artifact_id = ? AND number = ?", (art[0], number)
                ).fetchone()
            )
            if not indexed and os.path.lexists(target):
                with contextlib.suppress(StoreError):  # a case collision: leave the folder be
                    self._discard_orphan(conn, entity, project, name, number, target)
            with self._transaction(conn):
                conn.execute("DELETE FROM pending WHERE id = ?", (pending_id,))

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

    def _discard_orphan(
        self,
        conn: sqlite3.Connection,
        entity: str,
        project: str,
        name: str,
        number: int,
        target: Path,
    ) -> None:
        """``target`` exists but the index has no such version: a publish crashed after its
        rename. Refuse if the folder is really another artifact's (a case-insensitive file
        system folding two names together); otherwise remove it."""
        for other in conn.execute(
            "SELECT a.entity, a.project, a.name FROM versions v JOIN artifacts a "
            "ON a.id = v.artifact_id WHERE lower(a.entity) = lower(?) AND lower(a.project) = "
            "lower(?) AND lower(a.name) = lower(?) AND v.number = ?",
            (entity, project, name, number),
        ).fetchall():
            other_dir = self._version_dir(other[0], other[1], other[2], number)
            with contextlib.suppress(OSError):
                if os.path.samefile(other_dir, target):
                    raise StoreError(
                        f"the folder {target} already holds {_label(*other)}:v{number}; names "
                        "that differ only in case collide on this file system",
                        artifact=_label(entity, project, name),
                        hint="use an artifact name that differs by more than letter case",
                    )
        self._discard_folder(target)

    def _discard_folder(self, folder: Path) -> None:
        trash = self._staging / f"discard-{time.time_ns()}-{secrets.token_hex(6)}"
        try:
            os.rename(folder, trash)
            fsync_dir(folder.parent)
        except OSError as exc:
            raise StoreError(f"cannot remove the unindexed folder {folder}: {exc}") from exc
        if os.path.isdir(trash) and not os.path.islink(trash):
            shutil.rmtree(trash, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(trash)

    def _clean_staging(self) -> None:
        """Remove staging folders left by crashed publishes (old enough and not locked)."""
        cutoff = time.time() - self.staging_max_age
        try:
            entries = list(os.scandir(self._staging))
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
        _check_part(entity, "entity")
        _check_part(project, "project")
        check_artifact_name(name)
        label = _label(entity, project, name)
        if version is not None and alias is not None:
            raise ConfigurationError(
                f"both version {version!r} and alias {alias!r} were given; give one of them",
                artifact=label,
            )
        if version is not None:
            number: int | None = _parse_version(version, label)
            where = f"{label}:v{number}"
        else:
            alias = check_alias(alias if alias is not None else LATEST)
            number = None
            where = f"{label}:{alias}"
        with self._connect() as conn:
            art_id, _ = self._require_artifact(conn, entity, project, name, where)
            if number is None:
                row = conn.execute(
                    "SELECT number FROM aliases WHERE artifact_id = ? AND alias = ?",
                    (art_id, alias),
                ).fetchone()
                found = None if row is None else self._load_version(conn, art_id, int(row[0]))
                what = f"alias {alias!r}"
            else:
                found = self._load_version(conn, art_id, number)
                what = f"version v{number}"
            if found is None:
                raise ArtifactNotFoundError(
                    f"no {what} of {label} in the local store {self.root}; "
                    + self._available(conn, art_id),
                    artifact=where,
                )
            return found

    def aliases(self, entity: str, project: str, name: str) -> dict[str, int]:
        """Every alias of an artifact and the version number it names."""
        _check_part(entity, "entity")
        _check_part(project, "project")
        check_artifact_name(name)
        label = _label(entity, project, name)
        with self._connect() as conn:
            art_id, _ = self._require_artifact(conn, entity, project, name, label)
            rows = conn.execute(
                "SELECT alias, number FROM aliases WHERE artifact_id = ? ORDER BY alias", (art_id,)
            ).fetchall()
        return {str(a): int(n) for a, n in rows}

    def list_versions(
        self, *, entity: str | None = None, project: str | None = None, name: str | None = None
    ) -> Iterator[ArtifactVersion]:
        """Every version (optionally filtered), ordered by entity, project, name, number.

        One query; the file system is not touched."""
        clauses: list[str] = []
        params: list[str] = []
        for column, value, what in (
            ("a.entity", entity, "entity"),
            ("a.project", project, "project"),
            ("a.name", name, "artifact name"),
        ):
            if value is not None:
                _check_part(value, what)
                clauses.append(f"{column} = ?")
                params.append(value)
        sql = _SELECT_VERSIONS
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY a.entity, a.project, a.name, v.number"
        with self._connect() as conn:
            rows = conn.execute(sql, params).fetchall()
        for row in rows:
            yield self._to_version(row)

    def move_alias(
        self, entity: str, project: str, name: str, alias: str, version: int | str
    ) -> ArtifactVersion:
        """Point ``alias`` (``latest`` included) at an existing version; returns that version.

        This is an operator's tool; readers detect an unexpected move of an alias (a rollback)
        with the ledger, not here."""
        _check_part(entity, "entity")
        _check_part(project, "project")
        check_artifact_name(name)
        label = _label(entity, project, name)
        check_alias(alias)
        number = _parse_version(version, label)
        where = f"{label}:v{number}"
        with self._connect() as conn:
            with self._transaction(conn):
                art_id, _ = self._require_artifact(conn, entity, project, name, where)
                exists = conn.execute(
                    "SELECT 1 FROM versions WHERE artifact_id = ? AND number = ?",
                    (art_id, number),
                ).fetchone()
                if exists is None:
                    raise ArtifactNotFoundError(
                        f"cannot move alias {alias!r}: {where} does not exist; "
                        + self._available(conn, art_id),
                        artifact=where,
                    )
                conn.execute(
                    "INSERT INTO aliases (artifact_id, alias, number) VALUES (?, ?, ?) "
                    "ON CONFLICT (artifact_id, alias) DO UPDATE SET number = excluded.number",
                    (art_id, alias, number),
                )
            found = self._load_version(conn, art_id, number)
        assert found is not None
        return found

    def _version_key(self, conn: sqlite3.Connection, av: ArtifactVersion) -> int:
        where = av.qualified_name
        art_id, _ = self._require_artifact(conn, av.entity, av.project, av.name, where)
        row = conn.execute(
            "SELECT 1 FROM versions WHERE artifact_id = ? AND number = ?", (art_id, av.version)
        ).fetchone()
        if row is None:
            raise ArtifactNotFoundError(
                f"{where} is not in the local store {self.root}; " + self._available(conn, art_id),
                artifact=where,
            )
        return art_id

    def record_use(self, av: ArtifactVersion, run_id: str | None) -> None:
        """Lineage: run ``run_id`` read ``av`` (recorded once per run; ``None`` records nothing)."""
        if run_id is None:
            return
        try:
            self._check_run_id(run_id)
        except ConfigurationError as exc:
            raise exc.with_location(artifact=av.qualified_name) from None
        with self._connect() as conn:
            # Lineage is a record, not the store's integrity: WAL with synchronous=NORMAL keeps
            # it crash-consistent (a power cut may lose the last reads), without an fsync per
            # input load. Publishing stays at FULL.
            conn.execute("PRAGMA synchronous = NORMAL")
            try:
                with self._transaction(conn):
                    art_id = self._version_key(conn, av)
                    conn.execute(
                        "INSERT OR IGNORE INTO lineage (artifact_id, number, run_id, direction, "
                        "at) VALUES (?, ?, ?, 'read', ?)",
                        (art_id, av.version, run_id, _now()),
                    )
            finally:
                conn.execute("PRAGMA synchronous = FULL")

    def lineage(self, av: ArtifactVersion) -> Lineage:
        """The run that wrote ``av`` and the runs that read it (first read first)."""
        with self._connect() as conn:
            art_id = self._version_key(conn, av)
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
        _check_part(av.entity, "entity")
        _check_part(av.project, "project")
        check_artifact_name(av.name)
        return self._version_dir(
            av.entity, av.project, av.name, _parse_version(av.version, av.name)
        )

    def _open_fd(self, av: ArtifactVersion, relpath: str) -> tuple[int, Path]:
        """Open a file of a version without following any symlink on the way; returns a
        read-only descriptor of a regular file and its path."""
        where = av.qualified_name
        root = self._root_of(av)
        try:
            rel = safe_relpath(relpath)
            resolve_inside(root, rel)
        except UnsafePathError as exc:
            raise exc.with_location(artifact=where) from None
        except OSError as exc:
            raise self._missing_root(av, root, exc) from exc
        parts = rel.split("/")
        dir_flags = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
        try:
            dir_fd = os.open(root, dir_flags)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePathError(
                    f"the version folder {root} is a symlink or not a folder", artifact=where
                ) from exc
            raise self._missing_root(av, root, exc) from exc
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    next_fd = os.open(part, dir_flags, dir_fd=dir_fd)
                except OSError as exc:
                    self._raise_open_error(exc, "/".join(parts[: i + 1]), rel, where, folder=True)
                os.close(dir_fd)
                dir_fd = next_fd
            try:
                fd = os.open(
                    parts[-1], os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK, dir_fd=dir_fd
                )
            except OSError as exc:
                self._raise_open_error(exc, rel, rel, where, folder=False)
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafePathError(f"{rel!r} is not a regular file", artifact=where)
        if _O_NONBLOCK and fcntl is not None:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_NONBLOCK)
        return fd, root / rel

    def _raise_open_error(
        self, exc: OSError, part: str, rel: str, where: str, *, folder: bool
    ) -> None:
        if exc.errno == errno.ELOOP or (folder and exc.errno == errno.ENOTDIR):
            kind = "a symlink or not a folder" if folder else "a symlink"
            raise UnsafePathError(
                f"{part!r} (of {rel!r}) is {kind}; refusing to follow it", artifact=where
            ) from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ArtifactNotFoundError(f"{where} has no file {rel!r}", artifact=where) from exc
        raise StoreError(f"cannot open {rel!r}: {exc.strerror or exc}", artifact=where) from exc

    def _missing_root(self, av: ArtifactVersion, root: Path, exc: OSError) -> StoreError:
        return StoreError(
            f"the folder {root} of this version cannot be opened: {exc.strerror or exc}",
            artifact=av.qualified_name,
            hint="the store folder was changed outside dagster-wandb-secure; re-materialize the "
            "asset or restore the store from a backup",
        )

    def open_file(self, av: ArtifactVersion, relpath: str) -> BinaryIO:
        """Open one file of a version for reading. Refuses unsafe names, symlinks anywhere on
        the path inside the version folder, and non-regular files (typed errors)."""
        fd, _ = self._open_fd(av, relpath)
        return os.fdopen(fd, "rb")

    def file_path(self, av: ArtifactVersion, relpath: str) -> Path:
        """The path of one file of a version, after the same checks as ``open_file``."""
        fd, path = self._open_fd(av, relpath)
        os.close(fd)
        return path

    def list_files(self, av: ArtifactVersion) -> list[DiskEntry]:
        """What is actually on disk in the version folder, sorted by path, following nothing.

        Symlinks and special files are reported (not skipped) so the verifier can refuse them,
        and files planted after publishing show up; directories themselves are not listed."""
        where = av.qualified_name
        root = self._root_of(av)
        try:
            st = os.lstat(root)
        except OSError as exc:
            raise self._missing_root(av, root, exc) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(
                f"the version folder {root} is a symlink or not a folder", artifact=where
            )
        try:
            return walk_version_folder(root, max_entries=MAX_LISTED_ENTRIES, where=where)
        except OSError as exc:
            raise StoreError(f"cannot list {root}: {exc.strerror or exc}", artifact=where) from exc
