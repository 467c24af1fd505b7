"""Turn one Dagster output into one signed artifact version.

Every file of the version is signed: a Python object becomes ``output.<serializer>``, a signed
envelope; W&B objects, the files of a user-built ``wandb.Artifact`` and ``add_files``/``add_dirs``
are covered, with any ``add_references``, by a signed manifest (``MANIFEST_NAME``) of SHA-256
digests bound to the artifact name, type, partition and asset key. Every signature is recorded in
the key store's ledger and attached to the published version.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import platform
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.digests import DEFAULT_DIGEST, digest_file, get_digest
from ..core.envelope import EnvelopeHeader, format_time, seal_serialized_to, seal_to
from ..core.errors import SecureArtifactError, TamperedPayloadError, UnsafePathError
from ..core.fsutil import PRIVATE_DIR_MODE, open_no_follow, safe_relpath
from ..core.history import Position
from ..core.keys import KeyStore
from ..core.manifest import (
    MANIFEST_NAME,
    History,
    ManifestEntry,
    Resigns,
    describe_file,
    write_manifest,
)
from ..core.policy import Policy
from ..core.serializers import auto_serializer_name, get_serializer
from ..stores.base import (
    ArtifactStore,
    ArtifactVersion,
    StagedDigest,
    StagingArea,
    check_alias,
    staging_area,
)
from .config import LocalAddition, WandbArtifactsIOManagerError, WriteConfig
from .history import allocate, history_key
from .naming import run_alias
from .session import Session
from .target import Target
from .wandb_objects import (
    StagedFiles,
    is_wandb_artifact,
    is_wandb_object,
    stage_user_artifact,
    stage_wandb_object,
)

DEFAULT_TYPE = "artifact"
PAYLOAD_STEM = "output"
INTEGRATION = "dagster_wandb_secure"


@dataclass(frozen=True)
class Published:
    version: ArtifactVersion
    key_id: str
    algorithm: str
    payload_sha256: str  # the signed payload digest, under ``digest_alg`` (historical name)
    serializer: str | None
    size: int
    sequence: int = 0  # the signed sequence of the version in its artifact's history
    digest_alg: str = "sha256"


@dataclass(frozen=True)
class SignedManifest:
    """The manifest a publisher just signed: header, envelope digest and signed position."""

    header: EnvelopeHeader
    digest: str
    position: Position | None
    # what the publisher computed for every file, manifest included (the store's index hints)
    digests: dict[str, StagedDigest] = field(default_factory=dict)


def payload_name(serializer: str) -> str:
    return f"{PAYLOAD_STEM}.{serializer}"


def choose_serializer(
    session: Session, obj: Any, config: WriteConfig
) -> tuple[str, dict[str, Any]]:
    """An explicit ``serialization_module`` wins; otherwise ``default_serialization``."""

    if config.serialization is not None:
        name = config.serialization.name
        params = dict(config.serialization.parameters)
    else:
        name = session.settings.default_serialization
        params = {}
        if name == "auto":
            name = auto_serializer_name(obj)
    get_serializer(name)  # unknown / unavailable serializers fail here, named
    return name, params


def _stage_local_file(staging: Path, relpath: str, source: Path) -> Path:
    relpath = safe_relpath(relpath, what="add_files name")
    target = staging / relpath
    if target.exists() or target.is_symlink():
        raise UnsafePathError(f"two files would be stored under the same name {relpath!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_no_follow(source) as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(target, 0o600)
    return target


def _walk_dir(root: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``root``; a symlink or special file anywhere is refused."""
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"add_dirs: {root} is not a folder (or is a symlink)")
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs + files):
            full = Path(folder) / name
            est = os.lstat(full)
            rel = full.relative_to(root).as_posix()
            if stat.S_ISLNK(est.st_mode):
                raise UnsafePathError(
                    f"add_dirs: {full} is a symlink; refusing to follow it out of {root}",
                    hint="copy the file into the folder instead of linking it",
                )
            if stat.S_ISREG(est.st_mode):
                found.append((rel, full))
            elif not stat.S_ISDIR(est.st_mode):
                raise UnsafePathError(f"add_dirs: {full} is not a regular file")
    return sorted(found)


def stage_additions(
    staging: Path, config: WriteConfig, files: dict[str, Path], policy: Policy
) -> None:
    for item in config.add_files:
        _stage_addition_file(staging, item, files)
    for item in config.add_dirs:
        prefix = item.name
        for rel, full in _walk_dir(item.local_path):
            # checked while walking: a file-count bomb is refused before it is copied
            policy.check_file_count(len(files) + 1)
            name = f"{prefix}/{rel}" if prefix else rel
            files[safe_relpath(name)] = _stage_local_file(staging, name, full)


def _stage_addition_file(staging: Path, item: LocalAddition, files: dict[str, Path]) -> None:
    st = os.lstat(item.local_path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(
            f"add_files: {item.local_path} is a symlink; refusing to follow it",
            hint="point local_path at the file itself",
        )
    name = item.name or item.local_path.name
    files[safe_relpath(name)] = _stage_local_file(staging, name, item.local_path)


def _references(config: WriteConfig, staged: StagedFiles | None) -> list[dict[str, Any]]:
    refs: list[dict[str, Any]] = []
    if staged is not None:
        refs.extend(staged.references)
    for ref in config.add_references:
        refs.append(
            {
                "name": ref.name or ref.uri.rstrip("/").rsplit("/", 1)[-1] or "reference",
                "uri": ref.uri,
                "checksum": ref.checksum,
            }
        )
    return refs


def _aliases(config: WriteConfig, dagster_run_id: str) -> list[str]:
    out: list[str] = []
    for alias in (*config.aliases, run_alias(dagster_run_id)):
        if alias == "latest" or alias in out:
            continue
        check_alias(alias)
        out.append(alias)
    return out


def publish_output(
    session: Session,
    obj: Any,
    *,
    config: WriteConfig,
    target: Target,
    dagster_run_id: str,
    staging_root: Path,
    warn: Callable[[str], None],
) -> Published:
    """Serialize, sign and publish ``obj``; returns the version and its signature facts."""

    metadata: dict[str, Any] = {}
    description = config.description
    staged: StagedFiles | None = None
    serializer: str | None = None
    params: dict[str, Any] = {}

    staging_root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    # the store's own staging folder when it publishes by move (the payload is sealed straight
    # into it, never copied or re-read), else a private folder under staging_root
    stack = contextlib.ExitStack()
    try:
        area = stack.enter_context(staging_area(session.store, staging_root))
        staging = area.path
        files: dict[str, Path] = {}
        if is_wandb_artifact(obj):
            for key in ("name", "type"):
                if getattr(config, key) is not None:
                    raise WandbArtifactsIOManagerError(
                        f"the output is a wandb.Artifact, so {key!r} may not be set in "
                        "wandb_artifact_configuration (the Artifact already has one)",
                        artifact=target.name,
                    )
            type_ = str(obj.type)
            if obj.name and obj.name.split(":")[0] != target.name:
                warn(
                    f"the returned wandb.Artifact is named {obj.name!r}; it is stored as "
                    f"{target.name!r} so that downstream reads find it"
                )
            description = description or obj.description
            metadata.update(dict(obj.metadata or {}))
            staged = stage_user_artifact(obj, staging)
            files.update(staged.files)
        elif is_wandb_object(obj):
            type_ = config.type or DEFAULT_TYPE
            staged = stage_wandb_object(obj, staging)
            files.update(staged.files)
        else:
            type_ = config.type or DEFAULT_TYPE
            serializer, params = choose_serializer(session, obj, config)
        stage_additions(staging, config, files, session.policy)

        context = target.context(type_, session.qualified_project)
        rows: list[int] = []
        unrecorded: dict[str, EnvelopeHeader] = {}  # recorded with the manifest's, one commit
        payload_digest: str | None = None
        digest_alg = "sha256"
        key_id = session.signing_key_id
        alg: str | None = None
        if serializer is not None:
            name = payload_name(serializer)
            if name in files:
                raise WandbArtifactsIOManagerError(
                    f"an added file is named {name!r}, the name of the serialized output",
                    artifact=target.name,
                )
            path = staging / name
            header = seal_to(
                path,
                obj,
                key_store=session.key_store,
                serializer=serializer,
                context=context,
                parameters=params or None,
                key_id=key_id,
                policy=session.policy,
                run_id=dagster_run_id,
                digest_alg=session.settings.digest_algorithm,
                record=False,
            )
            files[name] = path
            payload_digest, digest_alg = header.payload_digest, header.digest_alg
            key_id, alg = header.kid, header.alg
            unrecorded[name] = header
        refs = _references(config, staged)
        aliases = _aliases(config, dagster_run_id)
        user_metadata = dict(metadata)
        with allocate(
            session.store,
            session.key_store,
            session.entity,
            session.project,
            target.name,
            policy=session.policy,
        ) as slot:
            signed_meta = {
                **user_metadata,
                **_integration_metadata(dagster_run_id, serializer, params, target, refs),
            }
            history = History(
                sequence=slot.sequence,
                parent=slot.parent,
                metadata=signed_meta,
                description=description,
                aliases=("latest", *aliases),
                empty=not files and not refs,
            )
            signed = add_signed_manifest(
                session.key_store,
                staging=staging,
                files=files,
                context=context,
                rows=rows,
                # the configured key, not the payload's: a rotation between the two seals must
                # not fail the publish (the payload's key stays valid as verify-only)
                key_id=session.signing_key_id,
                policy=session.policy,
                run_id=dagster_run_id,
                references=refs,
                history=history,
                digest_alg=session.settings.digest_algorithm,
                sealed=unrecorded,
            )
            mheader = signed.header
            key_id, alg = mheader.kid, mheader.alg
            size = sum(p.stat().st_size for p in files.values())
            version = publish_version(
                session.store,
                session.key_store,
                files=files,
                rows=rows,
                entity=session.entity,
                project=session.project,
                name=target.name,
                type_=type_,
                description=description,
                metadata=_with_signature_facts(signed_meta, key_id, alg),
                aliases=aliases,
                run_id=dagster_run_id,
                signed=signed,
                history_key=slot.key,
                staged=area,
            )
        return Published(
            version=version,
            key_id=key_id,
            algorithm=alg,
            payload_sha256=payload_digest or mheader.payload_digest,
            serializer=serializer,
            size=size,
            sequence=slot.sequence,
            digest_alg=digest_alg if payload_digest else mheader.digest_alg,
        )
    except SecureArtifactError as exc:
        raise exc.with_location(artifact=target.name) from None
    finally:
        stack.close()


def add_signed_manifest(
    key_store: KeyStore,
    *,
    staging: Path,
    files: dict[str, Path],
    context: Mapping[str, str | None],
    rows: list[int],
    key_id: str | None = None,
    policy: Policy | None = None,
    run_id: str | None = None,
    references: list[dict[str, Any]] | None = None,
    origin: str = "signed",
    history: History | None = None,
    digest_alg: str = DEFAULT_DIGEST,
    sealed: Mapping[str, EnvelopeHeader] | None = None,
) -> SignedManifest:
    """Sign the manifest over ``files`` into ``staging/MANIFEST_NAME``, add it to ``files`` and
    its ledger row to ``rows``; the one manifest step of every publisher. Every file is
    described (hashed, or an envelope's header read) once; the result also gives the store
    its index hints (``SignedManifest.digests``). ``sealed``: the payload envelopes this
    publisher just sealed into ``files`` (relative name -> the header ``seal_to`` returned),
    without a ledger row: each is described from that header, held in memory since it was
    signed, not from the file (never re-read: the manifest names what was signed, whatever the
    staged file holds now; a file changed since fails the store's size check or any reader's
    digest check), and recorded in the same transaction as the manifest's row (one durable
    commit, still before anything is published)."""
    sealed = dict(sealed or {})
    described = {
        rel: _sealed_entry(rel, sealed[rel]) if rel in sealed
        else describe_file(rel, Path(path), digest_alg)
        for rel, path in files.items()
        if rel != MANIFEST_NAME  # refused by build_manifest, with its own message
    }
    manifest_bytes, mheader = write_manifest(
        files,
        key_store=key_store,
        context=context,
        key_id=key_id,
        policy=policy,
        run_id=run_id,
        references=references or (),
        record=False,
        history=history,
        digest_alg=digest_alg,
        described=described,
    )
    # every row in one call: one commit (one statement on PostgreSQL)
    rows.extend(key_store.ledger.record_many(
        [ledger_entry(h, run_id=run_id, origin=origin) for h in (*sealed.values(), mheader)]
    ))
    manifest_path = staging / MANIFEST_NAME
    manifest_path.write_bytes(manifest_bytes)
    files[MANIFEST_NAME] = manifest_path
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    digests = {rel: _staged_digest(entry) for rel, entry in described.items()}
    digests[MANIFEST_NAME] = StagedDigest(len(manifest_bytes), "sha256", digest)
    position = None
    if history is not None:
        r = history.resigns
        if r is not None and r.sequence is not None and r.signed_at is not None:
            position = Position(r.sequence, r.signed_at, r.manifest_digest)
        else:
            position = Position(history.sequence, format_time(mheader.signed_at), digest)
    return SignedManifest(mheader, digest, position, digests)


def _sealed_entry(relpath: str, header: EnvelopeHeader) -> ManifestEntry:
    """The manifest entry of an envelope this process sealed, from the header it signed (what
    ``describe_file`` reads back from the file: payload digest, serializer, digest algorithm;
    the size is the envelope's, header and payload, as written)."""
    if not header.verified:
        raise ValueError("only a header this process signed describes a sealed envelope")
    return ManifestEntry(
        safe_relpath(relpath),
        header.payload_offset + header.payload_length,
        envelope_payload_sha256=header.payload_digest,
        serializer=header.serializer,
        digest_alg=get_digest(header.digest_alg).name,
    )


def ledger_entry(
    header: EnvelopeHeader, *, run_id: str | None = None, origin: str = "signed"
) -> dict[str, Any]:
    """A signed header as one ``record_many`` entry (the row ``record_header`` records)."""
    return {
        "key_id": header.kid,
        "alg": header.alg,
        "digest": header.payload_digest,
        "length": header.payload_length,
        "context": dict(header.context),
        "serializer": header.serializer,
        "signed_at": format_time(header.signed_at),
        "run_id": run_id,
        "origin": origin,
    }


def _staged_digest(entry: ManifestEntry) -> StagedDigest:
    algo = get_digest(entry.digest_alg)
    if entry.sha256 is not None:
        return StagedDigest(entry.size, algo.file_field, entry.sha256)
    return StagedDigest(entry.size, algo.envelope_field, entry.envelope_payload_sha256 or "")


def publish_version(
    store: ArtifactStore,
    key_store: KeyStore,
    *,
    files: Mapping[str, Path],
    rows: list[int],
    entity: str,
    project: str,
    name: str,
    type_: str,
    description: str | None,
    metadata: Mapping[str, Any],
    aliases: list[str],
    run_id: str | None = None,
    signed: SignedManifest | None = None,
    history_key: str | None = None,
    staged: StagingArea | None = None,
) -> ArtifactVersion:
    """Publish the signed files as a new version and attach the version to its ledger rows;
    the one store step of every publisher (``publish_output``, adopt and resign). With
    ``signed`` and ``history_key`` (format 2), the writer's ledger also records the manifest
    and advances the marks of the aliases it signed. ``staged`` (the store's own staging area
    holding ``files``): published by move, with ``signed.digests`` as the index hints. The
    ledger's ``durable()`` barrier completes before anything is published: a version is never
    visible before its signature rows are on disk (SECURITY.md). By move, the store runs it
    alongside its fsyncs of the staged files and folders, all before its index commit
    (``stores.local_fsync``)."""
    by_move: dict[str, Any] = {}
    if staged is not None and staged.by_move:
        by_move = {
            "staged": staged,
            "digests": dict(signed.digests) if signed else None,
            "barrier": key_store.ledger.durable,
        }
    else:
        key_store.ledger.durable()
    version = store.publish(
        entity=entity,
        project=project,
        name=name,
        type=type_,
        files=dict(files),
        description=description,
        metadata=dict(metadata),
        aliases=aliases,
        run_id=run_id,
        **by_move,
    )
    history = signed is not None and signed.position is not None and history_key is not None
    # the writer's records of the version, one call: the rows' version and alias marks, and
    # (format 2) the manifest seen and the history marks of the aliases it signed
    key_store.ledger.record_version(
        rows,
        artifact_version=version.version_label,
        aliases=tuple(version.aliases),
        history_key=history_key if history else None,
        manifest_digest=signed.digest if history and signed else None,
        position=signed.position if history and signed else None,
        marks=aliases if history else (),
    )
    return version


def publish_signed(
    store: ArtifactStore,
    key_store: KeyStore,
    av: ArtifactVersion,
    *,
    payload_name: str | None,
    payload: bytes | memoryview | None,
    serializer: str | None,
    serializer_version: str,
    serializer_params: Mapping[str, Any],
    other_files: Mapping[str, Path],
    context: Mapping[str, str | None],
    origin: str,
    aliases: tuple[str, ...] = (),
    metadata: Mapping[str, Any] | None = None,
    expected_digests: Mapping[str, str | tuple[str, str]] | None = None,
    history: History | None = None,
    signed_metadata: Mapping[str, Any] | None = None,
    signed_description: str | None = None,
    resigns: Resigns | None = None,
    digest_alg: str = DEFAULT_DIGEST,
) -> ArtifactVersion:
    """Publish a new version of ``av``'s artifact from already-serialized bytes (``adopt``'s
    scanned legacy bytes, ``resign``'s verified payloads; never deserialized here): the payload
    sealed from raw bytes, the other files copied as they are (and compared with
    ``expected_digests`` after copying), a signed manifest over all of them, ledger rows with
    ``origin``.

    ``history`` (a re-sign of a format-2 version) is signed as given: the version keeps its
    original's place. Without it a new sequence is allocated under the history lock and the
    manifest signs ``signed_metadata``, ``signed_description``, the aliases and ``resigns``."""
    staging = Path(tempfile.mkdtemp(prefix="dws-republish-"))
    try:
        files: dict[str, Path] = {}
        rows: list[int] = []
        unrecorded: dict[str, EnvelopeHeader] = {}
        if payload_name is not None and payload is not None and serializer is not None:
            target = staging / payload_name
            header = seal_serialized_to(
                target,
                payload,
                key_store=key_store,
                serializer=serializer,
                serializer_version=serializer_version,
                serializer_params=serializer_params,
                context=context,
                record=False,
                digest_alg=digest_alg,
            )
            unrecorded[payload_name] = header  # recorded with the manifest's row, one commit
            files[payload_name] = target
        for rel, src in other_files.items():
            dst = staging / "files" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            with open_no_follow(src) as fin, open(dst, "xb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            want = (expected_digests or {}).get(rel)  # SHA-256 hex, or (digest_alg, hex)
            alg, hexdigest = ("sha256", want) if isinstance(want, str) else (want or ("", ""))
            if want is not None and not hmac.compare_digest(digest_file(alg, dst)[0], hexdigest):
                raise TamperedPayloadError(
                    f"{rel!r} changed after it was checked", artifact=av.qualified_name
                )
            files[rel] = dst
        meta = dict(av.metadata)
        meta.update(metadata or {})
        names = [a for a in aliases if a != "latest"]
        with contextlib.ExitStack() as stack:
            if history is None:
                slot = stack.enter_context(allocate(store, key_store, av.entity, av.project, av.name))
                history = History(
                    sequence=slot.sequence,
                    parent=slot.parent,
                    metadata=dict(signed_metadata or {}),
                    description=signed_description,
                    aliases=("latest", *names),
                    empty=not files,
                    resigns=resigns,
                )
            signed = add_signed_manifest(
                key_store,
                staging=staging,
                files=files,
                context=context,
                rows=rows,
                origin=origin,
                history=history,
                digest_alg=digest_alg,
                sealed=unrecorded,
            )
            return publish_version(
                store,
                key_store,
                files=files,
                rows=rows,
                entity=av.entity,
                project=av.project,
                name=av.name,
                type_=av.type,
                description=av.description,
                metadata=meta,
                aliases=names,
                signed=signed,
                history_key=history_key(av.entity, av.project, av.name),
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _integration_metadata(
    dagster_run_id: str,
    serializer: str | None,
    params: Mapping[str, Any],
    target: Target,
    refs: list[dict[str, Any]],
) -> dict[str, Any]:
    """The integration's own metadata, signed with the manifest (the signing key's id and
    algorithm are added afterwards, unsigned: the verified header states them)."""
    meta: dict[str, Any] = {
        "source_integration": INTEGRATION,
        "source_integration_version": __version__,
        "source_dagster_run_id": dagster_run_id,
        "source_created_at": datetime.now(UTC).isoformat(),
        "source_python_version": platform.python_version(),
        "dagster_wandb_secure": {
            "signed": True,
            "asset_key": target.asset_key,
            "partition": target.partition,
            "payload": payload_name(serializer) if serializer else None,
            "references": refs,
        },
    }
    if serializer is not None:

        ser = get_serializer(serializer)
        meta["source_serialization_module"] = {
            "name": serializer,
            "version": _module_version(ser),
            "parameters": {k: v for k, v in params.items() if _jsonable(v)},
        }
    return meta


def _with_signature_facts(meta: Mapping[str, Any], key_id: str, alg: str) -> dict[str, Any]:
    """The store copy of the metadata: the signed metadata plus the key that signed it."""
    out = dict(meta)
    own = dict(out.get("dagster_wandb_secure") or {})
    own.update({"signing_key_id": key_id, "signature_algorithm": alg})
    out["dagster_wandb_secure"] = own
    return out


def _module_version(ser: Any) -> str:
    getter = getattr(ser, "module_version", None)
    try:
        return str(getter()) if callable(getter) else ""
    except Exception:  # noqa: BLE001 - informational metadata only
        return ""


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


__all__ = [
    "DEFAULT_TYPE",
    "Published",
    "Target",
    "choose_serializer",
    "payload_name",
    "publish_output",
]
