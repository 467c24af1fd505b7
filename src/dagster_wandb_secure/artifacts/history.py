"""The signed version history seen from a store: allocating a writer's next place, and the
reader's alias check (rollback, fork, replay) with the marks it leaves in the ledger.

Only verified manifests count: the store's version numbers, aliases and index rows are lookup
hints. ``core/history.py`` holds the order and the verdict; this module feeds them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.errors import RollbackError, SecureArtifactError
from ..core.history import Position, judge
from ..core.manifest import (
    MANIFEST_NAME,
    VerifiedManifest,
    manifest_byte_cap,
    manifest_digest,
    read_manifest,
    read_manifest_bytes,
)
from ..core.policy import Policy
from ..stores.base import list_manifests
from .target import version_context

if TYPE_CHECKING:
    from ..core.keys import KeyStore
    from ..stores.base import ArtifactStore, ArtifactVersion

__all__ = [
    "Allocation",
    "Head",
    "allocate",
    "check_alias_history",
    "history_key",
    "note_published",
    "store_head",
]

def history_key(entity: str, project: str, name: str) -> str:
    """The ledger key of one artifact's history: ``entity/project/name`` (partition suffix
    included in ``name``)."""
    return f"{entity}/{project}/{name}"


def signed_manifest_of(
    store: ArtifactStore, key_store: KeyStore, av: ArtifactVersion, policy: Policy | None = None
) -> VerifiedManifest | None:
    """The verified manifest envelope of ``av`` (files not checked), or None when it has none
    that verifies for this artifact."""
    try:
        path = store.file_path(av, MANIFEST_NAME)
        return read_manifest(
            path,
            key_store=key_store,
            expected_context=version_context(av),
            policy=policy,
            version=av.version_label,
        )
    except (SecureArtifactError, OSError):
        return None


@dataclass(frozen=True)
class Head:
    """The store version highest in the signed order: its place and its manifest digest (a
    re-sign's place is its original's, whose sequence it signs again)."""

    position: Position
    digest: str

    @property
    def sequence(self) -> int:
        return self.position.sequence

    @property
    def order(self) -> tuple[Position, str]:
        return self.position, self.digest


def store_head(
    store: ArtifactStore,
    key_store: KeyStore,
    entity: str,
    project: str,
    name: str,
    *,
    policy: Policy | None = None,
) -> Head | None:
    """The format-2 manifest highest in the signed order among **every** store version of the
    artifact (what another writer without our ledger published).

    Every version is read, whatever its store number: the numbers are attacker-chosen, so a
    scan of only the "newest" ones lets planted junk at the top hide the real head and make a
    writer whose ledger has not seen the artifact restart the sequence below it. Only each
    version's manifest file is fetched (``list_manifests``: never a payload, also online), at
    most ``manifest_byte_cap`` bytes. A manifest whose digest the ledger already recorded for
    this artifact (``seen_manifest``: only ever recorded from a verified manifest) counts with
    the recorded position without a second signature check, even if its key was revoked or
    expired since (it can only raise the floor, and the ledger's ``newest_seen``, which
    ``allocate`` also consults, already counts it); every other manifest is verified."""
    policy = policy or Policy.default()
    key = history_key(entity, project, name)
    ledger = key_store.ledger
    try:
        items = list(list_manifests(store, entity=entity, project=project, name=name,
                                    relpath=MANIFEST_NAME, max_bytes=manifest_byte_cap(policy)))
    except SecureArtifactError:
        return None
    found = [(av, data, manifest_digest(data)) for av, data in items if isinstance(data, bytes)]
    # the ledger's records of all of them in one lookup (not one read per store version)
    known = _seen_all(ledger, key, [digest for _av, _data, digest in found])
    best: Head | None = None
    for av, data, digest in found:
        head = _head_of(known.get(digest), key_store, av, data, digest, policy)
        if head is not None and (best is None or head.order > best.order):
            best = head
    return best


def _seen_all(ledger: Any, key: str, digests: list[str]) -> dict[str, Any]:
    if not digests:
        return {}
    many = getattr(ledger, "seen_manifests", None)
    if callable(many):
        return dict(many(key, digests))
    seen = ((d, ledger.seen_manifest(key, d)) for d in digests)  # a backend without the batch
    return {d: s for d, s in seen if s is not None}


def _head_of(
    seen: Any, key_store: KeyStore, av: ArtifactVersion, data: bytes, digest: str, policy: Policy
) -> Head | None:
    if seen is not None:  # verified when recorded; format 1 (no position) never counts
        return None if seen.position is None else Head(seen.position, digest)
    try:
        vm = read_manifest_bytes(data, key_store=key_store, expected_context=version_context(av),
                                 policy=policy, version=av.version_label)
    except SecureArtifactError:
        return None
    return None if vm.position is None else Head(vm.position, vm.digest)


@dataclass(frozen=True)
class Allocation:
    key: str
    sequence: int
    parent: str | None


@contextmanager
def allocate(
    store: ArtifactStore,
    key_store: KeyStore,
    entity: str,
    project: str,
    name: str,
    *,
    policy: Policy | None = None,
) -> Iterator[Allocation]:
    """Hold the artifact's history lock while the caller signs and publishes; yields the next
    sequence (``max(ledger's last allocated, store's highest verified) + 1``) and the parent
    (the manifest envelope highest in the signed order, from the store or our ledger)."""
    key = history_key(entity, project, name)
    ledger = key_store.ledger
    with ledger.history_lock(key):
        head = store_head(store, key_store, entity, project, name, policy=policy)
        # the ledger's newest seen manifest raises the floor too (one step: allocate_next)
        sequence, seen = ledger.allocate_next(key, floor=head.sequence if head else 0)
        candidates: list[tuple[Position, str]] = []
        if head is not None:
            candidates.append(head.order)
        if seen is not None and seen.position is not None:
            candidates.append((seen.position, seen.digest))
        parent = max(candidates)[1] if candidates else None
        yield Allocation(key, sequence, parent)


def note_published(
    key_store: KeyStore,
    key: str,
    *,
    digest: str,
    position: Position,
    version: str,
    aliases: Sequence[str],
) -> None:
    """The writer's record of its own version: manifest seen, and marks for its aliases (a
    reader sharing this ledger then refuses anything earlier for them). ``publish_version``
    records them with the version's rows in one ``record_version`` instead."""
    key_store.ledger.record_version(
        (), artifact_version=version, history_key=key, manifest_digest=digest,
        position=position, marks=aliases,
    )


def check_alias_history(
    key_store: KeyStore,
    av: ArtifactVersion,
    alias: str | None,
    vm: VerifiedManifest,
    *,
    record: bool = True,
) -> None:
    """The reader's history check of a verified manifest, then its marks.

    ``alias`` None is a pinned read (``version: vN``): never a rollback; the manifest was
    already verified for this artifact's name and project. An alias read is refused with a
    ``RollbackError`` (status in ``reason``) when ``core.history.judge`` says so. Only then,
    and only from this verified manifest, the ledger learns the manifest and the alias mark."""
    key = history_key(av.entity, av.project, av.name)
    ledger = key_store.ledger
    position = vm.position
    if alias is not None:
        mark = ledger.history_mark(key, alias)
        mark_seen = ledger.seen_manifest(key, mark.digest) if mark is not None else None
        verdict = judge(
            alias=alias,
            candidate=position,
            candidate_digest=vm.digest,
            candidate_version=av.version_label,
            mark=mark,
            seen=ledger.seen_manifest(key, vm.digest),
            newest=_newest(ledger.newest_seen(key)),
            mark_version=mark_seen.version if mark_seen else None,
        )
        if verdict is not None:
            raise RollbackError(
                f"{verdict.status}: {verdict.reason}",
                artifact=av.name,
                version=av.version_label,
                key_id=vm.header.kid,
                hint="read an explicit version (version: vN) if that content is really wanted; "
                "otherwise investigate who can publish to the artifact store and "
                "re-materialize the asset",
            )
    if not record:
        return
    with ledger.batch():
        ledger.record_manifest(key, vm.digest, position, version=av.version_label, source="reader")
        if alias is not None and position is not None:
            ledger.advance_mark(key, alias, position, source="reader")


def _newest(seen: object) -> Position | None:
    return getattr(seen, "position", None)
