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

Versions without any alias are reported as skipped (readers cannot reach them by alias, and
re-publishing them would move ``latest`` to old content). Within an artifact the version
``latest`` points to is re-published last, so ``latest`` keeps naming the newest content.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import (
    ExpiredKeyError,
    KeyStoreError,
    SecureArtifactError,
    TamperedPayloadError,
    UnsignedPayloadError,
)
from ..core.manifest import MANIFEST_NAME

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
    from ..core.envelope import read_header_unverified

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


def _ledger_vouches(key_store: KeyStore, header: dict[str, Any], kid: str, artifact: str) -> bool:
    digest = header.get("payload_sha256")
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
) -> tuple[dict[str, Any], dict[str, tuple[dict[str, Any], bytes]], dict[str, str]]:
    """The revoked-key path: digests and ledger instead of signatures. Returns the manifest
    header, {payload file: (header, payload bytes)} and {plain file: sha256}."""
    from ..core.fsutil import open_no_follow
    from ..core.manifest import file_sha256

    label = av.qualified_name
    with open_no_follow(files[MANIFEST_NAME]) as fh:
        mdata = fh.read(MAX_MANIFEST_BYTES)
    mheader, mpayload = _split_envelope(mdata, label)
    sha = hashlib.sha256(mpayload).hexdigest()
    if not hmac.compare_digest(sha, str(mheader.get("payload_sha256"))) or not _ledger_vouches(
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
    plain: dict[str, str] = {}
    for rel, entry in entries.items():
        if "envelope_payload_sha256" in entry:
            with open_no_follow(files[rel]) as fh:
                data = fh.read()
            header, payload = _split_envelope(data, label)
            digest = hashlib.sha256(payload).hexdigest()
            if not (
                hmac.compare_digest(digest, str(header.get("payload_sha256")))
                and hmac.compare_digest(digest, str(entry["envelope_payload_sha256"]))
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
            digest, _ = file_sha256(files[rel])
            if not hmac.compare_digest(digest, str(entry.get("sha256"))):
                raise TamperedPayloadError(
                    f"{rel!r} does not match the manifest", artifact=label, key_id=kid
                )
            plain[rel] = digest
    return mheader, payloads, plain


def _check_by_signature(
    key_store: KeyStore, av: ArtifactVersion, files: dict[str, Path], policy: Any
) -> tuple[dict[str, Any], dict[str, tuple[dict[str, Any], bytes]], dict[str, str]]:
    from ..core.envelope import verify_bytes
    from ..core.fsutil import open_no_follow
    from .audit import verify_version_manifest

    vm = verify_version_manifest(files, av, key_store=key_store, policy=policy, deep=True)
    payloads: dict[str, tuple[dict[str, Any], bytes]] = {}
    plain: dict[str, str] = {}
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
            if not hmac.compare_digest(header.payload_sha256, entry.envelope_payload_sha256):
                raise TamperedPayloadError(f"{rel!r} changed", artifact=av.qualified_name)
            payloads[rel] = (header.as_dict(), bytes(payload))
        else:
            plain[rel] = entry.sha256 or ""
    return vm.header.as_dict(), payloads, plain


def _order(versions: list[ArtifactVersion]) -> list[ArtifactVersion]:
    by_art: dict[tuple[str, str, str], list[ArtifactVersion]] = defaultdict(list)
    for av in versions:
        by_art[(av.entity, av.project, av.name)].append(av)
    out: list[ArtifactVersion] = []
    for group in by_art.values():
        group.sort(key=lambda v: ("latest" in v.aliases, v.version))
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
) -> list[ResignResult]:
    """Re-sign every aliased version signed by ``kid`` (see the module docstring)."""
    from ..artifacts.publishing import publish_signed
    from ..artifacts.verification import files_on_disk
    from ..core.envelope import read_header_unverified
    from ..core.keys import KeyStatus, check_kid
    from .audit import verification_policy

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
    for av in store.list_versions(entity=entity, project=project, name=name):
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
    files_of = {id(av): f for av, f in todo}
    for av in _order([av for av, _ in todo]):
        files = files_of[id(av)]
        check = "ledger-digest" if revoked else "verified"
        try:
            if revoked:
                _mh, payloads, plain = _check_by_ledger(key_store, kid, av, files)
            else:
                try:
                    _mh, payloads, plain = _check_by_signature(key_store, av, files, policy)
                except ExpiredKeyError:
                    check = "ledger-digest"
                    _mh, payloads, plain = _check_by_ledger(key_store, kid, av, files)
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
            metadata={"dagster_wandb_secure_resigned_from": f"{av.version_label} ({kid})"},
            expected_digests=plain,
        )
        results.append(ResignResult(av, "resigned", None, new.version_label, check=check))
    return results
