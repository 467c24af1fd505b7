"""Verify a stored artifact version, then materialize what the reader asked for.

Order (nothing reaches user code before its check):

1. resolve the version (explicit ``version``, else ``alias``, default ``latest``); the store's
   answer is only a hint;
2. verify the signed manifest against what is actually on disk: every file listed, no extra
   file, no symlink, sizes, the manifest's signature and context, every envelope's signature;
   when resolved by alias, check the manifest's signed place in the history against the
   ledger's marks (rollback, fork, replay: ``artifacts/history.py``), then advance them;
3. copy each file that is used, hashing while copying, into this process's private 0700 folder
   and compare with the signed digest (so a cache tamperer cannot swap it after the check);
4. a payload envelope is unsealed from that private copy with the full expected context and the
   serializer named by its file name; a ``get_path`` returns the private copy's path; a ``get``
   rebuilds a W&B object from private copies; otherwise a read-only ``ArtifactView`` is returned.
"""

from __future__ import annotations

import hmac
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import (
    ContextMismatchError,
    SecureArtifactError,
    TamperedPayloadError,
    UnsafePathError,
    UnsignedPayloadError,
)
from ..core.fsutil import safe_relpath
from ..core.ledger_api import LedgerRecordMissingError
from ..core.serializers import PICKLE_FAMILY_NAMES
from ..stores.base import (
    ArtifactStore,
    ArtifactVersion,
    DiskEntry,
    VersionRowError,
    shown,
    version_ref_label,
)
from .config import ReadConfig, WandbArtifactsIOManagerError
from .history import check_alias_history
from .private_copies import PrivateCopies, copy_verified
from .publishing import PAYLOAD_STEM
from .session import Session
from .target import Target
from .view import ArtifactView
from .wandb_objects import VerifiedSource

if TYPE_CHECKING:
    from ..core.manifest import ManifestEntry, VerifiedManifest

LEGACY_PAYLOADS = tuple(f"output.{name}" for name in PICKLE_FAMILY_NAMES)


def files_on_disk(store: ArtifactStore, av: ArtifactVersion) -> dict[str, Path]:
    """What the store actually holds for the version (symlinks/special files refused): the one
    "files of a version" used by readers, asset checks, audit, adopt and resign.

    A store must list its folder: its own index (``av.files``) would miss a planted file."""
    lister = getattr(store, "list_files", None)
    if not callable(lister):
        raise WandbArtifactsIOManagerError(
            f"the artifact store {type(store).__name__} has no list_files(), so the files "
            "actually stored cannot be compared with the signed manifest; nothing was loaded",
            artifact=av.name,
            version=av.version_label,
            hint="use the local or W&B store, or implement list_files() in this store",
        )
    both = getattr(store, "list_files_with_paths", None)
    if callable(both):  # the version folder resolved once for the listing and the paths
        listing, paths_below = both(av)
        return dict(paths_below(list(files_of_listing(av, listing, lambda rel: Path(rel)))))
    listing = lister(av)
    paths_of = getattr(store, "file_paths", None)
    if callable(paths_of):  # the version folder resolved once, not once per file
        names = files_of_listing(av, listing, lambda rel: Path(rel))
        return dict(paths_of(av, list(names)))
    return files_of_listing(av, listing, lambda rel: store.file_path(av, rel))


def files_of_listing(
    av: ArtifactVersion, entries: Iterable[DiskEntry], path_of: Callable[[str], Path]
) -> dict[str, Path]:
    """``files_on_disk`` of a listing the store made (``list_files``): every name safe, every
    entry a regular file (a symlink, FIFO or device is an UnsafePathError), ``path_of`` its path."""
    out: dict[str, Path] = {}
    for entry in entries:
        rel = safe_relpath(entry.path, what="artifact file name")
        if entry.kind != "file":
            raise UnsafePathError(
                f"file {rel!r} of the stored version is a {entry.kind}, not a regular file",
                artifact=av.name,
                version=av.version_label,
            )
        out[rel] = path_of(rel)
    return out


def resolve_version(
    session: Session, target: Target, read: ReadConfig
) -> tuple[ArtifactVersion, str | None]:
    """The version to read and the alias it was resolved through (``None`` for a version).

    The store's answer must be the artifact asked for (and, for a pinned read, the version
    asked for): the history check keys its marks by the version's name, so an index that
    answers ``victim`` with a row named ``VICTIM`` would otherwise read past every mark."""
    if read.version is not None:
        av = session.store.resolve(
            session.entity, session.project, target.name, version=read.version
        )
        _check_answer(session, target, av, version_ref_label(read.version))
        return av, None
    alias = read.alias or "latest"
    av = session.store.resolve(session.entity, session.project, target.name, alias=alias)
    _check_answer(session, target, av, None)
    return av, alias


def _check_answer(
    session: Session, target: Target, av: ArtifactVersion, version: str | None
) -> None:
    asked = (session.entity, session.project, target.name)
    got = (av.entity, av.project, av.name)
    if got != asked or (version is not None and av.version_label != version):
        raise VersionRowError(
            f"the store answered a read of {'/'.join(asked)}:{version or 'alias'} with "
            f"{'/'.join(map(shown, got))}:{shown(av.version_label)}",
            entity=av.entity,
            project=av.project,
            name=av.name,
            number=av.version,
        )


def check_ledger_record(
    session: Session, av: ArtifactVersion, manifest_digest: str, kid: str
) -> None:
    """``require_ledger_record``: accept a version only if the ledger holds the writer's record
    of its signed manifest (this artifact, this key, recorded while the key was valid), so a
    stolen signing key alone cannot make a reader accept anything (SECURITY.md)."""
    check_recorded(session, av.name, av.version_label, manifest_digest, kid, what="manifest")


def check_recorded(
    session: Session, artifact: str, version: str, digest: str, kid: str, *, what: str
) -> None:
    """The ledger holds a writer's record of the signed payload ``digest`` for ``artifact``
    (its version ``version`` or none attached yet) by ``kid``, recorded while the key was
    valid; else ``LedgerRecordMissingError``. Used for manifests and registry link
    statements alike."""

    record = session.key_store.get(kid)
    for row in session.key_store.ledger.find_digest(digest):
        if row.artifact != artifact or row.key_id != kid:
            continue
        if row.artifact_version not in (None, version):
            continue
        try:
            recorded = datetime.fromisoformat(row.recorded_at.replace("Z", "+00:00"))
        except ValueError:
            continue
        if record.not_after is None or recorded <= record.not_after:
            return
    raise LedgerRecordMissingError(
        f"the ledger holds no writer's record of this version's signed {what} "
        f"(sha256 {digest[:16]}...) for {artifact} by this key while it was valid, "
        "and require_ledger_record is set",
        artifact=artifact,
        version=version,
        key_id=kid,
    )


@dataclass
class VerifiedVersion:
    """A version whose signed manifest has been verified; files are materialized on demand."""

    session: Session
    av: ArtifactVersion
    on_disk: Mapping[str, Path]
    entries: Mapping[str, ManifestEntry]
    references: tuple[Mapping[str, Any], ...]
    key_id: str
    algorithm: str
    context: Mapping[str, str | None]
    private: PrivateCopies
    manifest: VerifiedManifest | None = None
    _dir: Path | None = None
    _copies: dict[str, Path] = field(default_factory=dict)
    # payload envelopes verified in private memory by ``verify_version`` (a whole-content read):
    # name -> (header, payload), handed to ``unseal_payload`` once
    _unsealed: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def locate(self, exc: SecureArtifactError) -> SecureArtifactError:
        """Name artifact, version and (when the error did not) the manifest's signing key."""
        if not exc.key_id:
            exc.key_id = self.key_id
        return exc.with_location(artifact=self.av.name, version=self.av.version_label)

    @property
    def label(self) -> str:
        return f"{self.av.name}:{self.av.version_label}"

    # What the signed manifest says (format 2); a format-1 manifest signed none of these, so
    # they are empty / None and never filled from the store's unsigned index.
    @property
    def sequence(self) -> int | None:
        h = self.manifest.history if self.manifest else None
        return h.sequence if h else None

    @property
    def manifest_envelope_digest(self) -> str | None:
        """SHA-256 of the whole signed manifest envelope (the identity history marks and the next
        version's ``parent`` use); None for a format-1 version (no signed order)."""
        m = self.manifest
        return m.digest if m is not None and m.history is not None and m.digest else None

    @property
    def signed_metadata(self) -> dict[str, Any]:
        h = self.manifest.history if self.manifest else None
        return dict(h.metadata) if h else {}

    @property
    def signed_description(self) -> str | None:
        h = self.manifest.history if self.manifest else None
        return h.description if h else None

    @property
    def signed_aliases(self) -> list[str]:
        h = self.manifest.history if self.manifest else None
        return list(h.aliases) if h else []

    def _version_dir(self) -> Path:
        if self._dir is None:
            self._dir = self.private.new_version_dir(self.label)
        return self._dir

    def materialize(self, relpath: str) -> Path:
        """The verified private copy of one file of the version (errors name the version even
        when raised later, from user code, through a view)."""
        try:
            return self._materialize(relpath)
        except SecureArtifactError as exc:
            raise self.locate(exc) from None

    def _unreadable(self, relpath: str, exc: OSError) -> SecureArtifactError:
        """The typed error for a signed file the store no longer lets us read (a bare OSError
        used to escape from ``open_no_follow``)."""
        return TamperedPayloadError(
            f"signed file {relpath!r} could not be read after the manifest check "
            f"({exc.strerror or type(exc).__name__})",
            artifact=self.av.name,
            version=self.av.version_label,
            key_id=self.key_id,
        )

    def _materialize(self, relpath: str) -> Path:
        relpath = safe_relpath(relpath, what="file name")
        if relpath in self._copies:
            return self._copies[relpath]
        entry = self.entries.get(relpath)
        if entry is None:
            raise WandbArtifactsIOManagerError(
                f"the artifact has no file named {relpath!r}; it holds {sorted(self.entries)}",
                artifact=self.av.name,
                version=self.av.version_label,
            )
        target = self.private.target(self._version_dir(), relpath)
        if entry.sha256 is not None:
            path = copy_verified(
                self.on_disk[relpath],
                target,
                entry.sha256,
                artifact=self.av.name,
                key_id=self.key_id,
                version=self.av.version_label,
                digest_alg=entry.digest_alg,
            )
        else:
            path = self._materialize_envelope(relpath, entry, target)
        self._copies[relpath] = path
        return path

    def _materialize_envelope(self, relpath: str, entry: ManifestEntry, target: Path) -> Path:

        from ..core.envelope import verify_path
        from ..core.fsutil import open_no_follow

        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            source = open_no_follow(self.on_disk[relpath])
        except OSError as exc:  # removed or replaced after the manifest check
            raise self._unreadable(relpath, exc) from None
        with source as src, open(target, "xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        header = verify_path(
            target,
            key_store=self.session.key_store,
            expected_context=self.context,
            expected_serializer=entry.serializer,
            policy=self.session.policy,
            deep=True,
        )
        if header.digest_alg != entry.digest_alg or not hmac.compare_digest(
            header.payload_digest, entry.envelope_payload_sha256 or ""
        ):
            raise TamperedPayloadError(
                f"envelope {relpath!r} is not the one the manifest signed "
                "(swapped after the check)",
                artifact=self.av.name,
                version=self.av.version_label,
                key_id=header.kid,
            )
        target.chmod(0o400)
        return target

    def payload_files(self) -> list[str]:
        return sorted(
            n
            for n, e in self.entries.items()
            if "/" not in n and n.startswith(PAYLOAD_STEM + ".") and e.envelope_payload_sha256
        )

    def unseal_payload(self, relpath: str) -> Any:
        """Verify the payload envelope ``relpath`` into private memory, then deserialize it
        (verified already when ``verify_version`` was asked for the whole content)."""
        from ..core.envelope import deserialize

        verified = self._unsealed.pop(relpath, None)
        header, payload = verified if verified is not None else self._verify_payload(relpath)
        return deserialize(header, payload, self.session.policy)

    def _verify_payload(self, relpath: str) -> tuple[Any, Any]:
        """The payload envelope ``relpath`` read once into private memory and verified there
        (signature, context, serializer, length, digest), and the one the manifest signed."""
        from ..core.envelope import verify_file
        from ..core.fsutil import open_no_follow

        entry = self.entries[relpath]
        suffix = relpath[len(PAYLOAD_STEM) + 1 :]
        if entry.serializer != suffix:
            raise ContextMismatchError(
                f"payload {relpath!r} is signed as serializer {entry.serializer!r}",
                artifact=self.av.name,
                version=self.av.version_label,
                key_id=self.key_id,
            )
        # Read once, straight into private memory, and verified there (signature, context,
        # length, digest): no file copy is needed, and swapping the stored file afterwards
        # changes nothing. Before anything is deserialized, the envelope must be the one the
        # manifest signed.
        try:
            fh = open_no_follow(self.on_disk[relpath])
        except OSError as exc:  # removed or replaced after the manifest check
            raise self._unreadable(relpath, exc) from None
        with fh:
            header, payload = verify_file(
                fh,
                key_store=self.session.key_store,
                expected_context=self.context,
                expected_serializer=suffix,
                policy=self.session.policy,
            )
        if header.digest_alg != entry.digest_alg or not hmac.compare_digest(
            header.payload_digest, entry.envelope_payload_sha256 or ""
        ):
            raise TamperedPayloadError(
                f"envelope {relpath!r} is not the one the manifest signed (mix-and-match)",
                artifact=self.av.name,
                version=self.av.version_label,
                key_id=header.kid,
            )
        return header, payload

    def source(self) -> VerifiedSource:
        return VerifiedSource(
            list(self.entries), self.materialize, aliases=tuple(self.signed_aliases)
        )


def verify_version(
    session: Session,
    target: Target,
    read: ReadConfig,
    *,
    private: PrivateCopies,
    dagster_run_id: str | None,
    bind_asset_key: bool = True,
    deep: bool = False,
    whole_content: bool = False,
) -> VerifiedVersion:
    """Resolve, rollback-check and verify one version (steps 1-2); nothing is deserialized.

    ``deep=True`` also hashes every file and envelope payload in the store (asset checks);
    reads do not need it, since each file used is hashed while it is copied.

    ``whole_content=True`` (a read that unseals the version's one payload, if it has one): that
    payload envelope is read into private memory and verified there (what ``unseal_payload``
    then deserializes) instead of once on the store's bytes and again in private memory; still
    before any ledger mark, use record or log line, so what is returned was checked whole."""
    from ..core.manifest import verify_manifest

    av, alias = resolve_version(session, target, read)
    try:
        on_disk = files_on_disk(session.store, av)
        payloads = [n for n in on_disk if "/" not in n and n.startswith(PAYLOAD_STEM + ".")]
        unsealed = frozenset(payloads) if whole_content and not deep and len(payloads) == 1 else frozenset()
        # every key the library signs is stated; "role" is None for payloads, so a manifest
        # envelope (role "manifest") is never accepted as one (verify_manifest sets the role
        # for the manifest itself)
        context = {
            **target.context(
                av.type, f"{av.entity}/{av.project}", bind_asset_key=bind_asset_key
            ),
            "role": None,
        }
        try:
            verified = verify_manifest(
                on_disk,
                key_store=session.key_store,
                expected_context=context,
                policy=session.policy,
                deep=deep,
                version=av.version_label,
                unsealed_by_caller=unsealed,
            )
        except UnsignedPayloadError as exc:
            legacy = [n for n in on_disk if n in LEGACY_PAYLOADS]
            if legacy:
                raise UnsignedPayloadError(
                    f"{legacy[0]} is an unsigned legacy payload (written by upstream "
                    "dagster-wandb or by hand); it was not unpickled",
                    artifact=av.name,
                    version=av.version_label,
                    key_id=exc.key_id,
                ) from None
            raise
        out = VerifiedVersion(
            session=session,
            av=av,
            on_disk=on_disk,
            entries=verified.entries,
            references=verified.references,
            key_id=verified.header.kid,
            algorithm=verified.header.alg,
            context=context,
            private=private,
            manifest=verified,
        )
        for name in unsealed:  # skipped by verify_manifest: verified here, in private memory
            if verified.entries[name].envelope_payload_sha256 is not None:
                try:
                    out._unsealed[name] = out._verify_payload(name)
                except SecureArtifactError as exc:
                    raise out.locate(exc) from None
        if session.settings.require_ledger_record:
            check_ledger_record(session, av, verified.header.payload_sha256, verified.header.kid)
        check_alias_history(session.key_store, av, alias, verified)
        session.store.record_use(av, dagster_run_id)
        return out
    except SecureArtifactError as exc:
        raise exc.with_location(artifact=av.name, version=av.version_label) from None


def load(
    session: Session,
    target: Target,
    read: ReadConfig,
    *,
    private: PrivateCopies,
    dagster_run_id: str | None,
    bind_asset_key: bool = True,
) -> Any:
    """Verify one version and return what ``read`` asks for (steps 1-4)."""
    verified = verify_version(
        session,
        target,
        read,
        private=private,
        dagster_run_id=dagster_run_id,
        bind_asset_key=bind_asset_key,
        whole_content=read.get_path is None and read.get is None,
    )
    try:
        if read.get_path is not None:
            return str(verified.materialize(read.get_path))
        if read.get is not None:
            view = ArtifactView(verified)
            value = view.get(read.get)
            if value is None:
                raise WandbArtifactsIOManagerError(
                    f"the artifact holds no object named {read.get!r}; its files are "
                    f"{sorted(verified.entries)}",
                )
            return value
        payloads = verified.payload_files()
        if len(payloads) > 1:
            raise WandbArtifactsIOManagerError(
                f"the artifact holds several serialized outputs {payloads}; use 'get' to choose one"
            )
        if payloads:
            return verified.unseal_payload(payloads[0])
        return ArtifactView(verified)
    except SecureArtifactError as exc:
        raise verified.locate(exc) from None


__all__ = ["VerifiedVersion", "check_recorded", "files_on_disk", "load", "verify_version"]
