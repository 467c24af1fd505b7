"""What every artifact store offers the Dagster layer and the CLI.

A store holds artifact *versions* with W&B semantics: ``entity/project/name:vN``, immutable once
published, with aliases (``latest`` always points at the newest), a type, a description, metadata,
several files per version, and lineage (which Dagster run wrote or read a version).

Stores move bytes; they do not decide whether bytes are trustworthy. Verification is done by the
layer above with the core (envelopes and signed manifests) on the files a store hands out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ..core.errors import ConfigurationError, SecureArtifactError

# W&B artifact names: letters, digits, dashes, underscores and dots.
ARTIFACT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
ALIAS_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class ArtifactNotFoundError(SecureArtifactError):
    """No such artifact, version or alias in the store."""

    default_hint = "check the name, version and alias; `dagster-wandb-secure audit` lists what exists"


class StoreError(SecureArtifactError):
    """The store could not complete an operation (I/O, invalid name, bad file path)."""

    default_hint = "check the store directory and the artifact configuration"


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


@dataclass(frozen=True)
class FileEntry:
    """One file of a version, as the store recorded it at publish time (not a trust statement)."""

    path: str  # POSIX relative path inside the version, validated
    size: int
    sha256: str


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
        """Publish a new immutable version atomically; ``latest`` moves to it."""
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

    def record_use(self, av: ArtifactVersion, run_id: str | None) -> None:
        """Lineage: a Dagster run read this version."""
        ...
