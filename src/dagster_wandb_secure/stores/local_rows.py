"""The local index's rows read as hostile input: every column is checked before it is used.

Anyone who can write the store folder can edit ``index.sqlite3``, so a row is validated like
any other untrusted bytes: names by the publishing rules (``base.check_name_part`` and
friends), numbers as integers of the right range (not text, not floats, not booleans), JSON
columns by type, size and nesting depth, dates as timezone-aware ISO 8601. A row that fails is
a ``VersionRowError`` for that version only. The same limits are enforced when publishing, so
everything the store writes it can read back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..core.canonical import reject_duplicate_keys
from ..core.digests import ENVELOPE_FIELDS, FILE_FIELDS
from ..core.errors import ConfigurationError, SecureArtifactError
from ..core.fsutil import safe_relpath
from .base import (
    ALIAS_RE,
    ARTIFACT_NAME_RE,
    MAX_VERSION_NUMBER,
    ArtifactVersion,
    FileEntry,
    VersionRowError,
)

__all__ = [
    "DIGEST_KINDS",
    "MAX_ALIASES_PER_VERSION",
    "MAX_DESCRIPTION_CHARS",
    "MAX_FILES_PER_VERSION",
    "MAX_METADATA_CHARS",
    "MAX_METADATA_DEPTH",
    "MAX_RUN_ID_CHARS",
    "RowIdentity",
    "check_metadata_shape",
    "check_number",
    "check_pending_row",
    "scan_stub_from_row",
    "check_run_id",
    "version_from_row",
]

# what a file's digest in the index may be under: the manifest's own field names
# (``sha256``/``blake3``: the whole file; ``envelope_payload_<alg>``: an envelope's payload)
DIGEST_KINDS = frozenset(FILE_FIELDS) | frozenset(ENVELOPE_FIELDS)
MAX_DESCRIPTION_CHARS = 1 << 20
MAX_METADATA_CHARS = 16 << 20
MAX_METADATA_DEPTH = 64
MAX_FILES_JSON_BYTES = 256 << 20
MAX_FILES_PER_VERSION = 100_000
MAX_RUN_ID_CHARS = 256
MAX_ALIASES_PER_VERSION = 10_000
MAX_DATE_CHARS = 64
_HEX = frozenset("0123456789abcdef")


class RowIdentity:
    """Which version a row is about, as far as it could be read; raises VersionRowErrors."""

    def __init__(self, entity: object, project: object, name: object, number: object) -> None:
        self.entity, self.project, self.name, self.number = entity, project, name, number

    def error(self, reason: str) -> VersionRowError:
        return VersionRowError(
            f"the store index row of this version is malformed: {reason}",
            entity=self.entity,
            project=self.project,
            name=self.name,
            number=self.number,
        )


def check_run_id(run_id: object) -> str:
    """A Dagster run id as the store records it (publish and lineage) and reads it back."""
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_number(value: object, ident: RowIdentity, what: str = "version number") -> int:
    """A version number from the index: an SQLite INTEGER in ``0 <= N < MAX_VERSION_NUMBER``."""
    if not _is_int(value) or not 0 <= value < MAX_VERSION_NUMBER:  # type: ignore[operator]
        raise ident.error(f"the {what} is {value!r}, not an integer 0 <= N < 2**62")
    return int(value)  # type: ignore[call-overload]


def _check_name(value: object, what: str, ident: RowIdentity) -> str:
    if not isinstance(value, str) or not ARTIFACT_NAME_RE.fullmatch(value) or value in {".", ".."}:
        raise ident.error(f"the {what} {value!r} is not a valid name")
    return value


def check_identity(entity: object, project: object, name: object, number: object) -> RowIdentity:
    """The four columns that locate a version folder, validated (names, integer number)."""
    ident = RowIdentity(entity, project, name, number)
    _check_name(entity, "entity", ident)
    _check_name(project, "project", ident)
    _check_name(name, "artifact name", ident)
    check_number(number, ident)
    return ident


def check_pending_row(row: Sequence[Any]) -> tuple[int, str, str, str, int]:
    """``(id, entity, project, name, number)`` of a ``pending`` row, every part validated."""
    pending_id, entity, project, name, number = row
    try:
        check_identity(entity, project, name, number)
    except VersionRowError as exc:
        raise VersionRowError(
            f"the pending row id={pending_id!r} of the store index is malformed: "
            + exc.reason.split(": ", 1)[-1]
            + "; no folder was moved or deleted",
            entity=entity,
            project=project,
            name=name,
            number=number,
            hint=f"the store index was edited outside dagster-wandb-secure; check the store "
            f"folder, remove row {pending_id!r} of the table 'pending' in index.sqlite3 with "
            "the sqlite3 tool, then run `dagster-wandb-secure audit`",
        ) from None
    return int(pending_id), entity, project, name, number


def check_metadata_shape(value: Any, max_depth: int = MAX_METADATA_DEPTH) -> str | None:
    """``None`` if ``value`` (decoded JSON) is an object nested at most ``max_depth`` deep,
    else the reason it is not. Iterative: a hostile depth cannot exhaust the stack."""
    if not isinstance(value, dict):
        return f"metadata is a JSON {type(value).__name__}, not an object"
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return f"metadata is nested deeper than {max_depth} levels"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not allowed")


def _json(value: object, what: str, cap: int, ident: RowIdentity) -> Any:
    if not isinstance(value, str):
        raise ident.error(f"the {what} column is {type(value).__name__}, not JSON text")
    if len(value) > cap:
        raise ident.error(f"the {what} column is over {cap} characters")
    try:
        return json.loads(
            value, object_pairs_hook=reject_duplicate_keys, parse_constant=_reject_constant
        )
    except RecursionError:
        raise ident.error(f"the {what} column is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and CanonicalJSONError (duplicate keys)
        raise ident.error(f"the {what} column is not valid JSON ({str(exc)[:120]})") from None


def _files(value: object, ident: RowIdentity) -> dict[str, FileEntry]:
    doc = _json(value, "files", MAX_FILES_JSON_BYTES, ident)
    if not isinstance(doc, dict) or not doc:
        raise ident.error("the files column is not a non-empty JSON object")
    if len(doc) > MAX_FILES_PER_VERSION:
        raise ident.error(f"the files column lists more than {MAX_FILES_PER_VERSION} files")
    entries: dict[str, FileEntry] = {}
    for path, pair in doc.items():
        try:
            rel = safe_relpath(path)
        except SecureArtifactError as exc:
            raise ident.error(f"the files column names an unsafe path: {exc.reason}") from None
        # [size, hex, kind] (schema 2), or [size, sha256 hex] (schema 1 rows, still read)
        if not (
            isinstance(pair, list)
            and len(pair) in (2, 3)
            and _is_int(pair[0])
            and 0 <= pair[0] < 2**63
            and isinstance(pair[1], str)
            and len(pair[1]) == 64
            and _HEX.issuperset(pair[1])
            and (len(pair) == 2 or isinstance(pair[2], str) and pair[2] in DIGEST_KINDS)
        ):
            raise ident.error(
                f"the entry of {rel!r} in the files column is not [size, digest, kind]"
            )
        kind = pair[2] if len(pair) == 3 else "sha256"
        entries[rel] = FileEntry(path=rel, size=pair[0], sha256=pair[1], digest_kind=kind)
    return entries


def _date(value: object, ident: RowIdentity) -> datetime:
    if not isinstance(value, str) or len(value) > MAX_DATE_CHARS:
        raise ident.error(f"created_at {value!r} is not an ISO 8601 date")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ident.error(f"created_at {value!r} is not an ISO 8601 date") from None
    if when.tzinfo is None:
        raise ident.error(f"created_at {value!r} has no time zone")
    return when


def _aliases(value: object, ident: RowIdentity) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, str):
        raise ident.error(f"the aliases are {type(value).__name__}, not text")
    aliases = value.split(",")
    if len(aliases) > MAX_ALIASES_PER_VERSION:
        raise ident.error(f"the version has more than {MAX_ALIASES_PER_VERSION} aliases")
    for alias in aliases:
        if not ALIAS_RE.fullmatch(alias) or alias[:1] == "v" and alias[1:].isdigit():
            raise ident.error(f"the alias {alias[:80]!r} is not a valid alias")
    return tuple(sorted(aliases))


def _run_id(value: object, ident: RowIdentity) -> str | None:
    if value is None:
        return None
    try:
        return check_run_id(value)
    except SecureArtifactError:
        raise ident.error(f"created_by_run {str(value)[:80]!r} is not a run id") from None


def version_from_row(
    row: Sequence[Any], folder_of: Callable[[str, str, str, int], Path]
) -> ArtifactVersion:
    """The version a ``_SELECT_VERSIONS`` row describes, every column validated; ``folder_of``
    says where the store keeps a version (called with the validated identity only)."""
    if len(row) != 11:
        raise VersionRowError(
            "the store index row has an unexpected shape",
            entity=None,
            project=None,
            name=None,
            number=None,
        )
    entity, project, name, type_, number, description, metadata, created_at, run, files, al = row
    ident = check_identity(entity, project, name, number)
    _check_name(type_, "artifact type", ident)
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS
    ):
        raise ident.error(f"the description is not text of at most {MAX_DESCRIPTION_CHARS} chars")
    meta = _json(metadata, "metadata", MAX_METADATA_CHARS, ident)
    problem = check_metadata_shape(meta)
    if problem is not None:
        raise ident.error(problem)
    return ArtifactVersion(
        entity=entity,
        project=project,
        name=name,
        version=number,
        type=type_,
        description=description,
        metadata=meta,
        aliases=_aliases(al, ident),
        files=_files(files, ident),
        created_at=_date(created_at, ident),
        created_by_run=_run_id(run, ident),
        root=folder_of(entity, project, name, number),
        extra={"store": "local"},
    )


_EPOCH = datetime.fromtimestamp(0, UTC)


def scan_stub_from_row(row: Sequence[Any], root: Path) -> ArtifactVersion:
    """A version as the head scan needs it, from an ``(entity, project, name, type, number)``
    row (each validated): its identity and type only, nothing else read or parsed (``files``,
    ``metadata`` and ``aliases`` empty, ``created_at`` the epoch); ``root`` is the artifact
    folder (the caller opens ``v<N>`` below it itself)."""
    entity, project, name, type_, number = row
    ident = check_identity(entity, project, name, number)
    _check_name(type_, "artifact type", ident)
    return ArtifactVersion(
        entity=entity, project=project, name=name, version=number, type=type_,
        description=None, metadata={}, aliases=(), files={}, created_at=_EPOCH,
        created_by_run=None, root=root, extra={"store": "local", "stub": True},
    )
