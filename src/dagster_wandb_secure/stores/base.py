"""The artifact-store contract: what every store offers the Dagster layer and the CLI.

A store holds artifact *versions* with W&B semantics: ``entity/project/name:vN``, immutable once
published, with aliases (``latest`` always points at the newest), a type, a description, metadata,
several files per version, and lineage (which Dagster run wrote or read a version).

Stores move bytes; they do not decide whether bytes are trustworthy. Verification is done by the
layer above with the core (envelopes and signed manifests) on the files a store hands out.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from ..core.errors import (
    ConfigurationError,
    ResourceLimitError,
    SecureArtifactError,
    UnsafePathError,
)

# W&B artifact names: letters, digits, dashes, underscores and dots.
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
ALIAS_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# a version as a user may name it in the W&B store ("3" or "v3") and as a label ("v3")
VERSION_REF_RE = re.compile(r"^v?(\d{1,9})$")
VERSION_LABEL_RE = re.compile(r"^v(\d{1,9})$")
MAX_VERSION_NUMBER = 2**62


class ArtifactNotFoundError(SecureArtifactError):
    """No such artifact, version or alias in the store."""

    default_hint = "check the name, version and alias; `dagster-wandb-secure audit` lists what exists"


class StoreError(SecureArtifactError):
    """The store could not complete an operation (I/O, invalid name, bad file path)."""

    default_hint = "check the store directory and the artifact configuration"


class VersionRowError(StoreError):
    """One version's record in a store's index is malformed (hostile input): only that version
    is refused. ``entity``, ``project``, ``name`` and ``number`` say which row, as far as it
    could be read (a value that is not valid is shown by its ``repr``)."""

    default_hint = (
        "the store index was changed outside dagster-wandb-secure; re-publish the version or "
        "restore the index from a backup, and run `dagster-wandb-secure audit`"
    )

    def __init__(
        self,
        reason: str,
        *,
        entity: object,
        project: object,
        name: object,
        number: object,
        hint: str | None = None,
    ) -> None:
        self.entity, self.project, self.name = shown(entity), shown(project), shown(name)
        self.version_label = (
            f"v{number}"
            if isinstance(number, int) and not isinstance(number, bool) and number >= 0
            else shown(number)
        )
        super().__init__(
            reason,
            artifact=f"{self.entity}/{self.project}/{self.name}",
            version=self.version_label,
            hint=hint,
        )


def shown(value: object) -> str:
    """A value read from hostile input as it may appear in a message or report: itself if it is
    a valid name, else its (shortened) ``repr``."""
    if isinstance(value, str) and ARTIFACT_NAME_RE.fullmatch(value):
        return value
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_inside(base: Path, path: Path, what: str, *, real_base: Path | None = None) -> Path:
    """``path`` if it resolves (symlinks followed) to ``base`` or below it; an UnsafePathError
    naming ``what`` otherwise. Every path a store derives from its index passes through here before
    anything is opened, moved or deleted. ``real_base``: ``base`` resolved earlier by the caller
    (a store resolves its own folder once); if ``base`` has since been made to lead elsewhere,
    every path below it resolves outside ``real_base`` and is refused, so this is never weaker."""
    real_base = real_base if real_base is not None else base.resolve()
    real = path.resolve()
    if real != real_base and real_base not in real.parents:
        raise UnsafePathError(
            f"{what} leads to {real}, outside the store folder {real_base}; nothing was touched",
            hint="a symlink or a name in the store folder points outside it: the store was "
            "changed outside dagster-wandb-secure; remove the symlink and run "
            "`dagster-wandb-secure audit`",
        )
    return path


def check_artifact_name(name: str) -> str:
    if not isinstance(name, str) or not ARTIFACT_NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise ConfigurationError(
            f"invalid artifact name {name!r}: use 1-128 letters, digits, '-', '_' or '.'",
            artifact=str(name),
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias.startswith("v") and alias[1:].isdigit():
        raise ConfigurationError(
            f"invalid alias {alias!r}: use letters, digits, '-', '_' or '.', and not the form vN",
        )
    return alias


def check_name_part(value: object, what: str, hint: str | None = None) -> str:
    """Entity, project and type follow the artifact-name rules (they become folder names)."""
    if not isinstance(value, str) or not ARTIFACT_NAME_RE.fullmatch(value) or value in {".", ".."}:
        raise ConfigurationError(
            f"invalid {what} {value!r}: use 1-128 letters, digits, '-', '_' or '.'",
            hint=hint,
        )
    return value


# --- version numbers and labels ("v3" <-> 3) -----------------------------------------------------


def parse_version(version: int | str, artifact: str) -> int:
    """The local store's reading of a version a caller names: ``3``, ``"3"`` or ``"v3"``
    (ASCII digits, ``0 <= N < MAX_VERSION_NUMBER``); anything else is a ConfigurationError."""
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


def version_ref_label(version: int | str) -> str:
    """The W&B store's reading of a version a caller names (``3``, ``"3"`` or ``"v3"``, at most
    9 digits in a string), as the label W&B resolves (``"v3"``)."""
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise ConfigurationError(f"invalid version {version!r}: use a number such as 3 or 'v3'")
    if isinstance(version, int):
        if version < 0:
            raise ConfigurationError(f"invalid version {version!r}: versions start at 0")
        return f"v{version}"
    m = VERSION_REF_RE.fullmatch(version)
    if not m:
        raise ConfigurationError(f"invalid version {version!r}: use a number such as 3 or 'v3'")
    return f"v{int(m[1])}"


def parse_version_label(label: str | None, what: str) -> int:
    """The number of a version label a server reported (exactly ``"v<N>"``); StoreError if not."""
    m = VERSION_LABEL_RE.fullmatch(label or "")
    if not m:
        raise StoreError(
            f"W&B reported an unexpected version label {label!r}",
            artifact=what,
            hint="report this; the W&B server answered something the store does not understand",
        )
    return int(m[1])


@dataclass(frozen=True)
class FileEntry:
    """One file of a version, as the store recorded it at publish time (not a trust statement)."""

    path: str  # POSIX relative path inside the version, validated
    size: int
    sha256: str  # the hex digest under ``digest_kind`` (historical name)
    # the manifest field the digest is under (``core/digests.py``): ``sha256`` / ``blake3`` =
    # the whole file, ``envelope_payload_<alg>`` = the signed payload digest of the envelope in
    # the file. Index rows written before the kind was recorded are ``sha256``.
    digest_kind: str = "sha256"


@dataclass(frozen=True)
class StagedDigest:
    """What a publisher computed for one file it wrote into a staging area (in this process,
    while writing it): its size and its digest under a manifest field name (see
    ``FileEntry.digest_kind``). The store records the digest as a hint; it is no trust
    statement (readers verify the signed manifest)."""

    size: int
    digest_kind: str
    digest: str


@dataclass(frozen=True)
class StagingArea:
    """A folder a publisher writes a version's files into, at their relative names.

    ``by_move`` True: the folder is on the store's file system, handed out by the store's
    ``staging_area()``; ``publish(files=..., staged=area, digests=...)`` then publishes it by
    rename (files never copied or re-read). False: a private folder of the publisher's (the
    fallback for stores that cannot move, like the W&B store), published the ordinary way."""

    path: Path
    by_move: bool
    store_root: Path | None = None  # the store that handed it out (``by_move`` only)


@contextlib.contextmanager
def staging_area(store: Any, fallback_parent: Path) -> Iterator[StagingArea]:
    """The staging folder for one publish to ``store``: the store's own (``staging_area()``,
    publish by move) when it offers one, else a fresh private folder under ``fallback_parent``
    (mode 0700), removed afterwards. Either way the folder is gone once the block exits."""
    offer = getattr(store, "staging_area", None)
    if callable(offer):
        with offer() as area:
            yield area
        return
    fallback_parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(prefix="write-", dir=fallback_parent))
    try:
        yield StagingArea(folder, by_move=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class ArtifactVersion:
    entity: str
    project: str
    name: str
    version: int  # N of vN
    type: str
    description: str | None
    metadata: Mapping[str, Any]
    aliases: tuple[str, ...]
    files: Mapping[str, FileEntry]
    created_at: datetime
    created_by_run: str | None
    root: Path  # local folder holding the version's files (read-only by convention)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def version_label(self) -> str:
        return f"v{self.version}"

    @property
    def qualified_name(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}:v{self.version}"


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


def scan_versions(
    store: ArtifactStore,
    *,
    entity: str | None = None,
    project: str | None = None,
    name: str | None = None,
) -> Iterator[ArtifactVersion | VersionRowError]:
    """Every version like ``store.list_versions``, except that a version whose index row is
    malformed comes as its ``VersionRowError`` in its place instead of ending the listing (the
    audit reports it and goes on). Stores without per-row errors simply list."""
    scan = getattr(store, "scan_versions", None)
    if scan is None:
        yield from store.list_versions(entity=entity, project=project, name=name)
    else:
        yield from scan(entity=entity, project=project, name=name)


def read_capped(fh: BinaryIO, max_bytes: int, what: str, where: str | None = None) -> bytes:
    """All of an open file if it holds at most ``max_bytes`` (one byte more is read to see it
    does not); a ResourceLimitError naming ``what`` otherwise.

    The first read asks for the size the file states (``fstat``, a hint only) plus one byte,
    not for ``max_bytes + 1``: a 1 KB manifest under a 64 MiB cap then costs no 64 MiB buffer
    (the writer's head scan reads every version's manifest). A file that grew past its stated
    size is read on, still never past the cap."""
    want = max_bytes + 1
    try:
        stated = os.fstat(fh.fileno()).st_size - fh.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        stated = None
    if stated is not None and 0 <= stated < max_bytes:
        want = stated + 1
    data = fh.read(want)
    if len(data) == want and want <= max_bytes:  # more than it stated: read on, up to the cap
        data += fh.read(max_bytes + 1 - want)
    if len(data) > max_bytes:
        raise ResourceLimitError(f"{what} is larger than {max_bytes} bytes", artifact=where)
    return data


ManifestItem = tuple[ArtifactVersion, bytes | SecureArtifactError]


def list_manifests(
    store: ArtifactStore, *, entity: str, project: str, name: str, relpath: str, max_bytes: int
) -> Iterator[ManifestItem]:
    """Every version of one artifact with the bytes of its file ``relpath`` (its manifest), or
    the typed error that kept them from being read, through the store's ``list_manifests``
    (which never fetches the other files). A store without one lists its versions and opens
    the file with ``open_file``."""
    own = getattr(store, "list_manifests", None)
    if own is not None:
        yield from own(entity=entity, project=project, name=name, relpath=relpath,
                       max_bytes=max_bytes)
        return
    for av in store.list_versions(entity=entity, project=project, name=name):
        try:
            with store.open_file(av, relpath) as fh:
                yield av, read_capped(fh, max_bytes, relpath, av.qualified_name)
        except SecureArtifactError as exc:
            yield av, exc


class ArtifactStore(Protocol):
    """Implemented by LocalArtifactStore and WandbArtifactStore."""

    def publish(
        self,
        *,
        entity: str,
        project: str,
        name: str,
        type: str,
        files: Mapping[str, Path],
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = (),
        run_id: str | None = None,
    ) -> ArtifactVersion:
        """Publish a new immutable version atomically; ``latest`` moves to it.

        A store that can publish by move also offers ``staging_area()`` (a context manager
        giving a ``StagingArea`` with ``by_move=True``) and accepts ``staged=area`` and
        ``digests={relpath: StagedDigest}`` here: every file of ``files`` is then
        ``area.path / relpath``, and the folder becomes the version (by rename) after the
        store checked each staged file against its ``StagedDigest`` size (a regular file,
        one link, no symlink, nothing else in the folder). ``staging_area()`` in this module
        picks the store's area or the fallback."""
        ...

    def resolve(
        self,
        entity: str,
        project: str,
        name: str,
        *,
        version: int | str | None = None,
        alias: str | None = None,
    ) -> ArtifactVersion:
        """Find one version by number (``3`` or ``"v3"``) or alias (default ``latest``)."""
        ...

    def open_file(self, av: ArtifactVersion, relpath: str) -> BinaryIO:
        """Open one file of a version for reading, refusing symlinks and escapes."""
        ...

    def file_path(self, av: ArtifactVersion, relpath: str) -> Path: ...

    def list_versions(
        self, *, entity: str | None = None, project: str | None = None, name: str | None = None
    ) -> Iterator[ArtifactVersion]: ...

    def list_manifests(
        self, *, entity: str, project: str, name: str, relpath: str, max_bytes: int
    ) -> Iterator[ManifestItem]:
        """Every version of one artifact (as ``list_versions``) with the bytes of one small
        file of it, ``relpath`` (the signed manifest), or the typed error (``StoreError``,
        ``UnsafePathError``, ``ResourceLimitError``, ...) that kept them from being read.

        Only that file is fetched: no other file of any version is downloaded or opened
        (the writer's head scan reads every version). It is opened with the checks of
        ``open_file`` (no symlink anywhere inside the store, a regular file) and read up to
        ``max_bytes`` (more is a ``ResourceLimitError`` for that version). The bytes are not
        trusted: the caller verifies them. ``base.list_manifests`` calls this."""
        ...

    def list_files(self, av: ArtifactVersion) -> list[DiskEntry]:
        """What is actually on disk in the version folder, sorted by path, following nothing
        (symlinks and special files are reported so the verifier can refuse them)."""
        ...

    def record_use(self, av: ArtifactVersion, run_id: str | None) -> None:
        """Lineage: a Dagster run read this version."""
        ...
