"""The signature audit: "is everything we load signed by us?", answered for a whole store.

For every artifact version in a store the audit verifies the signed manifest (and through it
every payload envelope) against the key store, looks the signature up in the digest ledger, and
then checks each artifact's signed history (format-2 manifests): the same manifest stored as
several versions (``replayed``), two manifests signed with one sequence (``forked``), an alias
on a version earlier in the signed order than the ledger's mark for it or, for ``latest``, than
the store's highest (``rolled-back``), and a parent that is not in the store (noted in the
reason). Format-1 versions are ``legacy-format`` (no rollback protection; ``resign`` upgrades
them). Each version gets exactly one ``Status``.

The default (``deep=True``) re-hashes every payload byte, on a thread pool (one thread per
core); only then is a version ``valid``. Fast mode (``deep=False``) checks signatures, contexts,
file lists and sizes without hashing payloads, and calls a version that passes ``signature-ok``,
never ``valid``. Nothing is ever deserialized. The key store is opened once (its records and parsed keys are cached), and the
ledger is read once for the whole audit, not once per version. A local store is listed in
batches through folder descriptors (``LocalArtifactStore.list_files_of``): no path is resolved
per version, and no symlink below its artifacts folder is followed. A large local store is
checked on one forked process per core (``check_versions``), the same checks on the same
inherited objects, so the statuses do not depend on it.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import stat
import sys
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts.history import history_key
from ..artifacts.registry import list_links
from ..artifacts.target import version_context
from ..artifacts.verification import files_of_listing, files_on_disk
from ..core.envelope import format_time, read_header_unverified
from ..core.errors import (
    AlgorithmMismatchError,
    ContextMismatchError,
    ExpiredKeyError,
    MalformedEnvelopeError,
    RevokedKeyError,
    SecureArtifactError,
    SignatureVerificationError,
    TamperedPayloadError,
    UnknownKeyError,
    UnsafePathError,
    UnsignedPayloadError,
)
from ..core.fsutil import open_no_follow
from ..core.history import signed_long_before
from ..core.manifest import MANIFEST_BYTES_PER_ENTRY, MANIFEST_NAME, verify_manifest
from ..core.policy import Policy
from ..core.serializers import SERIALIZERS
from ..stores.base import StoreError, VersionRowError, scan_versions

if TYPE_CHECKING:
    from ..core.keys import KeyStore
    from ..core.ledger import LedgerRow
    from ..core.manifest import VerifiedManifest
    from ..core.policy import Policy
    from ..stores.base import ArtifactStore, ArtifactVersion, DiskEntry

__all__ = [
    "AUDIT_SCHEMA",
    "DEFAULT_FAIL_ON",
    "FAILING_STATUSES",
    "PASSING_STATUSES",
    "AuditEntry",
    "AuditReport",
    "Status",
    "audit_store",
    "check_versions",
    "collect_folder",
    "status_of_error",
    "verdict",
    "verification_policy",
    "verify_version_manifest",
]

AUDIT_SCHEMA = "dagster-wandb-secure/audit/v1"
MAX_FOLDER_FILES = 100_000


class Status(StrEnum):
    """One verdict per artifact version (docs/cli.md describes each)."""

    VALID = "valid"
    ADOPTED = "adopted"
    SIGNATURE_OK = "signature-ok"
    SUPERSEDED = "superseded"
    TAMPERED = "tampered"
    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown-key"
    REVOKED_KEY = "revoked-key"
    EXPIRED_KEY = "expired-key"
    CONTEXT_MISMATCH = "context-mismatch"
    ROLLED_BACK = "rolled-back"
    REPLAYED = "replayed"
    FORKED = "forked"
    LEGACY_FORMAT = "legacy-format"
    MISSING_FROM_LEDGER = "missing-from-ledger"
    ERROR = "error"


STATUS_ORDER: tuple[Status, ...] = tuple(Status)
GOOD_STATUSES = frozenset({Status.VALID, Status.ADOPTED, Status.SIGNATURE_OK})
# not failing, though not verifiable itself: an original that a passing version re-signs
PASSING_STATUSES = GOOD_STATUSES | {Status.SUPERSEDED}
FAILING_STATUSES = frozenset(set(Status) - PASSING_STATUSES)
# what `resign` leaves behind: originals it re-signed (their key ended, or format 1)
SUPERSEDABLE = frozenset({Status.EXPIRED_KEY, Status.REVOKED_KEY, Status.LEGACY_FORMAT})
# what a default `audit` fails on: anything but valid/adopted (signature-ok only in --fast)
DEFAULT_FAIL_ON = FAILING_STATUSES

STATUS_DESCRIPTIONS: dict[Status, str] = {
    Status.VALID: "signed at write time by a trusted key, recorded in the ledger",
    Status.ADOPTED: "legacy unsigned artifact re-published signed by `adopt` after a static scan",
    Status.SIGNATURE_OK: "--fast: signature, file list and sizes check out; payload bytes were "
    "NOT re-hashed (run without --fast to call it valid)",
    Status.SUPERSEDED: "an original `resign` replaced: signed by a key that has ended (or "
    "format 1), holds no alias, and a passing version of the store re-signs exactly this "
    "manifest; readers refuse the original, the re-signed copy serves its content",
    Status.TAMPERED: "bytes, file list, names or signature differ from what was signed",
    Status.UNSIGNED: "no signed manifest (upstream dagster-wandb or written by hand)",
    Status.UNKNOWN_KEY: "signed by a key this key store does not hold",
    Status.REVOKED_KEY: "signed by a revoked or destroyed key",
    Status.EXPIRED_KEY: "signed after the key's expiry, or the key's grace period is over",
    Status.CONTEXT_MISMATCH: "a valid signature made for another artifact, type or serializer",
    Status.ROLLED_BACK: "an alias points to a version earlier in the signed order than one "
    "already recorded for it (or, for latest, than the store's newest)",
    Status.REPLAYED: "the same signed manifest is stored as an earlier version too: old content "
    "re-published under a new version number",
    Status.FORKED: "another manifest was signed with the same sequence and comes later in the "
    "signed order (concurrent writers without a shared ledger, or a fork of the history), or "
    "a lower sequence was signed long after this one (the history was restarted below it)",
    Status.LEGACY_FORMAT: "format-1 manifest: content verifies, but it has no signed place in "
    "the history (no rollback protection); `resign` upgrades it",
    Status.MISSING_FROM_LEDGER: "signature verifies, but this key store's ledger never recorded it",
    Status.ERROR: "the version could not be read (store error)",
}


@dataclass
class AuditEntry:
    """One artifact version's row in the report."""

    entity: str
    project: str
    name: str
    version: str
    aliases: list[str]
    type: str
    serializer: str | None
    key_id: str | None
    alg: str | None
    signed_at: str | None
    digest: str | None
    status: Status
    origin: str | None = None  # ledger origin: signed | adopted | resigned
    reason: str | None = None
    error_type: str | None = None
    created_at: str | None = None
    sequence: int | None = None  # signed sequence (format 2)
    manifest_digest: str | None = None  # sha256 of the manifest envelope
    parent: str | None = None
    position: Any = field(default=None, repr=False)  # core.history.Position, not in the JSON
    resigns: str | None = None  # manifest digest of the original this version re-signs
    # sha256 of the manifest file as stored, also when it does not verify (not in the JSON)
    stored_manifest_digest: str | None = field(default=None, repr=False)
    # the ledger holds our signature row for the manifest this version's header claims
    claimed_row_recorded: bool = field(default=False, repr=False)

    @property
    def qualified_name(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}:{self.version}"

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("position", None)
        doc.pop("stored_manifest_digest", None)
        doc.pop("claimed_row_recorded", None)
        doc["status"] = self.status.value
        return doc


@dataclass
class AuditReport:
    entries: list[AuditEntry]
    key_store: str
    store: str
    deep: bool
    generated_at: str = field(default_factory=lambda: _now())
    elapsed_s: float = 0.0
    keys: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts_by_status(self) -> dict[str, int]:
        counts = Counter(e.status.value for e in self.entries)
        return {s.value: counts.get(s.value, 0) for s in STATUS_ORDER}

    @property
    def counts_by_key(self) -> dict[str, dict[str, int]]:
        """key id (or ``"<none>"``) -> {status: count} for statuses that occur."""
        out: dict[str, Counter[str]] = defaultdict(Counter)
        for e in self.entries:
            out[e.key_id or "<none>"][e.status.value] += 1
        return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}

    def failing(self, statuses: Iterable[str | Status]) -> list[AuditEntry]:
        wanted = {Status(s) for s in statuses}
        return [e for e in self.entries if e.status in wanted]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": AUDIT_SCHEMA,
            "generated_at": self.generated_at,
            "key_store": self.key_store,
            "store": self.store,
            "mode": "deep" if self.deep else "fast",
            "elapsed_s": round(self.elapsed_s, 3),
            "summary": {
                "total": len(self.entries),
                "by_status": self.counts_by_status,
                "by_key": self.counts_by_key,
            },
            "keys": self.keys,
            "versions": [e.as_dict() for e in self.entries],
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verification_policy() -> Policy:
    """The policy used to *verify* without loading: every known serializer is acceptable,
    because nothing is deserialized; all limits stay at their defaults."""


    return replace(Policy.default(), allowed_serializers=frozenset(SERIALIZERS))


def status_of_error(exc: SecureArtifactError) -> Status:
    """The audit status a verification error stands for."""
    if isinstance(exc, UnsignedPayloadError):
        return Status.UNSIGNED
    if isinstance(exc, UnknownKeyError):
        return Status.UNKNOWN_KEY
    if isinstance(exc, RevokedKeyError):
        return Status.REVOKED_KEY
    if isinstance(exc, ExpiredKeyError):
        return Status.EXPIRED_KEY
    if isinstance(exc, ContextMismatchError):
        return Status.CONTEXT_MISMATCH
    if isinstance(
        exc,
        TamperedPayloadError | MalformedEnvelopeError | AlgorithmMismatchError | UnsafePathError,
    ):
        return Status.TAMPERED

    if isinstance(exc, SignatureVerificationError):
        return Status.TAMPERED
    return Status.ERROR


def collect_folder(root: Path) -> dict[str, Path]:
    """Every entry under ``root`` as relative POSIX name -> path, following no symlink.

    Symlinks and special files are included (not skipped) so the manifest check refuses them."""
    found: dict[str, Path] = {}
    stack: list[tuple[str, Path]] = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                rel = prefix + entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((rel + "/", Path(entry.path)))
                else:
                    found[rel] = Path(entry.path)
                if len(found) > MAX_FOLDER_FILES:
                    raise UnsafePathError(f"{root} holds more than {MAX_FOLDER_FILES} files")
    return found


def verify_version_manifest(
    files: Mapping[str, Path],
    av: ArtifactVersion,
    *,
    key_store: KeyStore,
    policy: Policy | None,
    deep: bool,
) -> VerifiedManifest:
    """Verify ``av``'s files against its signed manifest, bound to the version's own artifact
    name and type (what a reader of ``av`` expects). Nothing is deserialized."""

    return verify_manifest(
        files,
        key_store=key_store,
        expected_context=version_context(av),
        policy=policy,
        deep=deep,
        version=av.version_label,
    )


class _LedgerIndex:
    """The whole ledger, read once: digest -> rows."""

    def __init__(self, rows: Iterable[LedgerRow]) -> None:
        self.by_digest: dict[str, list[LedgerRow]] = defaultdict(list)
        self.newest: dict[str, int] = {}
        for row in rows:
            self.by_digest[row.digest].append(row)
            if row.artifact and row.artifact_version:
                try:
                    n = int(row.artifact_version[1:])
                except ValueError:
                    continue
                if n > self.newest.get(row.artifact, -1):
                    self.newest[row.artifact] = n

    def match(
        self, digest: str, kid: str, artifact: str, version: str | None = None
    ) -> LedgerRow | None:
        """The ledger row of this signature: the one recorded for ``version`` itself, else one
        not yet attached to a version, else the newest for the artifact (so an origin label
        such as ``resigned`` comes from the version's own record, not from a same-digest
        neighbour)."""
        rows = [r for r in self.by_digest.get(digest, ()) if r.key_id == kid and r.artifact == artifact]
        for wanted in (version, None):
            own = [r for r in rows if r.artifact_version == wanted]
            if own:
                return own[-1]  # newest wins (rows are oldest first)
        return rows[-1] if rows else None


def _base_entry(av: ArtifactVersion) -> AuditEntry:
    return AuditEntry(
        entity=av.entity,
        project=av.project,
        name=av.name,
        version=av.version_label,
        aliases=list(av.aliases),
        type=av.type,
        serializer=None,
        key_id=None,
        alg=None,
        signed_at=None,
        digest=None,
        status=Status.ERROR,
        created_at=av.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if av.created_at.tzinfo
        else av.created_at.isoformat(),
    )


def _row_error_entry(exc: VersionRowError) -> AuditEntry:
    """The ``error`` entry of a version whose index row could not be read."""
    return AuditEntry(
        entity=exc.entity,
        project=exc.project,
        name=exc.name,
        version=exc.version_label,
        aliases=[],
        type="",
        serializer=None,
        key_id=None,
        alg=None,
        signed_at=None,
        digest=None,
        status=Status.ERROR,
        reason=exc.reason,
        error_type=type(exc).__name__,
    )


def _payload_serializer(names: Iterable[str]) -> str | None:
    for name in sorted(names):
        stem, _, suffix = name.partition(".")
        if stem == "output" and suffix:
            return suffix
    return None


def _fill_unverified(entry: AuditEntry, files: Mapping[str, Path]) -> None:
    """Show what the manifest *claims* (key id etc.) for a version that failed verification."""

    path = files.get(MANIFEST_NAME)
    if path is None:
        return
    try:
        header = read_header_unverified(path)["header"]
    except (SecureArtifactError, OSError):
        return
    if entry.key_id is None and isinstance(header.get("kid"), str):
        entry.key_id = header["kid"][:80]
    if isinstance(header.get("alg"), str):
        entry.alg = header["alg"][:40]
    if isinstance(header.get("signed_at"), str):
        entry.signed_at = header["signed_at"][:40]


def check_version(
    store: ArtifactStore,
    av: ArtifactVersion,
    *,
    key_store: KeyStore,
    ledger: _LedgerIndex,
    policy: Policy,
    deep: bool,
    listed: Callable[[], dict[str, Path]] | None = None,
) -> AuditEntry:
    """The status of one version (rollback is decided later, across versions).

    ``listed``: the version's files as a batch listing found them (``_listed_files``) instead
    of ``files_on_disk``; it raises that listing's error."""

    entry = _base_entry(av)
    files: dict[str, Path] = {}
    try:
        files = listed() if listed is not None else files_on_disk(store, av)
        entry.serializer = _payload_serializer(files)
        vm = verify_version_manifest(files, av, key_store=key_store, policy=policy, deep=deep)
    except SecureArtifactError as exc:
        entry.status = status_of_error(exc)
        entry.reason = exc.reason
        entry.error_type = type(exc).__name__
        entry.key_id = exc.key_id
        _fill_unverified(entry, files)
        if entry.status in SUPERSEDABLE:
            entry.stored_manifest_digest = _stored_digest(files.get(MANIFEST_NAME), policy)
            entry.claimed_row_recorded = _claimed_row_recorded(files, ledger, av)
        return entry
    header = vm.header
    entry.key_id, entry.alg = header.kid, header.alg
    entry.signed_at = format_time(header.signed_at)
    payload = next((e for e in vm.entries.values() if e.serializer is not None), None)
    if payload is not None:
        entry.serializer = payload.serializer
        entry.digest = payload.envelope_payload_sha256
    else:
        entry.digest = header.payload_sha256
    row = ledger.match(header.payload_sha256, header.kid, av.name, av.version_label)
    if row is None:
        entry.status = Status.MISSING_FROM_LEDGER
        entry.reason = (
            f"the manifest's signature ({header.digest_alg} {header.payload_digest[:16]}...) "
            "verifies, but "
            "this key store's ledger has no record of signing it"
        )
        return entry
    entry.origin = row.origin
    entry.status = verdict(row.origin, deep=deep)
    entry.manifest_digest = entry.stored_manifest_digest = vm.digest
    if vm.history is not None and vm.history.resigns is not None:
        entry.resigns = vm.history.resigns.manifest_digest
    if vm.history is None:
        if entry.status in (Status.VALID, Status.SIGNATURE_OK):
            entry.status = Status.LEGACY_FORMAT
            entry.reason = STATUS_DESCRIPTIONS[Status.LEGACY_FORMAT]
    else:
        entry.sequence = vm.history.sequence
        entry.parent = vm.history.parent
        entry.position = vm.position
    return entry


def _stored_digest(path: Path | None, policy: Policy) -> str | None:
    """sha256 of a manifest file as stored (bounded; None when unreadable or too large)."""
    if path is None:
        return None
    cap = policy.max_manifest_entries * MANIFEST_BYTES_PER_ENTRY
    try:
        with open_no_follow(path) as fh:
            data = fh.read(cap + 1)
    except (SecureArtifactError, OSError):
        return None
    return hashlib.sha256(data).hexdigest() if len(data) <= cap else None


def _claimed_row_recorded(files: Mapping[str, Path], ledger: _LedgerIndex, av: ArtifactVersion) -> bool:
    """Whether our ledger holds a signature row for the (unverified) manifest header's claimed
    payload digest and key id for this artifact: we signed that manifest, whatever happened to
    the key since. A claim only: used to *narrow* ``_mark_superseded``, never to accept."""
    path = files.get(MANIFEST_NAME)
    if path is None:
        return False
    try:
        header = read_header_unverified(path)["header"]
    except (SecureArtifactError, OSError):
        return False
    alg, kid = header.get("digest_alg", "sha256"), header.get("kid")
    digest = header.get(f"payload_{alg}") if isinstance(alg, str) else None
    if not isinstance(kid, str) or not isinstance(digest, str):
        return False
    return ledger.match(digest, kid, av.name) is not None


def _mark_superseded(entries: list[AuditEntry], key_store: KeyStore) -> None:
    """An original that ``resign`` replaced is ``superseded``, not failing: its status is one
    ``resign`` leaves behind (ended key, format 1), it holds no alias, and a passing version of
    the same artifact re-signs it: that version's signed ``resigns`` is the digest of exactly
    this stored manifest file, or (an original that was itself a re-signed copy, signed by us
    per the ledger's signature rows) the ledger recorded this manifest digest at the signed
    position the passing version holds."""
    ledger = key_store.ledger
    by_resigns: dict[tuple[str, str, str, str], AuditEntry] = {}
    by_position: dict[tuple[str, str, str, Any], AuditEntry] = {}
    for e in entries:
        if e.status not in GOOD_STATUSES or e.resigns is None:
            continue
        by_resigns.setdefault((e.entity, e.project, e.name, e.resigns), e)
        if e.position is not None:
            by_position.setdefault((e.entity, e.project, e.name, e.position), e)
    for e in entries:
        digest = e.stored_manifest_digest
        if e.status not in SUPERSEDABLE or e.aliases or digest is None:
            continue
        copy = by_resigns.get((e.entity, e.project, e.name, digest))
        if copy is None:
            # a re-signed original: its copy holds the first original's position, which the
            # ledger recorded for this digest; only for a manifest we signed ourselves (a
            # reader's sighting of a thief's manifest claiming that position must not count)
            seen = ledger.seen_manifest(history_key(e.entity, e.project, e.name), digest)
            if e.claimed_row_recorded and seen is not None and seen.position is not None:
                copy = by_position.get((e.entity, e.project, e.name, seen.position))
        if copy is not None:
            e.reason = (f"{e.status.value}, re-signed as {copy.version} by {copy.key_id} "
                        f"(`resign`): that version serves this manifest's content")
            e.status = Status.SUPERSEDED


def verdict(origin: str, *, deep: bool) -> Status:
    """The status of a verified version recorded in the ledger: ``valid``/``adopted`` only
    when every payload byte was re-hashed; a fast audit says ``signature-ok``."""
    if not deep:
        return Status.SIGNATURE_OK
    return Status.ADOPTED if origin == "adopted" else Status.VALID


def check_versions(
    store: ArtifactStore,
    versions: list[ArtifactVersion],
    *,
    key_store: KeyStore,
    ledger: _LedgerIndex,
    policy: Policy,
    deep: bool,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
    processes: bool | None = None,
) -> list[AuditEntry]:
    """``check_version`` for every version, on a thread pool (hashlib releases the GIL while
    hashing, and so does Ed25519 verification in ``cryptography``) or, for a local store, on
    forked worker processes (``processes``; see ``_fork_is_safe``): the per-version Python
    work (parsing, key checks, listing) holds the GIL, so threads use one core for it and
    processes use all of them. Entries come back in ``versions`` order, the same either way:
    every process runs this same ``one_batch`` on the same objects (inherited across fork).

    A store with ``list_files_of`` (the local store) lists versions in batches of one
    artifact's consecutive versions (at most ``BATCH`` of them), resolving no path per version
    (``stores.local_files.list_versions_below``); otherwise each version is listed on its own
    (``files_on_disk``)."""
    total = len(versions)
    workers = max(1, min(workers or os.cpu_count() or 1, total or 1))
    step = max(1, total // 200)
    batch_lister = getattr(store, "list_files_of", None)

    def one_batch(batch: list[ArtifactVersion]) -> list[AuditEntry]:
        if batch_lister is None:
            return [
                check_version(store, av, key_store=key_store, ledger=ledger, policy=policy, deep=deep)
                for av in batch
            ]
        return [
            check_version(
                store, av, key_store=key_store, ledger=ledger, policy=policy, deep=deep,
                listed=_listed_files(av, root, got),
            )
            for av, root, got in batch_lister(batch)
        ]

    entries: list[AuditEntry] = []

    def collect(results: Iterable[list[AuditEntry]]) -> None:
        for done in results:
            before = len(entries)
            entries.extend(done)
            if progress is not None and (
                len(entries) // step != before // step or len(entries) == total
            ):
                progress(len(entries), total)

    if batch_lister is not None and _use_processes(processes, total, workers):
        batch_lister([])  # once-per-store work (resolving its artifacts folder) before the fork
        collect(_in_processes(one_batch, versions, workers))
        return entries
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audit") as pool:
        collect(pool.map(one_batch, _batches(versions, batch_lister is not None)))
    return entries


# A local store of at least this many versions is checked on forked processes (``processes``
# None); below it, forking costs more than it saves.
PROCESS_MIN_VERSIONS = 256
# the names of this library's background threads that survive a fork (``_fork_is_safe``):
# ``stores.local_fsync``'s pool (its thread_name_prefix, then "_N") and the ledger's flusher
FORK_AWARE_THREADS = ("dws-fsync_", "ledger-group-commit")
# What forked children run: set by the parent for the fork, read by children (never pickled).
_FORKED: dict[str, Any] = {}


def _fork_is_safe() -> bool:
    """Forking is safe only on Linux and while no other thread can hold a lock the children
    take (a lock held by another thread at the fork stays held forever in the child: the key
    store's, a module's import lock, a stream's, OpenSSL's). So the audit forks only when every
    other thread is one of this library's fork-aware background threads (``FORK_AWARE_THREADS``):
    ``stores.local_fsync``'s workers run only for a publishing thread, which waits for them, so
    with no other thread they are idle, and a child never uses their pool; the ledger's group
    flusher (``core/ledger_groups.py``) is kept out of SQLite across a fork by its own fork
    handlers, which also reset its state in the child.

    Inherited connections (SQLite, PostgreSQL) are neither used by the children (the ledger is
    read before the fork, ``list_files_of`` does not read the store index) nor closed there
    (workers end with ``os._exit``; objects that are garbage at the fork are frozen, so no
    collection in a child closes one: ``core/sqlite_fork.py``). Never in a daemonic
    ``multiprocessing`` worker (which may not have children)."""
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return False
    if multiprocessing.current_process().daemon:
        return False  # a daemonic multiprocessing worker may not start processes
    me = threading.current_thread()
    return all(t is me or t.name.startswith(FORK_AWARE_THREADS) for t in threading.enumerate())


def _use_processes(processes: bool | None, total: int, workers: int) -> bool:
    if processes is False or workers < 2 or not _fork_is_safe():
        return False
    return processes is True or total >= PROCESS_MIN_VERSIONS


def _in_processes(
    one_batch: Callable[[list[ArtifactVersion]], list[AuditEntry]],
    versions: list[ArtifactVersion],
    workers: int,
) -> Iterator[list[AuditEntry]]:
    """``one_batch`` over ``_batches(versions)`` on ``workers`` forked processes, results in
    order. Tasks are runs of consecutive batches (~32 per worker), named by index
    ranges into ``versions``, which the children inherit: nothing but entries crosses a pipe."""
    bounds: list[tuple[int, int]] = []
    lo = 0
    for batch in _batches(versions, True):
        bounds.append((lo, lo + len(batch)))
        lo += len(batch)
    # ~32 tasks per worker: a short tail (the last task runs while the other core may idle),
    # and per task only ~0.2 ms of pipe and pickling
    per_task = max(BATCH, len(versions) // (workers * 32))
    tasks: list[list[tuple[int, int]]] = [[]]
    for b in bounds:
        if tasks[-1] and b[1] - tasks[-1][0][0] > per_task:
            tasks.append([])
        tasks[-1].append(b)
    _FORKED.update(run=one_batch, versions=versions)
    gc.collect()
    gc.freeze()  # what is garbage now is never collected (nor closed) in a child
    try:
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("fork")
        ) as pool:
            with warnings.catch_warnings():
                # Python >= 3.12 warns at every fork with other threads alive; the only ones
                # here are the fork-aware threads ``_fork_is_safe`` accepted
                warnings.filterwarnings("ignore", "This process .* is multi-threaded",
                                        DeprecationWarning)
                futures = [pool.submit(_run_forked, task) for task in tasks]  # the first forks
            gc.unfreeze()
            _FORKED.clear()  # the children hold their copies; this process needs none
            for task, future in zip(tasks, futures, strict=True):
                try:
                    done = future.result()
                except BrokenProcessPool as exc:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise StoreError(
                        f"an audit worker process ended before reporting its versions ({exc})",
                        hint="run the audit again; audit_store(processes=False) checks on threads",
                    ) from None
                try:
                    checked = _entries_of(done, [av for lo, hi in task for av in versions[lo:hi]])
                except StoreError:
                    pool.shutdown(wait=True, cancel_futures=True)  # no wait for the rest
                    raise
                yield checked
    finally:
        gc.unfreeze()
        _FORKED.clear()


def _entries_of(done: Any, wanted: list[ArtifactVersion]) -> list[AuditEntry]:
    """A child's entries, checked to be one per version of its task, in order: entries are
    matched to versions by position (``_check_history``), so a list that is shorter, reordered
    or names other versions fails the audit instead of giving a version another's verdict."""
    if type(done) is not list or len(done) != len(wanted) or any(
        type(e) is not AuditEntry
        or (e.entity, e.project, e.name, e.version)
        != (av.entity, av.project, av.name, av.version_label)
        for e, av in zip(done, wanted, strict=True)
    ):
        raise StoreError(
            f"an audit worker process returned entries that do not match its {len(wanted)} "
            "versions",
            hint="run the audit again; audit_store(processes=False) checks on threads",
        )
    return done


def _run_forked(task: list[tuple[int, int]]) -> list[AuditEntry]:
    """In a forked child: ``one_batch`` of each index range of the inherited versions."""
    run, versions = _FORKED["run"], _FORKED["versions"]
    out: list[AuditEntry] = []
    for lo, hi in task:
        out.extend(run(versions[lo:hi]))
    return out


BATCH = 64  # versions per task: enough to share an artifact folder, small enough to balance


def _batches(versions: list[ArtifactVersion], by_artifact: bool) -> Iterator[list[ArtifactVersion]]:
    """Consecutive versions of one artifact, at most ``BATCH`` together (one each without a
    batch lister)."""
    batch: list[ArtifactVersion] = []
    for av in versions:
        if batch and (
            not by_artifact
            or len(batch) >= BATCH
            or (av.entity, av.project, av.name) != (batch[0].entity, batch[0].project, batch[0].name)
        ):
            yield batch
            batch = []
        batch.append(av)
    if batch:
        yield batch


def _listed_files(
    av: ArtifactVersion, root: Path, got: list[DiskEntry] | SecureArtifactError
) -> Callable[[], dict[str, Path]]:
    """The files of one version of a batch listing, checked as ``files_on_disk`` checks them
    (``files_of_listing``), each at its path below the listed folder; raises the listing's
    error. The verifier opens each file by that path with ``O_NOFOLLOW`` and checks it is a
    regular file of the signed size, as it does with ``files_on_disk``'s paths."""

    def files() -> dict[str, Path]:
        if isinstance(got, SecureArtifactError):
            raise got
        return files_of_listing(av, got, root.joinpath)

    return files


def _flag(entry: AuditEntry, status: Status, reason: str) -> None:
    if entry.status in GOOD_STATUSES:
        entry.status = status
        entry.reason = reason
        entry.error_type = "RollbackError"


def _check_history(
    entries: list[AuditEntry], versions: list[ArtifactVersion], key_store: KeyStore
) -> None:
    """Per artifact: replays, forks, aliases behind the ledger's marks or the store's newest,
    and chain gaps (see the module docstring)."""

    ledger = key_store.ledger
    by_artifact: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i, av in enumerate(versions):
        by_artifact[(av.entity, av.project, av.name)].append(i)
    for art, idxs in by_artifact.items():
        idxs = sorted(idxs, key=lambda i: versions[i].version)
        first_as: dict[str, str] = {}
        for i in idxs:
            entry = entries[i]
            digest = entry.manifest_digest
            if digest is None:
                continue
            if digest in first_as:
                _flag(entry, Status.REPLAYED, f"its signed manifest is also stored as "
                      f"{first_as[digest]}: old content re-published under a new version number")
            else:
                first_as[digest] = entry.version
        signed = [i for i in idxs if entries[i].position is not None]
        if not signed:
            continue
        by_seq: dict[int, list[int]] = defaultdict(list)
        for i in signed:
            by_seq[entries[i].position.sequence].append(i)
        for group in by_seq.values():
            distinct = {entries[i].position for i in group}
            if len(distinct) > 1:
                top = max(distinct)
                for i in group:
                    if entries[i].position != top:
                        _flag(entries[i], Status.FORKED, f"another manifest was signed with "
                              f"sequence {top.sequence} and is later in the signed order "
                              f"({top.short()})")
        _flag_restarts(entries, signed)
        best = max(entries[i].position for i in signed)
        marks = ledger.history_marks(history_key(*art))
        digests = set(first_as)
        for i in idxs:
            entry, av = entries[i], versions[i]
            pos = entry.position
            for alias in av.aliases:
                floor = marks.get(alias)
                if alias == "latest":
                    floor = best if floor is None else max(floor, best)
                if floor is None:
                    continue
                if pos is None or pos < floor:
                    _flag(entry, Status.ROLLED_BACK, f"alias {alias!r} is on {av.version_label}"
                          f" ({pos.short() if pos else 'format 1, no signed place'}), but "
                          f"{floor.short()} was already recorded for it")
            if entry.parent is not None and entry.parent not in digests and entry.reason is None:
                entry.reason = (f"chain gap: its parent manifest {entry.parent[:12]} is not in "
                                "the store (deleted, or written to another store)")


def _flag_restarts(entries: list[Any], signed: list[int]) -> None:
    """Flag versions whose sequence is higher than one signed long (beyond the clock skew)
    after them: a writer was shown the store without them and restarted the sequence below,
    so the higher one is older content (``core.history.signed_long_before``, as readers
    judge it). One pass in sequence order, keeping the latest signing among lower sequences."""
    ordered = sorted(signed, key=lambda i: entries[i].position)
    latest_below: Any = None  # the position signed last among strictly lower sequences
    latest_here: Any = None
    current = None
    for i in ordered:
        pos = entries[i].position
        if pos.sequence != current:
            if latest_here is not None and (
                latest_below is None or latest_here.signed_at > latest_below.signed_at
            ):
                latest_below = latest_here
            current, latest_here = pos.sequence, None
        if latest_below is not None and signed_long_before(pos, latest_below):
            _flag(entries[i], Status.FORKED, f"sequence {pos.sequence} was signed at "
                  f"{pos.signed_at}, long before {latest_below.short()} with a lower sequence: "
                  "the history was restarted below this version, which is older content")
        if latest_here is None or pos.signed_at > latest_here.signed_at:
            latest_here = pos


def audit_store(
    store: ArtifactStore,
    key_store: KeyStore,
    *,
    deep: bool = True,
    entity: str | None = None,
    project: str | None = None,
    name: str | None = None,
    policy: Policy | None = None,
    progress: Callable[[int, int], None] | None = None,
    store_label: str | None = None,
    workers: int | None = None,
    processes: bool | None = None,
) -> AuditReport:
    """Audit every version of ``store`` (optionally filtered); see the module docstring.

    ``workers``: threads (or processes) checking versions at once (default: one per core).
    ``processes``: check a local store's versions on forked worker processes: None (default)
    when it holds at least ``PROCESS_MIN_VERSIONS`` versions, True at any size, False never;
    only where forking is safe (Linux, and no other thread but the library's fork-aware ones:
    ``_fork_is_safe``), else on threads. The statuses and the report are the same either way."""
    started = time.perf_counter()
    policy = policy or verification_policy()
    versions: list[ArtifactVersion] = []
    bad_rows: list[VersionRowError] = []  # malformed index rows: reported, the others audited
    for item in scan_versions(store, entity=entity, project=project, name=name):
        if isinstance(item, VersionRowError):
            bad_rows.append(item)
        else:
            versions.append(item)
    ledger = _LedgerIndex(key_store.ledger.rows())
    entries = check_versions(
        store,
        versions,
        key_store=key_store,
        ledger=ledger,
        policy=policy,
        deep=deep,
        progress=progress,
        workers=workers,
        processes=processes,
    )
    _check_history(entries, versions, key_store)
    _mark_superseded(entries, key_store)
    entries.extend(_row_error_entry(exc) for exc in bad_rows)
    keys = [r.to_json() for r in key_store.records()]
    for k in keys:
        k.pop("passphrase_env", None)
    return AuditReport(
        entries=entries,
        key_store=str(key_store.path),
        store=store_label or repr(store),
        deep=deep,
        elapsed_s=time.perf_counter() - started,
        keys=keys,
    )


# --- model registry links (kept separate from the version audit above) ---------------------


def audit_links(store_root: Path, key_store: Any, policy: Policy | None = None) -> list[dict[str, Any]]:
    """Every model-registry link statement under a store folder with its status: ``valid`` (the
    statement verifies), else the status of the error that refused it, with the reason."""

    rows: list[dict[str, Any]] = []
    for path, version, got in list_links(Path(store_root), key_store, policy or verification_policy()):
        row: dict[str, Any] = {"registry": f"{path.qualified}:v{version}"}
        if isinstance(got, SecureArtifactError):
            row.update(status=str(status_of_error(got)), reason=got.reason, key_id=got.key_id)
        else:
            row.update(
                status=str(Status.VALID),
                aliases=list(got.aliases),
                source=got.source_label,
                manifest_sha256=got.source.get("manifest_sha256"),
                key_id=got.key_id,
                algorithm=got.algorithm,
            )
        rows.append(row)
    return rows
