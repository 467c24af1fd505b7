"""Re-signing artifacts of a retired, expired or revoked key with the current primary.

``resign_from(store, key_store, kid)`` re-publishes, as NEW versions signed by the primary
(ledger ``origin="resigned"``), the aliased versions whose manifest names ``kid``:

- a key that still verifies (verify-only, or primary): the version is verified in full (deep:
  every byte hashed) with the normal rules first;
- a revoked, destroyed or expired key: signatures no longer count, so every envelope's payload
  is hashed and must equal its header's digest AND a ledger row recorded when this key store
  signed it (same key id, digest, length, artifact and context); every plain file must match
  the manifest's digest. A tampered version has no matching ledger row and is refused: a
  revoked key cannot be used to launder data.

History is kept: a re-signed copy of a format-2 version signs its original's ``sequence`` and
``parent`` with ``resigns: {sequence, manifest_digest, signed_at}`` of the original, so it takes
the original's place in the signed order (readers' marks accept it, nothing moves back); a
format-1 original is upgraded (a new sequence, ``resigns`` naming only its digest; its unsigned
metadata is not signed). Copies are published in signed order and each keeps its original's
aliases; when ``latest`` was on a version not signed by ``kid``, that version is re-published
last (verified first, its own place kept) so ``latest`` never lands on older content.

Before anything is published every alias of every artifact concerned is checked like a reader
with this key store's ledger would check it, and ``latest`` must be on the version highest in the
signed order: if one fails (the alias was moved back), ``resign`` refuses with a
``RollbackError`` and publishes nothing.

Versions without any alias are reported as skipped (readers cannot reach them by alias).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts.history import history_key, signed_manifest_of
from ..artifacts.publishing import publish_signed
from ..artifacts.verification import files_on_disk
from ..core.digests import (
    DEFAULT_DIGEST,
    ENVELOPE_FIELDS,
    FILE_FIELDS,
    digest_bytes,
    digest_file,
    get_digest,
)
from ..core.envelope import format_time, parse_time, read_header_unverified, verify_bytes
from ..core.errors import (
    ConfigurationError,
    ExpiredKeyError,
    KeyStoreError,
    RollbackError,
    SecureArtifactError,
    TamperedPayloadError,
    UnsignedPayloadError,
)
from ..core.fsutil import open_no_follow
from ..core.history import Position, judge
from ..core.keys import KeyStatus, check_kid
from ..core.manifest import MANIFEST_NAME, History, Resigns, history_of_document
from .audit import verification_policy, verify_version_manifest

if TYPE_CHECKING:
    from ..core.keys import KeyStore
    from ..stores.base import ArtifactStore, ArtifactVersion

__all__ = ["ResignResult", "resign_from"]

PREAMBLE_SIZE = 16
MAX_MANIFEST_BYTES = 256 << 20


@dataclass
class ResignResult:
    source: ArtifactVersion
    outcome: str  # resigned | skipped | refused | would-resign
    reason: str | None = None
    new_version: str | None = None
    check: str | None = None  # "verified" | "ledger-digest"

    def as_dict(self) -> dict[str, Any]:
        av = self.source
        return {
            "artifact": f"{av.entity}/{av.project}/{av.name}",
            "version": av.version_label,
            "aliases": list(av.aliases),
            "outcome": self.outcome,
            "check": self.check,
            "reason": self.reason,
            "new_version": self.new_version,
        }


def _split_envelope(data: bytes, label: str) -> tuple[dict[str, Any], bytes]:
    """Header (UNVERIFIED) and payload of an envelope held in memory; lengths checked."""

    info = read_header_unverified(data)
    header = info["header"]
    offset = PREAMBLE_SIZE + info["header_length"] + info["signature_length"]
    payload = data[offset:]
    if len(payload) != header.get("payload_length"):
        raise TamperedPayloadError(
            f"payload is {len(payload)} bytes, its header says {header.get('payload_length')}",
            artifact=label,
            key_id=str(header.get("kid"))[:80],
        )
    return header, payload


def _claimed_digest(header: dict[str, Any]) -> tuple[str, str]:
    """(digest_alg, hex digest) an unverified header claims; ("", "") when it names none known."""
    try:
        algo = get_digest(header.get("digest_alg"))
    except ValueError:
        return "", ""
    value = header.get(algo.header_field)
    return (algo.name, value) if isinstance(value, str) else ("", "")


def _entry_digest(entry: dict[str, Any], fields: Mapping[str, str]) -> tuple[str, str] | None:
    """(digest_alg, hex) of a raw manifest entry under one of ``fields`` (key -> algorithm)."""
    for key, alg in fields.items():
        if isinstance(entry.get(key), str):
            return alg, entry[key]
    return None


def _ledger_vouches(key_store: KeyStore, header: dict[str, Any], kid: str, artifact: str) -> bool:
    digest = _claimed_digest(header)[1]
    if not isinstance(digest, str) or len(digest) != 64:
        return False
    for row in key_store.ledger.find_digest(digest):
        if (
            row.key_id == kid
            and row.artifact == artifact
            and row.length == header.get("payload_length")
            and row.context == header.get("context")
            and row.serializer == header.get("serializer")
        ):
            return True
    return False


def _check_by_ledger(
    key_store: KeyStore, kid: str, av: ArtifactVersion, files: dict[str, Path]
) -> tuple[dict[str, Any], dict[str, tuple[dict[str, Any], bytes]], dict[str, tuple[str, str]]]:
    """The revoked-key path: digests and ledger instead of signatures. Returns the manifest
    header, {payload file: (header, payload bytes)} and {plain file: sha256}."""

    label = av.qualified_name
    with open_no_follow(files[MANIFEST_NAME]) as fh:
        mdata = fh.read(MAX_MANIFEST_BYTES)
    mheader, mpayload = _split_envelope(mdata, label)
    malg, mclaimed = _claimed_digest(mheader)
    actual = digest_bytes(malg, mpayload) if malg else ""
    if not malg or not hmac.compare_digest(actual, mclaimed) or not _ledger_vouches(
        key_store, mheader, kid, av.name
    ):
        raise TamperedPayloadError(
            "the manifest does not match any signature this key store recorded for it",
            artifact=label,
            key_id=kid,
            hint="this version cannot be re-signed; re-materialize the asset",
        )
    if mheader.get("kid") != kid:
        raise TamperedPayloadError("the manifest names another key", artifact=label, key_id=kid)
    document = json.loads(mpayload)
    entries: dict[str, Any] = document.get("files", {})
    if set(entries) != set(files) - {MANIFEST_NAME}:
        raise TamperedPayloadError(
            "the files on disk differ from the manifest's list", artifact=label, key_id=kid
        )
    payloads: dict[str, tuple[dict[str, Any], bytes]] = {}
    plain: dict[str, tuple[str, str]] = {}
    for rel, entry in entries.items():
        signed = _entry_digest(entry, ENVELOPE_FIELDS)
        if signed is not None:
            with open_no_follow(files[rel]) as fh:
                data = fh.read()
            header, payload = _split_envelope(data, label)
            alg, claimed = _claimed_digest(header)
            digest = digest_bytes(alg, payload) if alg else ""
            if not (
                alg == signed[0]
                and hmac.compare_digest(digest, claimed)
                and hmac.compare_digest(digest, signed[1])
                and header.get("kid") == kid
                and _ledger_vouches(key_store, header, kid, av.name)
            ):
                raise TamperedPayloadError(
                    f"{rel!r} does not match the digest recorded in the ledger when it was signed",
                    artifact=label,
                    key_id=kid,
                    hint="this version cannot be re-signed; re-materialize the asset",
                )
            payloads[rel] = (header, payload)
        else:
            want = _entry_digest(entry, FILE_FIELDS) or ("sha256", "")
            digest, _ = digest_file(want[0], files[rel])
            if not hmac.compare_digest(digest, want[1]):
                raise TamperedPayloadError(
                    f"{rel!r} does not match the manifest", artifact=label, key_id=kid
                )
            plain[rel] = (want[0], digest)
    mheader["_document"] = document
    mheader["_digest"] = hashlib.sha256(mdata).hexdigest()
    return mheader, payloads, plain


def _check_by_signature(
    key_store: KeyStore, av: ArtifactVersion, files: dict[str, Path], policy: Any
) -> tuple[dict[str, Any], dict[str, tuple[dict[str, Any], bytes]], dict[str, tuple[str, str]]]:

    vm = verify_version_manifest(files, av, key_store=key_store, policy=policy, deep=True)
    payloads: dict[str, tuple[dict[str, Any], bytes]] = {}
    plain: dict[str, tuple[str, str]] = {}
    for rel, entry in vm.entries.items():
        if entry.envelope_payload_sha256 is not None:
            with open_no_follow(files[rel]) as fh:
                data = fh.read()
            header, payload = verify_bytes(
                data,
                key_store=key_store,
                expected_context=dict(vm.header.context) | {"role": None},
                policy=policy,
            )
            if header.digest_alg != entry.digest_alg or not hmac.compare_digest(
                header.payload_digest, entry.envelope_payload_sha256
            ):
                raise TamperedPayloadError(f"{rel!r} changed", artifact=av.qualified_name)
            payloads[rel] = (header.as_dict(), bytes(payload))
        else:
            plain[rel] = (entry.digest_alg, entry.sha256 or "")
    out = vm.header.as_dict()
    out["_history"] = vm.history
    out["_digest"] = vm.digest
    return out, payloads, plain


def _source_history(
    mh: dict[str, Any], label: str
) -> tuple[History | None, str, str | None]:
    """(history, manifest envelope digest, signed_at text) of the version being re-signed."""

    history = mh.get("_history")
    if history is None and "_document" in mh:
        history = history_of_document(mh["_document"], artifact=label)
    signed_at = mh.get("signed_at")
    if signed_at is not None and not isinstance(signed_at, str):
        signed_at = format_time(signed_at)
    elif isinstance(signed_at, str):
        signed_at = format_time(parse_time(signed_at))
    return history, str(mh["_digest"]), signed_at


def _position(history: History | None, digest: str, signed_at: str | None) -> Position | None:
    if history is None or signed_at is None:
        return None
    r = history.resigns
    if r is not None and r.sequence is not None and r.signed_at is not None:
        return Position(r.sequence, r.signed_at, r.manifest_digest)
    return Position(history.sequence, signed_at, digest)


def _kept_history(history: History, position: Position, aliases: tuple[str, ...]) -> History:
    return History(
        sequence=history.sequence,
        parent=history.parent,
        metadata=dict(history.metadata),
        description=history.description,
        aliases=tuple(history.aliases) or ("latest", *aliases),
        empty=history.empty,
        resigns=Resigns(position.sequence, position.digest, position.signed_at),
    )


def check_aliases_before_resign(
    store: ArtifactStore, key_store: KeyStore, versions: list[ArtifactVersion], policy: Any
) -> dict[tuple[str, str, str], ArtifactVersion]:
    """Refuse (``RollbackError``) when an alias of these artifacts already fails the reader's
    rollback check, or ``latest`` is not on the version highest in the signed order. Returns
    the version ``latest`` is on, per artifact."""

    ledger = key_store.ledger
    by_art: dict[tuple[str, str, str], list[ArtifactVersion]] = defaultdict(list)
    for av in versions:
        by_art[(av.entity, av.project, av.name)].append(av)
    latest_of: dict[tuple[str, str, str], ArtifactVersion] = {}
    for art, group in by_art.items():
        key = history_key(*art)
        best: tuple[Position, str] | None = None
        latest: tuple[ArtifactVersion, Position | None] | None = None
        for av in group:
            vm = signed_manifest_of(store, key_store, av, policy)
            if vm is None:
                continue
            pos = vm.position
            if pos is not None and (best is None or (pos, vm.digest) > best):
                best = (pos, vm.digest)
            for alias in av.aliases:
                mark = ledger.history_mark(key, alias)
                verdict = judge(
                    alias=alias,
                    candidate=pos,
                    candidate_digest=vm.digest,
                    candidate_version=av.version_label,
                    mark=mark,
                    seen=ledger.seen_manifest(key, vm.digest),
                    newest=getattr(ledger.newest_seen(key), "position", None),
                )
                if verdict is not None:
                    raise RollbackError(
                        f"resign refused: {verdict.status}: {verdict.reason}",
                        artifact=av.name,
                        version=av.version_label,
                        key_id=vm.header.kid,
                        hint="move the alias back to the newest signed version (or re-"
                        "materialize the asset) before re-signing; nothing was published",
                    )
            if "latest" in av.aliases:
                latest = (av, pos)
                latest_of[art] = av
        if latest is not None and best is not None and latest[1] is not None:
            if latest[1] < best[0]:
                av = latest[0]
                raise RollbackError(
                    f"resign refused: rolled-back: alias 'latest' is on {av.version_label} "
                    f"({latest[1].short()}), but the store holds a version later in the signed "
                    f"order ({best[0].short()})",
                    artifact=av.name,
                    version=av.version_label,
                    hint="move latest to the newest signed version (or re-materialize the "
                    "asset) before re-signing; nothing was published",
                )
    return latest_of


def _order(
    versions: list[ArtifactVersion], position_of: dict[int, Position | None]
) -> list[ArtifactVersion]:
    """Per artifact: format-1 versions by store number first, then signed order; the version
    ``latest`` is on last."""
    by_art: dict[tuple[str, str, str], list[ArtifactVersion]] = defaultdict(list)
    for av in versions:
        by_art[(av.entity, av.project, av.name)].append(av)
    out: list[ArtifactVersion] = []
    for group in by_art.values():

        def key(v: ArtifactVersion) -> tuple[Any, ...]:
            pos = position_of.get(id(v))
            return ("latest" in v.aliases, pos is not None, pos or Position(0, "", ""), v.version)

        group.sort(key=key)
        out.extend(group)
    return out


def resign_from(
    store: ArtifactStore,
    key_store: KeyStore,
    kid: str,
    *,
    entity: str | None = None,
    project: str | None = None,
    name: str | None = None,
    dry_run: bool = False,
    digest_alg: str = DEFAULT_DIGEST,
) -> list[ResignResult]:
    """Re-sign every aliased version signed by ``kid`` (see the module docstring); the new
    versions use ``digest_alg`` (``core/digests.py``)."""
    try:  # an unknown name fails before anything is published
        get_digest(digest_alg)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None

    check_kid(kid)
    record = key_store.get(kid)
    primary = key_store.primary()
    if primary.kid == kid:
        raise KeyStoreError(
            f"{kid} is the primary key; re-signing with itself changes nothing",
            key_id=kid,
            hint="rotate first (`keys rotate`), then resign --from the old key",
        )
    key_store.signer()  # fail early (NoSigningKeyError) if the primary cannot sign
    policy = verification_policy()
    revoked = record.status in (KeyStatus.REVOKED, KeyStatus.DESTROYED)
    results: list[ResignResult] = []
    todo: list[tuple[ArtifactVersion, dict[str, Path]]] = []
    every = list(store.list_versions(entity=entity, project=project, name=name))
    for av in every:
        try:
            files = files_on_disk(store, av)
            if MANIFEST_NAME not in files:
                continue
            header = read_header_unverified(files[MANIFEST_NAME])["header"]
        except SecureArtifactError:
            continue
        if header.get("kid") != kid:
            continue
        if not av.aliases:
            results.append(ResignResult(av, "skipped", "no alias points to this version"))
            continue
        todo.append((av, files))
    touched = {(av.entity, av.project, av.name) for av, _ in todo}
    concerned = [av for av in every if (av.entity, av.project, av.name) in touched]
    latest_of = check_aliases_before_resign(store, key_store, concerned, policy)

    todo_ids = {id(av) for av, _ in todo}
    restore: set[int] = set()
    for art, av in latest_of.items():
        if not any(id(x) == id(av) for x, _ in todo) and art in touched:
            # latest is on a version of another key: re-publish it last, so latest stays on it
            try:
                todo.append((av, files_on_disk(store, av)))
                restore.add(id(av))
            except SecureArtifactError:
                pass
    positions: dict[int, Position | None] = {}
    for av, _ in todo:
        vm = signed_manifest_of(store, key_store, av, policy)
        positions[id(av)] = vm.position if vm is not None else None
    files_of = {id(av): f for av, f in todo}
    for av in _order([av for av, _ in todo], positions):
        files = files_of[id(av)]
        check = "ledger-digest" if revoked and id(av) in todo_ids else "verified"
        try:
            if check == "ledger-digest":
                _mh, payloads, plain = _check_by_ledger(key_store, kid, av, files)
            else:
                try:
                    _mh, payloads, plain = _check_by_signature(key_store, av, files, policy)
                except ExpiredKeyError:
                    if id(av) in restore:
                        raise
                    check = "ledger-digest"
                    _mh, payloads, plain = _check_by_ledger(key_store, kid, av, files)
            history, mdigest, signed_at = _source_history(_mh, av.qualified_name)
        except (SecureArtifactError, ValueError, UnsignedPayloadError) as exc:
            reason = exc.reason if isinstance(exc, SecureArtifactError) else str(exc)
            results.append(ResignResult(av, "refused", reason, check=check))
            continue
        if dry_run:
            results.append(ResignResult(av, "would-resign", None, check=check))
            continue
        if len(payloads) > 1:
            results.append(ResignResult(av, "refused", "several payload envelopes", check=check))
            continue
        payload_name, (pheader, payload) = next(iter(payloads.items()), (None, ({}, b"")))
        context = pheader.get("context") if payload_name else _mh.get("context")
        context = {k: v for k, v in dict(context or {}).items() if k != "role"}
        position = _position(history, mdigest, signed_at)
        kept = None
        if history is not None and position is not None:
            kept = _kept_history(history, position, tuple(av.aliases))
        source_kid = str(_mh.get("kid") or kid)
        new = publish_signed(
            store,
            key_store,
            av,
            payload_name=payload_name,
            payload=payload if payload_name else None,
            serializer=pheader.get("serializer"),
            serializer_version=str(pheader.get("serializer_version", "")),
            serializer_params=pheader.get("serializer_params", {}),
            other_files={rel: files[rel] for rel in plain},
            context=context,
            origin="resigned",
            aliases=tuple(av.aliases),
            metadata={"dagster_wandb_secure_resigned_from": f"{av.version_label} ({source_kid})"},
            expected_digests=plain,
            history=kept,
            resigns=None if kept else Resigns(None, mdigest, None),
            digest_alg=digest_alg,
        )
        results.append(ResignResult(av, "resigned", None, new.version_label, check=check))
    return results
