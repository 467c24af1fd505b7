"""WandbArtifactStore: the ``ArtifactStore`` protocol on Weights & Biases, online and offline.

Only the public wandb SDK is used (``wandb.init``, ``wandb.Artifact``, ``Run.log_artifact``,
``Artifact.wait``, ``Run.use_artifact``, ``Artifact.download``, and ``wandb.Api`` when online work
needs it without a run).

**Online.** ``publish`` copies the files into a private staging folder (hashing them on the way),
logs a ``wandb.Artifact`` of those copies through the store's run, waits for the server to commit
it and moves the staging folder into the download cache as that version. ``resolve`` asks W&B for
the version (``run.use_artifact`` when the store's run is active, else ``wandb.Api().artifact``),
checks every file name of its manifest, downloads it into the cache and lists the files from disk.
The bytes are *not* trusted here: the layer above verifies envelopes and signed manifests on the
cached files.

**Offline** (``mode="offline"`` or ``WANDB_MODE=offline``). ``publish`` writes the version into a
local mirror (a ``LocalArtifactStore``, the source of truth for version numbers offline) and logs
the same bytes into wandb's offline run, so ``wandb sync`` uploads them later. Reads are served
from the mirror. Nothing waits on a server and no ``wandb.Api`` is ever built. Version numbers the
server assigns at sync time may differ from the mirror's.

**The W&B run** (``wandb_run``) is started lazily, on the first operation that needs one, and
shared by the stores of one process naming the same run id; construction only validates the
configuration. **The download cache** (``wandb_cache``, online only) holds one locked, stamped
folder per version and is cleaned after every online publish and resolve.

**The test seam** is the single constructor argument ``sdk``: ``None`` (the default) means the real
``wandb`` module. Tests pass an object faking the few calls listed above to exercise the online
path, since no W&B server can run in the test environment. There is no other test hook.

``ArtifactVersion.extra`` carries, when known: ``wandb_mode``, ``wandb_artifact_id``,
``wandb_artifact_url``, ``wandb_artifact_size``, ``wandb_run_id``, ``wandb_run_name``,
``wandb_run_path``, ``wandb_run_url``, ``wandb_offline_run_dir``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from ..core.errors import ConfigurationError, SecureArtifactError, UnsafePathError
from ..core.fsutil import safe_relpath
from .base import (
    ArtifactNotFoundError,
    ArtifactVersion,
    DiskEntry,
    ManifestItem,
    StoreError,
    check_alias,
    check_artifact_name,
    parse_version_label,
    version_ref_label,
)
from .local import LocalArtifactStore
from .wandb_cache import (
    CACHE_LOCK_TIMEOUT,
    DEFAULT_CACHE_DURATION,
    MIN_CACHE_AGE,
    STALE_STAGING_AGE,
    DownloadCache,
    copy_hashing,
)
from .wandb_entry import fetch_entry
from .wandb_records import (
    artifact_extra,
    check_artifact_type,
    check_entity,
    check_project,
    describe,
    online_versions,
)
from .wandb_run import (
    DAGSTER_WANDB_TAG,
    INIT_LOCK_NAME,
    MAX_RUN_ID_LEN,
    MAX_RUN_NAME_LEN,
    MAX_TAG_LEN,
    RUN_ID_FORBIDDEN,
    RUN_START_TIMEOUT,
    Mode,
    Secret,
    WandbRun,
    attr_obj,
    attr_str,
    check_host,
    check_run_id,
    check_run_tags,
    resolve_mode,
)

# The names below moved to wandb_run / wandb_cache / wandb_records; they stay importable from here.
__all__ = [
    "CACHE_LOCK_TIMEOUT",
    "DAGSTER_WANDB_TAG",
    "DEFAULT_CACHE_DURATION",
    "INIT_LOCK_NAME",
    "MAX_RUN_ID_LEN",
    "MAX_RUN_NAME_LEN",
    "MAX_TAG_LEN",
    "MIN_CACHE_AGE",
    "RUN_ID_FORBIDDEN",
    "RUN_START_TIMEOUT",
    "STALE_STAGING_AGE",
    "STORE_SUBDIR",
    "Mode",
    "WandbArtifactStore",
    "check_artifact_type",
    "check_entity",
    "check_host",
    "check_project",
    "check_run_id",
    "resolve_mode",
]

log = logging.getLogger(__name__)

STORE_SUBDIR = "wandb-secure"


# --- the store ----------------------------------------------------------------------------------


class WandbArtifactStore:
    """Artifacts in W&B (online) or in wandb's offline run plus a local mirror (offline).

    Args:
        entity, project: where the store's run logs artifacts. ``publish`` refuses any other.
        base_dir: folder for wandb's run files (``dir=`` of ``wandb.init``) and for the store's
            own files (``<base_dir>/wandb-secure/``). Default: ``$DAGSTER_HOME``, else the
            current directory.
        local_dir, mirror: the offline mirror: a ``LocalArtifactStore`` instance (``mirror``) or
            its root (``local_dir``); default ``<base_dir>/wandb-secure/store``. Used offline only.
        api_key, host: credentials and server for online work. The key is passed to wandb only
            through run/API settings (never logged, never written by this store, never passed
            offline). Without a key, wandb's own lookup (``WANDB_API_KEY``, netrc) applies.
        mode: ``"online"`` / ``"offline"``; default ``WANDB_MODE``, else online.
        run_id, run_name, run_tags: the W&B run (``dagster_wandb`` is always added to the tags).
        cache_duration: how long an unused downloaded version stays in the cache (default 30 days;
            ``timedelta(0)`` keeps nothing longer than ``MIN_CACHE_AGE``).
        sdk: THE TEST SEAM. ``None`` (default) means the real ``wandb`` module. A test may pass an
            object providing ``init``, ``Artifact``, ``Api`` and ``errors`` with the same
            behaviour, to exercise the online path without a server.
    """

    def __init__(
        self,
        *,
        entity: str | None,
        project: str | None,
        base_dir: str | Path | None = None,
        local_dir: str | Path | None = None,
        mirror: LocalArtifactStore | None = None,
        api_key: str | None = None,
        host: str | None = None,
        mode: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        run_tags: Sequence[str] = (),
        cache_duration: timedelta | None = None,
        sdk: Any = None,
    ) -> None:
        self.entity = check_entity(entity)
        self.project = check_project(project)
        self.mode: Mode = resolve_mode(mode)
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise ConfigurationError("api_key is empty or not a string", hint="set WANDB_API_KEY")
        if isinstance(api_key, str) and api_key != api_key.strip():
            raise ConfigurationError(
                "api_key starts or ends with whitespace", hint="fix WANDB_API_KEY"
            )
        self._api_key = Secret(api_key) if api_key else None
        self.host = check_host(host) if host is not None else None
        self.run_id = check_run_id(run_id) if run_id is not None else None
        if run_name is not None and (
            not isinstance(run_name, str)
            or not run_name.strip()
            or len(run_name) > MAX_RUN_NAME_LEN
            or any(ord(c) < 0x20 or c == "\x7f" for c in run_name)
        ):
            raise ConfigurationError(
                f"invalid run_name {run_name!r}: 1-{MAX_RUN_NAME_LEN} printable characters",
            )
        self.run_name = run_name
        self.run_tags = check_run_tags(run_tags)
        if cache_duration is None:
            cache_duration = DEFAULT_CACHE_DURATION
        if not isinstance(cache_duration, timedelta) or cache_duration < timedelta(0):
            raise ConfigurationError(
                f"invalid cache duration {cache_duration!r}: use a non-negative duration",
                hint="set cache_duration_in_minutes to 0 or more",
            )
        self.cache_duration = cache_duration
        if base_dir is None:
            base_dir = os.environ.get("DAGSTER_HOME") or Path.cwd()
        self.base_dir = Path(base_dir).expanduser().absolute()
        self.store_dir = self.base_dir / STORE_SUBDIR
        self.cache_dir = self.store_dir / "cache"
        self.local_dir = (
            Path(local_dir).expanduser().absolute()
            if local_dir is not None
            else self.store_dir / "store"
        )
        self._sdk = sdk if sdk is not None else importlib.import_module("wandb")
        errors = self._sdk.errors
        self._WandbError: type[BaseException] = errors.Error
        self._AuthError: type[BaseException] = errors.AuthenticationError
        self._lock = threading.RLock()
        self._wandb = WandbRun(
            sdk=self._sdk,
            mode=self.mode,
            entity=self.entity,
            project=self.project,
            base_dir=self.base_dir,
            store_dir=self.store_dir,
            host=self.host,
            api_key=self._api_key,
            run_id=self.run_id,
            run_name=self.run_name,
            run_tags=self.run_tags,
            lock=self._lock,
        )
        self._cache = DownloadCache(self.cache_dir)
        if mirror is not None and local_dir is not None:
            raise ConfigurationError("give either mirror or local_dir, not both")
        self._mirror_store: LocalArtifactStore | None = mirror
        if mirror is not None:
            self.local_dir = Path(mirror.root)
        self._used: set[tuple[str, str, str, int]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"WandbArtifactStore(entity={self.entity!r}, project={self.project!r}, "
            f"mode={self.mode!r}, base_dir={str(self.base_dir)!r}, run_id={self.run_id!r}, "
            f"api_key={'<set>' if self._api_key else None})"
        )

    def __enter__(self) -> WandbArtifactStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def offline(self) -> bool:
        return self.mode == "offline"

    @property
    def run(self) -> Any:
        """The active W&B run, or ``None`` before the first operation that needs one."""
        return self._wandb.current

    def run_info(self) -> dict[str, str | None]:
        """``wandb_run_id``, ``wandb_run_name``, ``wandb_run_path``, ``wandb_run_url`` (and the
        offline run folder), or an empty dict when no run was started."""
        return self._wandb.info()

    def close(self) -> None:
        """Release the W&B run (idempotent); the run is finished once no store of this process
        uses it. A later operation starts it again (``resume="allow"``)."""
        with self._lock:
            run, key = self._wandb.detach()
            self._used.clear()
        self._wandb.finish(run, key)

    def _ensure_run(self) -> Any:
        return self._wandb.ensure()

    def _api(self, what: str) -> Any:
        return self._wandb.api(what)

    def _mirror(self) -> LocalArtifactStore:
        with self._lock:
            if self._mirror_store is None:
                self._mirror_store = LocalArtifactStore(self.local_dir)
            return self._mirror_store

    def _scrub(self, exc: object) -> str:
        return self._wandb.scrub(exc)

    def _check_target(self, entity: str, project: str) -> None:
        if (entity, project) != (self.entity, self.project):
            raise ConfigurationError(
                f"this W&B store logs to {self.entity}/{self.project}; it cannot publish to "
                f"{entity}/{project}",
                hint="use one store (one wandb_config) per entity/project",
            )

    # -- publish -----------------------------------------------------------------------------------

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
        """Publish a new version: log it to W&B (online: and wait for the commit; offline: into
        the offline run) and return it. ``latest`` moves to it."""
        check_artifact_name(name)
        check_entity(entity)
        check_project(project)
        self._check_target(entity, project)
        check_artifact_type(type)
        if isinstance(aliases, str):
            raise ConfigurationError(f"aliases must be a list, not the string {aliases!r}")
        alias_list = list(dict.fromkeys(check_alias(a) for a in aliases))
        label = f"{entity}/{project}/{name}"
        if not files:
            raise StoreError(
                "refusing to publish an empty artifact version (no files)", artifact=label
            )
        sources: dict[str, Path] = {}
        for rel, src in files.items():
            sources[safe_relpath(rel, what=f"file name in artifact {label}")] = Path(src)
        meta = dict(metadata or {})
        if self.offline:
            return self._publish_offline(
                label, entity, project, name, type, sources, description, meta, alias_list, run_id
            )
        return self._publish_online(
            label, entity, project, name, type, sources, description, meta, alias_list, run_id
        )

    def _new_artifact(
        self, label: str, name: str, type_: str, description: str | None, meta: dict
    ) -> Any:
        try:
            return self._sdk.Artifact(name, type=type_, description=description, metadata=meta)
        except (ValueError, TypeError) as exc:
            raise StoreError(
                f"W&B refused the artifact's name, type, description or metadata: {exc}",
                artifact=label,
                hint="metadata must be JSON-serializable; names and types must be W&B-legal",
            ) from exc

    def _publish_offline(
        self,
        label: str,
        entity: str,
        project: str,
        name: str,
        type_: str,
        sources: dict[str, Path],
        description: str | None,
        meta: dict[str, Any],
        aliases: list[str],
        run_id: str | None,
    ) -> ArtifactVersion:
        run = self._ensure_run()  # a run that cannot start leaves no version behind
        artifact = self._new_artifact(label, name, type_, description, meta)
        mirror = self._mirror()
        av = mirror.publish(
            entity=entity,
            project=project,
            name=name,
            type=type_,
            files=sources,
            description=description,
            metadata=meta,
            aliases=aliases,
            run_id=run_id,
        )
        try:
            # the mirror's immutable copies: the offline run logs exactly the bytes reads will see
            for rel in sorted(av.files):
                artifact.add_file(str(mirror.file_path(av, rel)), name=rel)
            run.log_artifact(artifact, aliases=list(aliases))
        except (self._WandbError, ValueError, OSError) as exc:
            raise StoreError(
                f"the version was published to the local mirror ({self.local_dir}) but logging "
                f"it to the W&B offline run failed: {self._scrub(exc)}",
                artifact=label,
                version=av.version_label,
                hint="reads are unaffected (they use the mirror); re-materialize the asset to log "
                "it for `wandb sync`",
            ) from exc
        except BaseException as exc:
            exc.add_note(
                f"dagster-wandb-secure: while logging {label}:{av.version_label} to the W&B "
                "offline run (the local mirror already holds it)"
            )
            raise
        extra = {**dict(av.extra), "wandb_mode": "offline", **self.run_info()}
        return dataclasses.replace(av, extra=extra)

    def _publish_online(
        self,
        label: str,
        entity: str,
        project: str,
        name: str,
        type_: str,
        sources: dict[str, Path],
        description: str | None,
        meta: dict[str, Any],
        aliases: list[str],
        run_id: str | None,
    ) -> ArtifactVersion:
        name_dir = self._cache.name_dir(entity, project, name)
        name_dir.mkdir(parents=True, exist_ok=True)
        staging = name_dir / f".publish-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            entries = {rel: copy_hashing(src, staging, rel, label) for rel, src in sources.items()}
            run = self._ensure_run()
            artifact = self._new_artifact(label, name, type_, description, meta)
            try:
                for rel in sorted(entries):
                    # immutable: W&B uploads our private staging copy without copying it again
                    artifact.add_file(str(staging / rel), name=rel, policy="immutable")
                logged = run.log_artifact(artifact, aliases=list(aliases))
                logged.wait()
                version = parse_version_label(attr_str(logged, "version"), label)
            except self._AuthError as exc:
                raise StoreError(
                    f"W&B refused the credentials while logging the artifact: {self._scrub(exc)}",
                    artifact=label,
                    hint="check the API key (WANDB_API_KEY or api_key) and its project access",
                ) from exc
            except (self._WandbError, ValueError) as exc:
                raise StoreError(
                    f"W&B did not commit the artifact: {self._scrub(exc)}",
                    artifact=label,
                    hint="check network access and the W&B server status, then re-materialize",
                ) from exc
            except BaseException as exc:
                exc.add_note(f"dagster-wandb-secure: while logging {label} to W&B")
                raise
            with self._cache.version_lock(name_dir, version, label):
                vdir = self._cache.install(
                    name_dir, version, staging, str(attr_str(logged, "digest") or "")
                )
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        av = ArtifactVersion(
            entity=entity,
            project=project,
            name=name,
            version=version,
            type=type_,
            description=description,
            metadata=meta,
            aliases=tuple(dict.fromkeys([*aliases, "latest"])),
            files=entries,
            created_at=datetime.now(UTC),
            created_by_run=run_id,
            root=vdir,
            extra={"wandb_mode": "online", **artifact_extra(logged), **self.run_info()},
        )
        self.cleanup_cache()
        return av

    # -- model registry ------------------------------------------------------------------------

    def link_version(self, av: ArtifactVersion, target_path: str, aliases: Sequence[str]) -> None:
        """Online: W&B's own ``Artifact.link`` for a version the caller has verified. The W&B
        digest must still be the one the verified files were downloaded for."""
        if self.offline:
            raise StoreError(
                "W&B cannot link artifacts offline", artifact=av.qualified_name,
                hint="the local registry records offline links",
            )
        qualified = f"{av.entity}/{av.project}/{av.name}:{av.version_label}"
        artifact, _ = self._fetch(qualified)
        name_dir = self._name_dir(av.entity, av.project, av.name)
        digest_file = name_dir / f".v{av.version}.digest"
        want = digest_file.read_text() if digest_file.is_file() else ""
        got = str(attr_str(artifact, "digest") or "")
        if not want or want != got:
            raise StoreError(
                "the W&B version changed since it was verified; nothing was linked",
                artifact=qualified,
                hint="read the artifact again, then link it",
            )
        try:
            artifact.link(target_path, aliases=list(aliases))
        except (self._WandbError, ValueError) as exc:
            raise StoreError(
                f"W&B did not link the artifact to {target_path}: {self._scrub(exc)}",
                artifact=qualified,
            ) from exc

    # -- resolve -----------------------------------------------------------------------------------

    def resolve(
        self,
        entity: str,
        project: str,
        name: str,
        *,
        version: int | str | None = None,
        alias: str | None = None,
    ) -> ArtifactVersion:
        """One version by number or alias (default ``latest``). Online it is downloaded into the
        cache; offline it comes from the local mirror."""
        check_artifact_name(name)
        check_entity(entity)
        check_project(project)
        if version is not None and alias is not None:
            raise ConfigurationError(
                "give either a version or an alias, not both", artifact=f"{entity}/{project}/{name}"
            )
        ref = version_ref_label(version) if version is not None else check_alias(alias or "latest")
        if self.offline:
            return self._mirror().resolve(entity, project, name, version=version, alias=alias)
        qualified = f"{entity}/{project}/{name}:{ref}"
        artifact, via_run = self._fetch(qualified)
        av = self._materialize(artifact, entity, project, name, qualified)
        if via_run:
            with self._lock:
                self._used.add((entity, project, name, av.version))
        self.cleanup_cache()
        return av

    def _fetch(self, qualified: str) -> tuple[Any, bool]:
        run = self._wandb.current
        try:
            if run is not None:
                return run.use_artifact(qualified), True
            return self._api(f"resolving {qualified}").artifact(qualified), False
        except ValueError as exc:
            raise ArtifactNotFoundError(
                f"W&B has no such artifact version or alias: {exc}", artifact=qualified
            ) from exc
        except self._AuthError as exc:
            raise StoreError(
                f"W&B refused the credentials: {self._scrub(exc)}",
                artifact=qualified,
                hint="check the API key (WANDB_API_KEY or api_key) and its project access",
            ) from exc
        except self._WandbError as exc:
            raise StoreError(
                f"W&B could not look the artifact up: {self._scrub(exc)}",
                artifact=qualified,
                hint="check the host, network access and the W&B server status",
            ) from exc
        except BaseException as exc:
            exc.add_note(f"dagster-wandb-secure: while looking up {qualified} in W&B")
            raise

    def _materialize(
        self, artifact: Any, entity: str, project: str, name: str, qualified: str
    ) -> ArtifactVersion:
        """Download ``artifact`` into the cache (unless a complete copy of the same digest is
        there) and describe it from disk."""
        version = parse_version_label(attr_str(artifact, "version"), qualified)
        label = f"{entity}/{project}/{name}"
        expected: dict[str, int | None] = {}  # relpath -> size the manifest promises
        try:
            for path, entry in artifact.manifest.entries.items():
                what = f"file name {path!r} in the W&B manifest of {label}"
                size = attr_obj(entry, "size")
                expected[safe_relpath(str(path), what=what)] = (
                    size if isinstance(size, int) else None
                )
        except UnsafePathError as exc:
            exc.with_location(artifact=label, version=f"v{version}")
            raise
        except (self._WandbError, ValueError) as exc:
            raise StoreError(
                f"could not fetch the W&B manifest: {self._scrub(exc)}",
                artifact=label,
                version=f"v{version}",
                hint="check network access and the W&B server status",
            ) from exc
        if not expected:
            raise StoreError(
                "the W&B artifact version has no files",
                artifact=label,
                version=f"v{version}",
                hint="an empty artifact cannot carry a signature; re-materialize the asset",
            )
        digest = str(attr_str(artifact, "digest") or "")

        def download(staging: Path) -> None:
            try:
                artifact.download(root=str(staging))
            except (self._WandbError, ValueError, OSError) as exc:
                raise StoreError(
                    f"downloading from W&B failed: {self._scrub(exc)}",
                    artifact=label,
                    version=f"v{version}",
                    hint="check network access, disk space and the W&B server status",
                ) from exc
            except BaseException as exc:
                exc.add_note(f"dagster-wandb-secure: while downloading {qualified}")
                raise

        vdir, files = self._cache.fill(
            entity, project, name, version, digest, expected, label=label, download=download
        )
        return describe(artifact, entity, project, name, version, files, vdir, self.run_info())

    # -- files -------------------------------------------------------------------------------------

    def file_path(self, av: ArtifactVersion, relpath: str) -> Path:
        """The local path of one file of ``av`` (a cache path online, a mirror path offline).

        Like ``LocalArtifactStore.file_path``: any regular file in the version folder is
        returned (a file that is not in ``av.files`` is for the verifier to refuse); a symlink
        anywhere on the way, a non-regular file or an escaping name is refused."""
        if self.offline:
            return self._mirror().file_path(av, relpath)
        return self._cache.file_path(av, relpath)

    def open_file(self, av: ArtifactVersion, relpath: str) -> BinaryIO:
        """Open one file of ``av`` for reading; symlinks and path escapes are refused."""
        if self.offline:
            return self._mirror().open_file(av, relpath)
        return self._cache.open_file(av, relpath)

    # -- listing and lineage -----------------------------------------------------------------------

    def list_versions(
        self, *, entity: str | None = None, project: str | None = None, name: str | None = None
    ) -> Iterator[ArtifactVersion]:
        """Every version (offline: of the mirror; online: of the W&B project, except W&B's own
        ``wandb-*`` types, each downloaded into the cache as it is yielded)."""
        if self.offline:
            yield from self._mirror().list_versions(entity=entity, project=project, name=name)
            return
        for e, p, cname, artifact, qualified in self._online_versions(entity, project, name):
            yield self._materialize(artifact, e, p, cname, qualified)

    def list_manifests(
        self, *, entity: str, project: str, name: str, relpath: str, max_bytes: int
    ) -> Iterator[ManifestItem]:
        """``base.ArtifactStore.list_manifests``. Offline: the mirror's. Online: each version is
        described from W&B's records (``files`` empty, nothing cached) and only its entry
        ``relpath`` is downloaded (``wandb_entry.fetch_entry``); no other file is fetched."""
        if self.offline:
            yield from self._mirror().list_manifests(
                entity=entity, project=project, name=name, relpath=relpath, max_bytes=max_bytes
            )
            return
        scratch = self.store_dir / "entries"
        for e, p, cname, artifact, qualified in self._online_versions(entity, project, name):
            version = parse_version_label(attr_str(artifact, "version"), qualified)
            root = self._cache.name_dir(e, p, cname) / f"v{version}"  # where it would be
            av = describe(artifact, e, p, cname, version, {}, root, self.run_info())
            try:
                data: bytes | SecureArtifactError = fetch_entry(
                    artifact, relpath, scratch=scratch, max_bytes=max_bytes, where=qualified,
                    errors=(self._WandbError,), scrub=self._scrub,
                )
            except SecureArtifactError as exc:
                data = exc
            yield av, data

    def _online_versions(
        self, entity: str | None, project: str | None, name: str | None
    ) -> Iterator[tuple[str, str, str, Any, str]]:
        return online_versions(
            self._api,
            entity if entity is not None else self.entity,
            project if project is not None else self.project,
            name,
            errors=(self._WandbError,),
            scrub=self._scrub,
        )

    def list_files(self, av: ArtifactVersion) -> list[DiskEntry]:
        """What is actually on disk in the version folder (symlinks and special files are
        reported, not followed), like ``LocalArtifactStore.list_files``."""
        if self.offline:
            return self._mirror().list_files(av)
        return self._cache.list_files(av)

    def record_use(self, av: ArtifactVersion, run_id: str | None) -> None:
        """Lineage. Offline: recorded in the mirror. Online: the store's W&B run declares the
        version as an input (``run.use_artifact``), once per run."""
        if self.offline:
            self._mirror().record_use(av, run_id)
            return
        key = (av.entity, av.project, av.name, av.version)
        with self._lock:
            if key in self._used:
                return
        run = self._ensure_run()
        try:
            run.use_artifact(av.qualified_name)
        except ValueError as exc:
            raise ArtifactNotFoundError(
                f"W&B no longer has this version: {exc}", artifact=av.qualified_name
            ) from exc
        except self._WandbError as exc:
            raise StoreError(
                f"W&B could not record the run's use of the artifact: {self._scrub(exc)}",
                artifact=av.qualified_name,
                hint="check network access and the W&B server status",
            ) from exc
        with self._lock:
            self._used.add(key)

    # -- cache -------------------------------------------------------------------------------------

    def cleanup_cache(self, *, now: float | None = None) -> list[Path]:
        """Remove cached versions unused for ``max(cache_duration, MIN_CACHE_AGE)``; safe with
        several processes. Returns the removed version folders. Runs after every online publish
        and resolve; offline there is no cache (the mirror is never cleaned)."""
        return self._cache.cleanup(self.cache_duration, now=now)
