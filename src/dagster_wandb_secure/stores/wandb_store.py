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

**The W&B run** is started lazily, on the first operation that needs one (``publish``, or
``record_use`` online), with ``resume="allow"`` and the tag ``dagster_wandb``. Stores of one process
naming the same run id share one run (wandb refuses two active runs with one id); ``close()``
releases it and the last user finishes it. Run starts are serialized per ``base_dir`` across
processes (wandb would otherwise give two processes starting the same run id in the same second
one shared, corrupted run folder). Construction only validates the configuration. Offline, wandb
writes the run's transaction log asynchronously: it is complete once ``close()`` returned *and*
wandb's service flushed it (at the latest when the process exits, through wandb's own atexit
hook); only then should ``wandb sync`` be run on the folder.

**The download cache** (online) lives in ``<base_dir>/wandb-secure/cache/<entity>/<project>/<name>/
v<N>/``. Each version has a lock file (``.v<N>.lock``), a last-use stamp (``.v<N>.used``, touched on
every resolve and file access) and the W&B digest it was downloaded for (``.v<N>.digest``).
``cleanup_cache`` removes a version only while holding its lock, and only when its stamp is older
than ``max(cache_duration, MIN_CACHE_AGE)``: a version that another process is downloading or has
just resolved is never removed. ``cache_duration=timedelta(0)`` means "keep nothing longer than
``MIN_CACHE_AGE``".

**The test seam** is the single constructor argument ``sdk``: ``None`` (the default) means the real
``wandb`` module. Tests pass an object faking the few calls listed above to exercise the online
path, since no W&B server can run in the test environment. There is no other test hook.

``ArtifactVersion.extra`` carries, when known: ``wandb_mode``, ``wandb_artifact_id``,
``wandb_artifact_url``, ``wandb_artifact_size``, ``wandb_run_id``, ``wandb_run_name``,
``wandb_run_path``, ``wandb_run_url``, ``wandb_offline_run_dir``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import os
import re
import shutil
import stat
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

from filelock import Timeout as LockTimeout

from ..core.errors import ConfigurationError, UnsafePathError
from ..core.fsutil import (
    InterProcessLock,
    atomic_write,
    open_no_follow,
    safe_relpath,
)
from .base import (
    ArtifactNotFoundError,
    ArtifactVersion,
    FileEntry,
    StoreError,
    check_alias,
    check_artifact_name,
)
from .local import DiskEntry, LocalArtifactStore, walk_version_folder

log = logging.getLogger(__name__)

Mode = Literal["online", "offline"]

DAGSTER_WANDB_TAG = "dagster_wandb"
STORE_SUBDIR = "wandb-secure"
DEFAULT_CACHE_DURATION = timedelta(days=30)
MIN_CACHE_AGE = timedelta(minutes=5)  # grace period protecting a version a reader just resolved
STALE_STAGING_AGE = timedelta(days=1)  # leftovers of crashed publishes/downloads
CACHE_LOCK_TIMEOUT = 600.0  # seconds to wait for another process downloading the same version
INIT_LOCK_NAME = "wandb-init.lock"
RUN_START_TIMEOUT = 300.0  # seconds to wait for other processes starting their W&B run
MAX_RUN_ID_LEN = 128
MAX_RUN_NAME_LEN = 128
MAX_TAG_LEN = 64
_CHUNK = 1 << 20

RUN_ID_FORBIDDEN = frozenset("/\\#?%:")
# entity, project and type follow the artifact-name rule, as in the local store (they become
# folder names in the cache and the mirror)
_PART_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_VERSION_RE = re.compile(r"^v?(\d{1,9})$")
_VERSION_DIR_RE = re.compile(r"^v(\d{1,9})$")
_DOWNLOAD_DIR_RE = re.compile(r"^\.v(\d{1,9})\.download-[0-9a-f]+$")


# --- configuration checks -----------------------------------------------------------------------


def resolve_mode(mode: str | None) -> Mode:
    """``mode`` if given, else ``WANDB_MODE``, else online. ``disabled`` is refused (it would drop
    every artifact silently)."""
    raw = mode if mode is not None else os.environ.get("WANDB_MODE", "online")
    value = raw.strip().lower()
    if value in {"offline", "dryrun"}:
        return "offline"
    if value in {"online", "run", ""}:
        return "online"
    source = "mode" if mode is not None else "WANDB_MODE"
    raise ConfigurationError(
        f"unsupported W&B mode {raw!r} (from {source}); the W&B store needs 'online' or 'offline' "
        "('disabled' would silently drop every artifact)",
        hint="set WANDB_MODE=online or offline, or use store='local' for the embedded store",
    )


def check_run_id(run_id: str) -> str:
    """W&B run ids: 1-128 characters, none of ``/ \\ # ? % :``, no whitespace or control chars."""
    if not isinstance(run_id, str) or not run_id:
        raise ConfigurationError(f"invalid run_id {run_id!r}: it must be a non-empty string")
    bad = sorted({c for c in run_id if c in RUN_ID_FORBIDDEN})
    if bad:
        raise ConfigurationError(
            f"invalid run_id {run_id!r}: W&B forbids the characters {' '.join(bad)} in run ids",
            hint="use letters, digits, '-' and '_' in run_id (the Dagster run id is fine)",
        )
    if len(run_id) > MAX_RUN_ID_LEN or any(
        c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in run_id
    ):
        raise ConfigurationError(
            f"invalid run_id {run_id!r}: at most {MAX_RUN_ID_LEN} characters, no whitespace or "
            "control characters",
        )
    return run_id


def _check_part(value: object, what: str, hint: str = "") -> str:
    if not isinstance(value, str) or not _PART_RE.fullmatch(value) or value in {".", ".."}:
        raise ConfigurationError(
            f"invalid {what} {value!r}: use 1-128 letters, digits, '-', '_' or '.'",
            hint=hint or None,
        )
    return value


def check_entity(entity: object) -> str:
    return _check_part(
        entity, "W&B entity", "set 'entity' in wandb_config to your W&B user or team name"
    )


def check_project(project: object) -> str:
    return _check_part(project, "W&B project", "set 'project' in wandb_config to a W&B project")


def check_host(host: str) -> str:
    parts = urllib.parse.urlsplit(host) if isinstance(host, str) else None
    if (
        parts is None
        or parts.scheme not in {"http", "https"}
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in host)
    ):
        raise ConfigurationError(
            f"invalid W&B host {host!r}: use an http(s) URL such as https://api.wandb.ai, "
            "without credentials, query or fragment",
        )
    return host.rstrip("/")


def check_artifact_type(type_: object) -> str:
    return _check_part(type_, "artifact type")


def _run_tags(tags: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise ConfigurationError(f"run_tags must be a list of strings, not the string {tags!r}")
    out: dict[str, None] = {}
    for tag in (*tags, DAGSTER_WANDB_TAG):
        if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG_LEN:
            raise ConfigurationError(
                f"invalid run tag {tag!r}: tags are non-empty strings of at most {MAX_TAG_LEN} "
                "characters",
            )
        out[tag] = None
    return tuple(out)


def _version_label(version: int | str) -> str:
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise ConfigurationError(f"invalid version {version!r}: use a number such as 3 or 'v3'")
    if isinstance(version, int):
        if version < 0:
            raise ConfigurationError(f"invalid version {version!r}: versions start at 0")
        return f"v{version}"
    m = _VERSION_RE.fullmatch(version)
    if not m:
        raise ConfigurationError(f"invalid version {version!r}: use a number such as 3 or 'v3'")
    return f"v{int(m[1])}"


class _Secret:
    """Holds the API key so that no repr, log line or traceback locals show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("the W&B API key is not picklable")


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
        self._api_key = _Secret(api_key) if api_key else None
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
        self.run_tags = _run_tags(run_tags)
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
        self._run: Any = None
        self._run_key: tuple[Any, ...] | None = None
        self._api_client: Any = None
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
        return self._run

    def run_info(self) -> dict[str, str | None]:
        """``wandb_run_id``, ``wandb_run_name``, ``wandb_run_path``, ``wandb_run_url`` (and the
        offline run folder), or an empty dict when no run was started."""
        run = self._run
        if run is None:
            return {}
        info: dict[str, str | None] = {
            "wandb_run_id": _attr(run, "id"),
            "wandb_run_name": _attr(run, "name"),
            "wandb_run_path": _attr(run, "path"),
            "wandb_run_url": _attr(run, "url"),
        }
        if self.offline:
            info["wandb_offline_run_dir"] = _attr(_attr_obj(run, "settings"), "sync_dir")
        return info

    def close(self) -> None:
        """Release the W&B run (idempotent); the run is finished once no store of this process
        uses it. A later operation starts it again (``resume="allow"``)."""
        with self._lock:
            run, self._run = self._run, None
            key, self._run_key = self._run_key, None
            self._used.clear()
        if run is None:
            return
        with _RUNS_LOCK:
            shared = _RUNS.get(key) if key is not None else None
            if shared is not None and shared.run is run:
                shared.users -= 1
                if shared.users > 0:
                    return  # another store of this process still logs to this run
                del _RUNS[key]
        try:
            run.finish()
        except self._WandbError as exc:
            raise StoreError(
                f"finishing the W&B run {_attr(run, 'path')} failed: {self._scrub(exc)}",
                hint="the run data may be incomplete; for an offline run, `wandb sync` its folder",
            ) from exc

    def _ensure_run(self) -> Any:
        with self._lock:
            if self._run is not None:
                return self._run
            # One W&B run per run id per process: wandb refuses a second active run with the
            # same id, so stores of one process that name the same run share it.
            key = None
            if self.run_id is not None:
                key = (
                    self._sdk,
                    self.mode,
                    str(self.base_dir),
                    self.host,
                    self.entity,
                    self.project,
                    self.run_id,
                )
            with _RUNS_LOCK:
                shared = _RUNS.get(key) if key is not None else None
                if shared is not None:
                    shared.users += 1
                else:
                    shared = _SharedRun(self._start_run(), 1)
                    if key is not None:
                        _RUNS[key] = shared
            self._run, self._run_key = shared.run, key
            return shared.run

    def _start_run(self) -> Any:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {
            "entity": self.entity,
            "project": self.project,
            "id": self.run_id,
            "name": self.run_name,
            "tags": list(self.run_tags),
            "resume": "allow",
            "dir": str(self.base_dir),
            "mode": self.mode,
            # never hand back (or finish) some other run that is active in this process
            "reinit": "create_new",
        }
        settings: dict[str, Any] = {}
        if not self.offline:
            if self._api_key is not None:
                settings["api_key"] = self._api_key.get()
            if self.host is not None:
                settings["base_url"] = self.host
        if settings:
            kwargs["settings"] = settings
        where = f"{self.entity}/{self.project}/{self.run_id or '<new run>'}"
        try:
            # wandb names the run folder <mode>-<second>-<run id> and cannot stop two processes
            # starting the same run id in the same second from sharing (and corrupting) one
            # folder: serialize run starts in this base_dir
            with InterProcessLock(self.store_dir / INIT_LOCK_NAME, timeout=RUN_START_TIMEOUT):
                run = self._sdk.init(**kwargs)
        except LockTimeout as exc:
            raise StoreError(
                f"another process has been starting a W&B run in {self.base_dir} for more "
                f"than {RUN_START_TIMEOUT:.0f} s",
                hint="check for a hung process using the same base_dir",
            ) from exc
        except self._AuthError as exc:
            raise StoreError(
                f"W&B refused the credentials while starting run {where}: {self._scrub(exc)}",
                hint="check the API key (WANDB_API_KEY / api_key) and the host",
            ) from exc
        except ValueError as exc:  # wandb's settings validation (host, run id, name, tags)
            raise ConfigurationError(
                f"W&B refused the run settings of {where}: {self._scrub(exc)}",
                hint="check host (e.g. https://api.wandb.ai), run_id, run_name and run_tags",
            ) from exc
        except self._WandbError as exc:
            raise StoreError(
                f"could not start the W&B run {where} ({self.mode}): {self._scrub(exc)}",
                hint="check the host, network access and the entity/project; or run with "
                "WANDB_MODE=offline and `wandb sync` later",
            ) from exc
        except BaseException as exc:
            exc.add_note(f"dagster-wandb-secure: while starting the W&B run {where}")
            if "in use" in str(exc):
                exc.add_note(
                    "dagster-wandb-secure: processes that share one wandb service (the "
                    "WANDB_SERVICE environment variable) cannot hold the same run id at once; "
                    "do not start wandb in the parent process, or set distinct run_id values"
                )
            raise
        if self.run_id is not None and _attr(run, "id") != self.run_id:
            raise StoreError(
                f"wandb.init returned run {_attr(run, 'id')!r} instead of {self.run_id!r}",
                hint="another W&B run is active in this process; finish it first",
            )
        return run

    def _api(self, what: str) -> Any:
        if self.offline:  # pragma: no cover - every offline path is served by the mirror
            raise StoreError(f"{what}: the W&B API is not available offline")
        with self._lock:
            if self._api_client is None:
                overrides = {"base_url": self.host} if self.host else None
                key = self._api_key.get() if self._api_key else None
                try:
                    self._api_client = self._sdk.Api(api_key=key, overrides=overrides)
                except self._WandbError as exc:
                    raise StoreError(
                        f"{what}: could not connect to the W&B API: {self._scrub(exc)}",
                        hint="check the API key (WANDB_API_KEY / api_key), the host and network "
                        "access",
                    ) from exc
            return self._api_client

    def _mirror(self) -> LocalArtifactStore:
        with self._lock:
            if self._mirror_store is None:
                self._mirror_store = LocalArtifactStore(self.local_dir)
            return self._mirror_store

    def _scrub(self, exc: object) -> str:
        text = str(exc)
        if self._api_key is not None:
            text = text.replace(self._api_key.get(), "<api key>")
        return text

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
        name_dir = self._name_dir(entity, project, name)
        name_dir.mkdir(parents=True, exist_ok=True)
        staging = name_dir / f".publish-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            entries = {rel: _copy_hashing(src, staging, rel, label) for rel, src in sources.items()}
            run = self._ensure_run()
            artifact = self._new_artifact(label, name, type_, description, meta)
            try:
                for rel in sorted(entries):
                    # immutable: W&B uploads our private staging copy without copying it again
                    artifact.add_file(str(staging / rel), name=rel, policy="immutable")
                logged = run.log_artifact(artifact, aliases=list(aliases))
                logged.wait()
                version = _parse_version(_attr(logged, "version"), label)
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
            with self._version_lock(name_dir, version, label):
                vdir = self._install(name_dir, version, staging, str(_attr(logged, "digest") or ""))
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
            extra={"wandb_mode": "online", **self._artifact_extra(logged), **self.run_info()},
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
        got = str(_attr(artifact, "digest") or "")
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
        ref = _version_label(version) if version is not None else check_alias(alias or "latest")
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
        run = self._run
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
        version = _parse_version(_attr(artifact, "version"), qualified)
        label = f"{entity}/{project}/{name}"
        expected: dict[str, int | None] = {}  # relpath -> size the manifest promises
        try:
            for path, entry in artifact.manifest.entries.items():
                what = f"file name {path!r} in the W&B manifest of {label}"
                size = _attr_obj(entry, "size")
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
        digest = str(_attr(artifact, "digest") or "")
        name_dir = self._name_dir(entity, project, name)
        name_dir.mkdir(parents=True, exist_ok=True)
        vdir = name_dir / f"v{version}"
        with self._version_lock(name_dir, version, label):
            files = self._cached_files(vdir, name_dir, version, digest, expected)
            if files is None:
                staging = name_dir / f".v{version}.download-{uuid.uuid4().hex}"
                staging.mkdir()
                try:
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
                    files = _scan(staging, label, f"v{version}")
                    mismatch = _manifest_mismatch(files, expected)
                    if mismatch:
                        raise StoreError(
                            f"the downloaded files do not match the W&B manifest ({mismatch})",
                            artifact=label,
                            version=f"v{version}",
                            hint="retry; if it persists, the artifact holds references that "
                            "cannot be downloaded",
                        )
                    self._install(name_dir, version, staging, digest)
                finally:
                    if staging.exists():
                        shutil.rmtree(staging, ignore_errors=True)
            self._touch(name_dir, version)
        metadata = dict(_attr_obj(artifact, "metadata") or {})
        created_by = metadata.get("source_dagster_run_id")
        return ArtifactVersion(
            entity=entity,
            project=project,
            name=name,
            version=version,
            type=str(_attr(artifact, "type") or ""),
            description=_attr(artifact, "description"),
            metadata=metadata,
            aliases=tuple(str(a) for a in (_attr_obj(artifact, "aliases") or ())),
            files=files,
            created_at=_parse_time(_attr(artifact, "created_at")),
            created_by_run=created_by if isinstance(created_by, str) else None,
            root=vdir,
            extra={"wandb_mode": "online", **self._artifact_extra(artifact), **self.run_info()},
        )

    # -- files -------------------------------------------------------------------------------------

    def file_path(self, av: ArtifactVersion, relpath: str) -> Path:
        """The local path of one file of ``av`` (a cache path online, a mirror path offline).

        Like ``LocalArtifactStore.file_path``: any regular file in the version folder is
        returned (a file that is not in ``av.files`` is for the verifier to refuse); a symlink
        anywhere on the way, a non-regular file or an escaping name is refused."""
        if self.offline:
            return self._mirror().file_path(av, relpath)
        label = f"{av.entity}/{av.project}/{av.name}"
        relpath = safe_relpath(relpath, what=f"file name in artifact {label}")
        name_dir = self._name_dir(av.entity, av.project, av.name)
        if av.root != name_dir / f"v{av.version}":
            raise StoreError(
                f"version root {av.root} is not in this store's cache ({self.cache_dir})",
                artifact=label,
                version=av.version_label,
                hint="resolve the version through this store",
            )
        current = av.root
        mode = 0
        for part in ("", *relpath.split("/")):
            current = current / part if part else current
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError as exc:
                if part and relpath not in av.files:
                    raise ArtifactNotFoundError(
                        f"the version has no file {relpath!r}",
                        artifact=label,
                        version=av.version_label,
                        hint=f"files of this version: {', '.join(sorted(av.files)) or '<none>'}",
                    ) from exc
                raise StoreError(
                    f"the cached copy of {relpath!r} is gone (removed by cache cleanup?)",
                    artifact=label,
                    version=av.version_label,
                    hint="resolve the version again; raise cache_duration_in_minutes if this "
                    "recurs",
                ) from exc
            if stat.S_ISLNK(mode):
                raise UnsafePathError(
                    f"{relpath!r} leads through the symlink {current}; refusing to follow it",
                    artifact=label,
                    version=av.version_label,
                )
        if not stat.S_ISREG(mode):
            raise UnsafePathError(
                f"{relpath!r} is not a regular file", artifact=label, version=av.version_label
            )
        self._touch(name_dir, av.version)
        return current

    def open_file(self, av: ArtifactVersion, relpath: str) -> BinaryIO:
        """Open one file of ``av`` for reading; symlinks and path escapes are refused."""
        if self.offline:
            return self._mirror().open_file(av, relpath)
        path = self.file_path(av, relpath)
        try:
            return open_no_follow(path)
        except UnsafePathError as exc:
            exc.with_location(
                artifact=f"{av.entity}/{av.project}/{av.name}", version=av.version_label
            )
            raise
        except FileNotFoundError as exc:
            raise StoreError(
                f"the cached copy of {relpath!r} is gone (removed by cache cleanup?)",
                artifact=f"{av.entity}/{av.project}/{av.name}",
                version=av.version_label,
                hint="resolve the version again",
            ) from exc

    # -- listing and lineage -----------------------------------------------------------------------

    def list_versions(
        self, *, entity: str | None = None, project: str | None = None, name: str | None = None
    ) -> Iterator[ArtifactVersion]:
        """Every version (offline: of the mirror; online: of the W&B project, except W&B's own
        ``wandb-*`` types, each downloaded into the cache as it is yielded)."""
        if self.offline:
            yield from self._mirror().list_versions(entity=entity, project=project, name=name)
            return
        entity = check_entity(entity if entity is not None else self.entity)
        project = check_project(project if project is not None else self.project)
        if name is not None:
            check_artifact_name(name)
        where = f"{entity}/{project}"
        api = self._api(f"listing artifacts of {where}")
        try:
            collections = [
                c
                for t in api.artifact_types(project=where)
                # W&B's own bookkeeping types (run history, ...) are not artifacts of this store
                if not str(_attr(t, "name") or "").startswith("wandb-")
                for c in t.collections()
                if name is None or c.name == name
            ]
        except (self._WandbError, ValueError) as exc:
            raise StoreError(
                f"W&B could not list the artifacts of {where}: {self._scrub(exc)}",
                artifact=f"{where}/{name}" if name else where,
                hint="check the host, the API key and network access",
            ) from exc
        for collection in collections:
            cname = check_artifact_name(collection.name)
            try:
                versions = list(collection.artifacts())
            except (self._WandbError, ValueError) as exc:
                raise StoreError(
                    f"W&B could not list the versions: {self._scrub(exc)}",
                    artifact=f"{where}/{cname}",
                    hint="check the host, the API key and network access",
                ) from exc
            for artifact in sorted(
                versions, key=lambda a: _parse_version(_attr(a, "version"), cname)
            ):
                qualified = f"{where}/{cname}:{_attr(artifact, 'version')}"
                yield self._materialize(artifact, entity, project, cname, qualified)

    def list_files(self, av: ArtifactVersion) -> list[DiskEntry]:
        """What is actually on disk in the version folder (symlinks and special files are
        reported, not followed), like ``LocalArtifactStore.list_files``."""
        if self.offline:
            return self._mirror().list_files(av)
        label = f"{av.entity}/{av.project}/{av.name}"
        if av.root != self._name_dir(av.entity, av.project, av.name) / f"v{av.version}":
            raise StoreError(
                f"version root {av.root} is not in this store's cache ({self.cache_dir})",
                artifact=label,
                version=av.version_label,
                hint="resolve the version through this store",
            )
        try:
            found = walk_version_folder(av.root)
        except OSError as exc:
            raise StoreError(
                f"cannot list the cached copy {av.root}: {exc.strerror or exc}",
                artifact=label,
                version=av.version_label,
                hint="resolve the version again",
            ) from exc
        self._touch(self._name_dir(av.entity, av.project, av.name), av.version)
        return found

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

    def _name_dir(self, entity: str, project: str, name: str) -> Path:
        return self.cache_dir / entity / project / name

    def _version_lock(self, name_dir: Path, version: int, label: str) -> _Locked:
        return _Locked(name_dir / f".v{version}.lock", CACHE_LOCK_TIMEOUT, label, version)

    def _cached_files(
        self,
        vdir: Path,
        name_dir: Path,
        version: int,
        digest: str,
        expected: Mapping[str, int | None],
    ) -> dict[str, FileEntry] | None:
        """The files of a complete cached copy of this digest, or ``None`` to download again."""
        if not vdir.is_dir() or vdir.is_symlink():
            return None
        try:
            cached_digest = (name_dir / f".v{version}.digest").read_text("utf-8")
        except OSError:
            return None
        if not digest or cached_digest != digest:
            return None
        try:
            files = _scan(vdir, str(name_dir), f"v{version}")
        except UnsafePathError:
            return None  # something put a symlink in the cache: throw the copy away
        return None if _manifest_mismatch(files, expected) else files

    def _install(self, name_dir: Path, version: int, staging: Path, digest: str) -> Path:
        """Move a complete staging folder into place as ``v<N>``. The caller holds the lock."""
        vdir = name_dir / f"v{version}"
        if vdir.exists() or vdir.is_symlink():
            trash = name_dir / f".trash-{uuid.uuid4().hex}"
            os.rename(vdir, trash)
            _rmtree(trash)
        os.rename(staging, vdir)
        atomic_write(name_dir / f".v{version}.digest", digest.encode("utf-8"))
        self._touch(name_dir, version)
        return vdir

    @staticmethod
    def _touch(name_dir: Path, version: int) -> None:
        stamp = name_dir / f".v{version}.used"
        stamp.touch(exist_ok=True)
        os.utime(stamp)

    def cleanup_cache(self, *, now: float | None = None) -> list[Path]:
        """Remove cached versions unused for ``max(cache_duration, MIN_CACHE_AGE)``; safe with
        several processes. Returns the removed version folders. Runs after every online publish
        and resolve; offline there is no cache (the mirror is never cleaned)."""
        if not self.cache_dir.is_dir():
            return []
        now = time.time() if now is None else now
        max_age = max(self.cache_duration, MIN_CACHE_AGE).total_seconds()
        stale_age = max(max_age, STALE_STAGING_AGE.total_seconds())
        removed: list[Path] = []
        for name_dir in sorted(self.cache_dir.glob("*/*/*")):
            if name_dir.is_symlink() or not name_dir.is_dir():
                continue
            try:
                children = list(name_dir.iterdir())
            except OSError as exc:
                log.warning("cache cleanup: cannot list %s: %s", name_dir, exc)
                continue
            for child in children:
                try:
                    m = _VERSION_DIR_RE.fullmatch(child.name)
                    if m:
                        if self._evict(name_dir, int(m[1]), now, max_age):
                            removed.append(child)
                    elif child.name.startswith(".trash-"):
                        _rmtree(child)
                    elif (
                        child.name.startswith(".publish-")
                        and now - child.lstat().st_mtime > stale_age
                    ):
                        _rmtree(child)
                    elif d := _DOWNLOAD_DIR_RE.fullmatch(child.name):
                        # downloads run under the version lock: free lock = dead download
                        lock = InterProcessLock(name_dir / f".v{d[1]}.lock", timeout=0)
                        try:
                            with lock:
                                _rmtree(child)
                        except LockTimeout:
                            pass
                except OSError as exc:
                    log.warning("cache cleanup: cannot remove %s: %s", child, exc)
        return removed

    def _evict(self, name_dir: Path, version: int, now: float, max_age: float) -> bool:
        lock = InterProcessLock(name_dir / f".v{version}.lock", timeout=0)
        try:
            lock.__enter__()
        except LockTimeout:
            return False  # being downloaded or installed right now
        try:
            vdir = name_dir / f"v{version}"
            stamp = name_dir / f".v{version}.used"
            try:
                last_used = stamp.stat().st_mtime
            except FileNotFoundError:
                last_used = vdir.lstat().st_mtime
            if now - last_used < max_age:
                return False
            trash = name_dir / f".trash-{uuid.uuid4().hex}"
            os.rename(vdir, trash)
            for leftover in name_dir.glob(f".v{version}.download-*"):
                _rmtree(leftover)
            (name_dir / f".v{version}.digest").unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
        finally:
            lock.__exit__(None, None, None)
        _rmtree(trash)
        return True

    def _artifact_extra(self, artifact: Any) -> dict[str, Any]:
        extra = {
            "wandb_artifact_id": _attr(artifact, "id"),
            "wandb_artifact_url": _attr(artifact, "url"),
            "wandb_artifact_size": _attr_obj(artifact, "size"),
        }
        return {k: v for k, v in extra.items() if v is not None}


# --- helpers ------------------------------------------------------------------------------------


@dataclasses.dataclass
class _SharedRun:
    run: Any
    users: int


_RUNS: dict[tuple[Any, ...], _SharedRun] = {}
_RUNS_LOCK = threading.Lock()


class _Locked:
    """The per-version cache lock, turning a lock timeout into a StoreError."""

    def __init__(self, path: Path, timeout: float, label: str, version: int) -> None:
        self._lock = InterProcessLock(path, timeout=timeout)
        self._label = label
        self._version = version

    def __enter__(self) -> _Locked:
        try:
            self._lock.__enter__()
        except LockTimeout as exc:
            raise StoreError(
                f"another process has held the cache lock {self._lock.path} for more than "
                f"{CACHE_LOCK_TIMEOUT:.0f} s",
                artifact=self._label,
                version=f"v{self._version}",
                hint="wait for the other download to finish, or remove a stale process",
            ) from exc
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)


def _attr_obj(obj: Any, name: str) -> Any:
    # wandb raises ArtifactNotLoggedError (an AttributeError) for properties of unlogged artifacts
    try:
        return getattr(obj, name)
    except AttributeError:
        return None


def _attr(obj: Any, name: str) -> Any:
    value = _attr_obj(obj, name)
    return None if value is None else str(value)


def _parse_version(label: str | None, what: str) -> int:
    m = _VERSION_DIR_RE.fullmatch(label or "")
    if not m:
        raise StoreError(
            f"W&B reported an unexpected version label {label!r}",
            artifact=what,
            hint="report this; the W&B server answered something the store does not understand",
        )
    return int(m[1])


def _manifest_mismatch(files: Mapping[str, FileEntry], expected: Mapping[str, int | None]) -> str:
    """Why the files on disk are not what the W&B manifest lists ('' if they are)."""
    problems = []
    if extra := sorted(set(files) - set(expected)):
        problems.append(f"not in the manifest: {extra}")
    if missing := sorted(set(expected) - set(files)):
        problems.append(f"missing: {missing}")
    resized = sorted(
        p
        for p, size in expected.items()
        if p in files and size is not None and files[p].size != size
    )
    if resized:
        problems.append(f"wrong size: {resized}")
    return "; ".join(problems)


def _parse_time(value: str | None) -> datetime:
    if value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            log.warning("W&B returned an unparseable created_at %r; using the current time", value)
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _copy_hashing(src: Path, root: Path, rel: str, label: str) -> FileEntry:
    """Copy a regular file (never through a symlink) and hash exactly the bytes copied."""
    dest = root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        source = open_no_follow(src)
    except UnsafePathError as exc:
        exc.with_location(artifact=label)
        raise
    except OSError as exc:
        raise StoreError(f"cannot read {src}: {exc}", artifact=label) from exc
    with source, open(dest, "xb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return FileEntry(path=rel, size=size, sha256=digest.hexdigest())


def _scan(root: Path, label: str, version: str) -> dict[str, FileEntry]:
    """List and hash the files under ``root``; refuse symlinks and non-regular files."""
    files: dict[str, FileEntry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for entry in (*dirnames, *filenames):
            path = base / entry
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise UnsafePathError(
                    f"{rel!r} is a symlink; refusing it", artifact=label, version=version
                )
        for filename in filenames:
            path = base / filename
            rel = safe_relpath(path.relative_to(root).as_posix(), what=f"file name in {label}")
            digest = hashlib.sha256()
            size = 0
            try:
                fh = open_no_follow(path)
            except UnsafePathError as exc:
                exc.with_location(artifact=label, version=version)
                raise
            with fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
            files[rel] = FileEntry(path=rel, size=size, sha256=digest.hexdigest())
    return files


def _rmtree(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)
