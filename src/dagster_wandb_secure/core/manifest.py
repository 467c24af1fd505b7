"""Signed manifests: one signature over every file of a multi-file artifact version.

A version may hold W&B objects, added files and directories, and payload envelopes. The manifest
lists each file's relative path, size and digest (SHA-256 or BLAKE3, from ``core/digests.py``:
key ``sha256`` or ``blake3``), plus any external references, and is itself
stored as an envelope (serializer ``json``) named ``MANIFEST_NAME`` whose signed context binds it
to the artifact name, type, partition and asset key with ``role="manifest"``.

Payload envelopes are listed by the digest of their *payload* under the envelope's own signed
``digest_alg`` (``envelope_payload_sha256`` or ``envelope_payload_blake3``) and their serializer,
so a reader that unseals them anyway hashes those bytes once, not twice.

Format 2 (what this library writes) also signs the version's place in its artifact's history
(``sequence``, ``parent``, ``resigns``; see ``core/history.py``), the metadata, description and
aliases the writer gave it, and an explicit ``empty`` flag for a version with no files. Format 1
(older releases) is still verified for its content; it carries no signed order.

Verification refuses: a missing manifest (unsigned artifact), an unflagged empty artifact, any file on disk
that the manifest does not list (an extra unsigned file), any listed file that is missing, a size
or digest mismatch, a symlink or non-regular file, an unsafe file name, and a manifest signed for
another artifact, type or partition.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .digests import DEFAULT_DIGEST, ENVELOPE_FIELDS, FILE_FIELDS, digest_file, get_digest
from .envelope import (
    Context,
    EnvelopeHeader,
    is_envelope,
    read_bounded_envelope,
    read_header_unverified,
    seal_with_header,
    verify_bytes,
    verify_path,
)
from .errors import (
    ConfigurationError,
    MalformedEnvelopeError,
    ResourceLimitError,
    SecureArtifactError,
    TamperedPayloadError,
    UnsignedPayloadError,
)
from .fsutil import open_no_follow, safe_relpath
from .history import Position
from .policy import Policy
from .serializers import get_serializer

if TYPE_CHECKING:
    from .keys import KeyStore

MANIFEST_NAME = "dagster_wandb_secure.manifest"
MANIFEST_ROLE = "manifest"
MANIFEST_VERSION = 2
LEGACY_MANIFEST_VERSION = 1
_V1_FIELDS = frozenset({"manifest_version", "files", "references"})
_V2_FIELDS = _V1_FIELDS | {
    "sequence",
    "parent",
    "metadata",
    "description",
    "aliases",
    "empty",
    "resigns",
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_SEQUENCE = 2**63 - 1
HASH_CHUNK = 8 << 20
# Upper bound on a manifest's size per allowed entry (a path of <= 1 KiB plus digests): the
# manifest file is read into memory only up to max_manifest_entries * this.
MANIFEST_BYTES_PER_ENTRY = 1400


@dataclass(frozen=True)
class ManifestEntry:
    """One signed file. The two digest attributes keep their historical names: each holds the
    hex digest under ``digest_alg`` (the entry's key on disk is ``<alg>`` or
    ``envelope_payload_<alg>``)."""

    path: str
    size: int
    sha256: str | None = None  # for plain files (under digest_alg)
    envelope_payload_sha256: str | None = None  # for payload envelopes (under digest_alg)
    serializer: str | None = None
    digest_alg: str = "sha256"

    @property
    def digest(self) -> str:
        return self.sha256 or self.envelope_payload_sha256 or ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size}
        algo = get_digest(self.digest_alg)
        if self.sha256 is not None:
            out[algo.file_field] = self.sha256
        if self.envelope_payload_sha256 is not None:
            out[algo.envelope_field] = self.envelope_payload_sha256
            out["serializer"] = self.serializer
        return out


@dataclass(frozen=True)
class Resigns:
    """Which original a re-signed version re-signs (its position, or only its digest when the
    original was a format-1 version)."""

    sequence: int | None
    manifest_digest: str
    signed_at: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "manifest_digest": self.manifest_digest,
            "signed_at": self.signed_at,
        }


@dataclass(frozen=True)
class History:
    """The signed, format-2 part of a manifest: place in the history and what readers consume."""

    sequence: int
    parent: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    aliases: tuple[str, ...] = ()
    empty: bool = False
    resigns: Resigns | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "parent": self.parent,
            "metadata": dict(self.metadata),
            "description": self.description,
            "aliases": list(self.aliases),
            "empty": self.empty,
            "resigns": None if self.resigns is None else self.resigns.as_dict(),
        }


@dataclass(frozen=True)
class VerifiedManifest:
    header: EnvelopeHeader
    entries: Mapping[str, ManifestEntry]
    references: tuple[Mapping[str, Any], ...]
    digest: str = ""  # sha256 hex of the whole manifest envelope (what ``parent`` names)
    history: History | None = None  # None: a format-1 manifest (no signed order)

    @property
    def position(self) -> Position | None:
        """The version's place in the signed order (a re-sign takes its original's place)."""
        from .envelope import format_time

        h = self.history
        if h is None:
            return None
        r = h.resigns
        if r is not None and r.sequence is not None and r.signed_at is not None:
            return Position(r.sequence, r.signed_at, r.manifest_digest)
        return Position(h.sequence, format_time(self.header.signed_at), self.digest)


def manifest_context(context: Context) -> dict[str, str | None]:
    ctx = dict(context)
    ctx["role"] = MANIFEST_ROLE
    return ctx


def file_sha256(path: Path) -> tuple[str, int]:
    """Stream a regular file (symlinks refused) through SHA-256; returns (hex, size)."""
    return digest_file("sha256", path)


def describe_file(relpath: str, path: Path, digest_alg: str = DEFAULT_DIGEST) -> ManifestEntry:
    """Build the manifest entry for one file: envelopes by payload digest (under their own
    ``digest_alg``), others by the digest of the whole file under ``digest_alg``."""
    relpath = safe_relpath(relpath)
    with open_no_follow(path) as fh:
        prefix = fh.read(16)
    if is_envelope(prefix):
        info = read_header_unverified(path)["header"]
        algo = get_digest(info.get("digest_alg"))
        size = path.stat().st_size
        return ManifestEntry(
            relpath,
            size,
            envelope_payload_sha256=info[algo.header_field],
            serializer=info["serializer"],
            digest_alg=algo.name,
        )
    digest, size = digest_file(digest_alg, path)
    return ManifestEntry(relpath, size, sha256=digest, digest_alg=get_digest(digest_alg).name)


def build_manifest(
    files: Mapping[str, Path],
    references: Iterable[Mapping[str, Any]] = (),
    history: History | None = None,
    digest_alg: str = DEFAULT_DIGEST,
    described: Mapping[str, ManifestEntry] | None = None,
) -> dict[str, Any]:
    """The manifest document: format 2 with ``history``; format 1 without (tests of readers of
    older versions only). An empty file list is signed only when ``history.empty`` says so.
    ``described``: entries the caller already built with ``describe_file`` (not hashed again)."""
    entries: dict[str, Any] = {}
    for relpath, path in files.items():
        if relpath == MANIFEST_NAME:
            raise ConfigurationError(f"an artifact file may not be named {MANIFEST_NAME!r}")
        given = (described or {}).get(relpath)
        entry = given if given is not None else describe_file(relpath, Path(path), digest_alg)
        entries[entry.path] = entry.as_dict()
    refs = [dict(r) for r in references]
    if history is None:
        if not entries and not refs:
            raise ConfigurationError("refusing to sign an empty artifact (no files, no references)")
        return {"manifest_version": LEGACY_MANIFEST_VERSION, "files": entries, "references": refs}
    if history.empty != (not entries and not refs):
        raise ConfigurationError(
            "the manifest's empty flag must be set exactly when the version has no files and "
            "no references"
        )
    return {"manifest_version": MANIFEST_VERSION, "files": entries, "references": refs,
            **history.fields()}


def write_manifest(
    files: Mapping[str, Path],
    *,
    key_store: KeyStore,
    context: Context,
    key_id: str | None = None,
    policy: Policy | None = None,
    run_id: str | None = None,
    references: Iterable[Mapping[str, Any]] = (),
    record: bool = True,
    history: History | None = None,
    digest_alg: str = DEFAULT_DIGEST,
    described: Mapping[str, ManifestEntry] | None = None,
) -> tuple[bytes, EnvelopeHeader]:
    """Hash ``files`` (relative name -> local path) and return the signed manifest envelope.

    The caller stores the bytes as ``MANIFEST_NAME`` next to the files. ``digest_alg`` is used
    for plain files and for the manifest envelope itself; ``described`` as in
    ``build_manifest``."""
    document = build_manifest(files, references, history, digest_alg, described)
    return seal_with_header(
        document,
        key_store=key_store,
        serializer="json",
        context=manifest_context(context),
        key_id=key_id,
        policy=policy,
        record=record,
        run_id=run_id,
        digest_alg=digest_alg,
    )


def verify_manifest(
    files_on_disk: Mapping[str, Path],
    *,
    key_store: KeyStore,
    expected_context: Context,
    policy: Policy | None = None,
    deep: bool = True,
    hash_envelopes: bool = True,
    version: str | None = None,
    unsealed_by_caller: frozenset[str] = frozenset(),
) -> VerifiedManifest:
    """Verify a version's files against its signed manifest.

    ``files_on_disk`` is what is actually present (relative name -> path), including the manifest
    itself. ``deep=False`` checks names and sizes but not digests (fast audits);
    ``hash_envelopes=False`` skips hashing envelope payloads that the caller will unseal (and so
    hash) anyway. ``unsealed_by_caller``: payload envelopes (by name) whose signature, context,
    serializer, length and digest the caller verifies itself, in private memory, against the
    returned entry before it returns or uses anything (``artifacts/verification.verify_version``
    for a whole-content read); their presence, regular-file type, size and digest algorithm are
    still checked here. Checking them here too, on the store's bytes, protected nothing: the
    store's file can change after it. Not with ``deep`` (asset checks, audits check all)."""
    policy = policy or Policy.default()
    artifact = expected_context.get("artifact")
    if deep and unsealed_by_caller:
        raise ValueError("a deep verification checks every envelope itself")
    try:
        return _verify(
            files_on_disk,
            key_store,
            expected_context,
            policy,
            deep,
            hash_envelopes,
            unsealed_by_caller,
        )
    except SecureArtifactError as exc:
        raise exc.with_location(artifact=artifact, version=version) from None


def _verify(
    files_on_disk: Mapping[str, Path],
    key_store: KeyStore,
    expected_context: Context,
    policy: Policy,
    deep: bool,
    hash_envelopes: bool,
    unsealed_by_caller: frozenset[str] = frozenset(),
) -> VerifiedManifest:
    artifact = expected_context.get("artifact")
    if len(files_on_disk) > policy.max_files:
        raise ResourceLimitError(
            f"artifact holds {len(files_on_disk)} files, over the policy cap of {policy.max_files}",
            artifact=artifact,
        )
    for name in files_on_disk:
        safe_relpath(name)
    manifest_path = files_on_disk.get(MANIFEST_NAME)
    if manifest_path is None:
        raise UnsignedPayloadError(
            "artifact has no signed manifest (written by upstream dagster-wandb or by hand)",
            artifact=artifact,
        )
    vm = _read_manifest(manifest_path, key_store, expected_context, policy)
    header, entries = vm.header, vm.entries
    kid = header.kid
    extra = sorted(set(files_on_disk) - set(entries) - {MANIFEST_NAME})
    if extra:
        raise TamperedPayloadError(
            f"{len(extra)} file(s) not covered by the signed manifest, e.g. {extra[0]!r}",
            artifact=artifact,
            key_id=kid,
        )
    missing = sorted(set(entries) - set(files_on_disk))
    if missing:
        raise TamperedPayloadError(
            f"{len(missing)} signed file(s) missing, e.g. {missing[0]!r}",
            artifact=artifact,
            key_id=kid,
        )
    payload_context = dict(expected_context)
    for name, entry in entries.items():
        path = files_on_disk[name]
        size = _regular_size(path)
        if size != entry.size:
            raise TamperedPayloadError(
                f"file {name!r} is {size} bytes, the manifest signed {entry.size}",
                artifact=artifact,
                key_id=kid,
            )
        policy.check_digest(entry.digest_alg, artifact=artifact, key_id=kid)
        if entry.envelope_payload_sha256 is not None and name in unsealed_by_caller:
            continue  # verified by the caller in private memory (docstring)
        if entry.envelope_payload_sha256 is not None:
            env = verify_path(
                path,
                key_store=key_store,
                expected_context=payload_context,
                expected_serializer=entry.serializer,
                policy=policy,
                deep=deep and hash_envelopes,
            )
            if env.digest_alg != entry.digest_alg or not hmac.compare_digest(
                env.payload_digest, entry.envelope_payload_sha256
            ):
                raise TamperedPayloadError(
                    f"envelope {name!r} is not the one the manifest signed (mix-and-match)",
                    artifact=artifact,
                    key_id=env.kid,
                )
        elif deep:
            digest, _ = digest_file(entry.digest_alg, path)
            if not hmac.compare_digest(digest, entry.sha256 or ""):
                raise TamperedPayloadError(
                    f"file {name!r} does not match its signed {entry.digest_alg} digest",
                    artifact=artifact,
                    key_id=kid,
                )
    return vm


def read_manifest(
    path: Path,
    *,
    key_store: KeyStore,
    expected_context: Context,
    policy: Policy | None = None,
    version: str | None = None,
) -> VerifiedManifest:
    """Verify only the manifest envelope at ``path`` and parse its document (the files it lists
    are NOT checked): enough to trust its signed history fields, e.g. to allocate the next
    sequence. Readers of content use ``verify_manifest``."""
    policy = policy or Policy.default()
    try:
        return _read_manifest(path, key_store, expected_context, policy)
    except SecureArtifactError as exc:
        raise exc.with_location(artifact=expected_context.get("artifact"), version=version) from None


def read_manifest_bytes(
    data: bytes,
    *,
    key_store: KeyStore,
    expected_context: Context,
    policy: Policy | None = None,
    version: str | None = None,
) -> VerifiedManifest:
    """``read_manifest`` of manifest envelope bytes a store already read (at most
    ``manifest_byte_cap(policy)`` of them; more is a ResourceLimitError)."""
    policy = policy or Policy.default()
    artifact = expected_context.get("artifact")
    try:
        cap = manifest_byte_cap(policy)
        if len(data) > cap:
            raise ResourceLimitError(f"manifest is larger than {cap} bytes", artifact=artifact)
        return _manifest_from_bytes(data, key_store, expected_context, policy)
    except SecureArtifactError as exc:
        raise exc.with_location(artifact=artifact, version=version) from None


def manifest_byte_cap(policy: Policy) -> int:
    """The most bytes a manifest envelope file may hold under ``policy`` (what a store reads
    of it at most)."""
    return min(policy.max_manifest_entries * MANIFEST_BYTES_PER_ENTRY, policy.max_manifest_bytes)


def manifest_digest(data: bytes) -> str:
    """The digest naming a manifest envelope (``VerifiedManifest.digest``, a format-2
    ``parent``, the ledger's seen manifests): SHA-256 hex of the whole envelope file."""
    return hashlib.sha256(data).hexdigest()


def _read_manifest(
    manifest_path: Path, key_store: KeyStore, expected_context: Context, policy: Policy
) -> VerifiedManifest:
    artifact = expected_context.get("artifact")
    cap = policy.max_manifest_entries * MANIFEST_BYTES_PER_ENTRY
    data = read_bounded_envelope(manifest_path, policy, max_bytes=cap)
    if len(data) > cap:
        raise ResourceLimitError(f"manifest is larger than {cap} bytes", artifact=artifact)
    return _manifest_from_bytes(data, key_store, expected_context, policy)


def _manifest_from_bytes(
    data: bytes, key_store: KeyStore, expected_context: Context, policy: Policy
) -> VerifiedManifest:
    artifact = expected_context.get("artifact")
    header, payload = verify_bytes(
        data,
        key_store=key_store,
        expected_context=manifest_context(expected_context),
        expected_serializer="json",
        policy=policy,
    )
    document = get_serializer("json").load(payload, header.serializer_params)
    entries, references, history = _parse_document(document, policy, artifact, header.kid)
    return VerifiedManifest(
        header=header,
        entries=entries,
        references=references,
        digest=manifest_digest(data),
        history=history,
    )


def _regular_size(path: Path) -> int:
    with open_no_follow(path) as fh:
        return os.fstat(fh.fileno()).st_size


def _parse_document(
    document: Any, policy: Policy, artifact: str | None, kid: str
) -> tuple[dict[str, ManifestEntry], tuple[Mapping[str, Any], ...], History | None]:
    def bad(reason: str) -> MalformedEnvelopeError:
        return MalformedEnvelopeError(f"manifest {reason}", artifact=artifact, key_id=kid)

    if not isinstance(document, dict):
        raise bad("document is not an object")
    version = document.get("manifest_version")
    wanted = {LEGACY_MANIFEST_VERSION: _V1_FIELDS, MANIFEST_VERSION: _V2_FIELDS}.get(
        version if isinstance(version, int) and not isinstance(version, bool) else -1
    )
    if wanted is None:
        raise bad(f"version {version!r} is unknown")
    if set(document) != wanted:
        raise bad("document has unexpected fields")
    history = _parse_history(document, bad) if version == MANIFEST_VERSION else None
    files, refs = document["files"], document["references"]
    if not isinstance(files, dict) or not isinstance(refs, list):
        raise bad("files/references have the wrong types")
    if len(files) + len(refs) > policy.max_manifest_entries:
        raise ResourceLimitError(
            f"manifest lists {len(files) + len(refs)} entries, over the cap of "
            f"{policy.max_manifest_entries}",
            artifact=artifact,
            key_id=kid,
        )
    if not files and not refs and (history is None or not history.empty):
        raise TamperedPayloadError(
            "signed manifest lists no files: empty artifact", artifact=artifact, key_id=kid
        )
    if history is not None and history.empty and (files or refs):
        raise bad("is flagged empty but lists files")
    entries: dict[str, ManifestEntry] = {}
    for name, raw in files.items():
        safe_relpath(name, what="manifest file name")
        if name == MANIFEST_NAME or not isinstance(raw, dict):
            raise bad(f"entry {name!r} is invalid")
        size = raw.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"entry {name!r} has an invalid size")
        keys = set(raw) - {"size", "serializer"}
        key = next(iter(keys)) if len(keys) == 1 else None
        if (
            key in FILE_FIELDS
            and set(raw) == {"size", key}
            and isinstance(raw[key], str)
        ):
            entries[name] = ManifestEntry(name, size, sha256=raw[key], digest_alg=FILE_FIELDS[key])
        elif (
            key in ENVELOPE_FIELDS
            and set(raw) == {"size", key, "serializer"}
            and isinstance(raw[key], str)
            and isinstance(raw["serializer"], str)
        ):
            entries[name] = ManifestEntry(
                name,
                size,
                envelope_payload_sha256=raw[key],
                serializer=raw["serializer"],
                digest_alg=ENVELOPE_FIELDS[key],
            )
        else:
            raise bad(f"entry {name!r} has unexpected fields")
    references = tuple(r for r in refs if isinstance(r, dict))
    if len(references) != len(refs):
        raise bad("references must be objects")
    return entries, references, history


def history_of_document(document: Any, *, artifact: str | None = None) -> History | None:
    """The history fields of a manifest document (None for format 1); malformed ones raise
    ``MalformedEnvelopeError``. For callers that vouched for the document another way (``resign``
    of a revoked key: the ledger recorded its digest)."""

    def bad(reason: str) -> MalformedEnvelopeError:
        return MalformedEnvelopeError(f"manifest {reason}", artifact=artifact)

    if not isinstance(document, dict) or document.get("manifest_version") != MANIFEST_VERSION:
        return None
    if set(document) != _V2_FIELDS:
        raise bad("document has unexpected fields")
    return _parse_history(document, bad)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_SEQUENCE


def _is_digest(value: Any) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _parse_history(document: dict[str, Any], bad: Any) -> History:
    sequence, parent = document["sequence"], document["parent"]
    if not _is_int(sequence) or sequence < 1:
        raise bad("sequence must be a positive integer")
    if parent is not None and not _is_digest(parent):
        raise bad("parent must be null or a sha256 hex digest")
    metadata, description = document["metadata"], document["description"]
    if not isinstance(metadata, dict):
        raise bad("metadata must be an object")
    if description is not None and not isinstance(description, str):
        raise bad("description must be null or a string")
    aliases = document["aliases"]
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise bad("aliases must be a list of strings")
    if not isinstance(document["empty"], bool):
        raise bad("empty must be true or false")
    raw = document["resigns"]
    resigns = None
    if raw is not None:
        if (
            not isinstance(raw, dict)
            or set(raw) != {"sequence", "manifest_digest", "signed_at"}
            or (raw["sequence"] is not None and not _is_int(raw["sequence"]))
            or not _is_digest(raw["manifest_digest"])
            or (raw["signed_at"] is not None and not isinstance(raw["signed_at"], str))
            or (raw["sequence"] is None) != (raw["signed_at"] is None)
        ):
            raise bad("resigns must be {sequence, manifest_digest, signed_at}")
        if raw["sequence"] is not None and raw["sequence"] != sequence:
            raise bad("a re-signed version keeps its original's sequence")
        resigns = Resigns(raw["sequence"], raw["manifest_digest"], raw["signed_at"])
    return History(
        sequence=sequence,
        parent=parent,
        metadata=metadata,
        description=description,
        aliases=tuple(aliases),
        empty=document["empty"],
        resigns=resigns,
    )
