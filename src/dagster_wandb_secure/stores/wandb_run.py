"""The W&B run a store logs through: run settings, a lazy start, one shared run per run id.

The run is started lazily, on the first operation that needs one (``publish``, or ``record_use``
online), with ``resume="allow"`` and the tag ``dagster_wandb``. Stores of one process naming the
same run id share one run (wandb refuses two active runs with one id); ``close()`` releases it and
the last user finishes it. Run starts are serialized per ``base_dir`` across processes (wandb
would otherwise give two processes starting the same run id in the same second one shared,
corrupted run folder). Offline, wandb writes the run's transaction log asynchronously: it is
complete once ``close()`` returned *and* wandb's service flushed it (at the latest when the
process exits, through wandb's own atexit hook); only then should ``wandb sync`` be run on the
folder.

The API key is held in a ``Secret`` (no repr, log line or traceback shows it) and handed to wandb
only through run/API settings, never offline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from filelock import Timeout as LockTimeout

from ..core.errors import ConfigurationError
from ..core.fsutil import InterProcessLock
from .base import StoreError

__all__ = [
    "DAGSTER_WANDB_TAG",
    "Mode",
    "Secret",
    "WandbRun",
    "attr_obj",
    "attr_str",
    "check_host",
    "check_run_id",
    "check_run_tags",
    "resolve_mode",
]

Mode = Literal["online", "offline"]

DAGSTER_WANDB_TAG = "dagster_wandb"
INIT_LOCK_NAME = "wandb-init.lock"
RUN_START_TIMEOUT = 300.0  # seconds to wait for other processes starting their W&B run
CONNECT_TIMEOUT_ENV = "DAGSTER_WANDB_SECURE_WANDB_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 30.0  # seconds wandb.init may take to reach the server (wandb: 90)
_log = logging.getLogger("dagster_wandb_secure.wandb")


def connect_timeout() -> float:
    """Seconds an online ``wandb.init`` may take: ``$DAGSTER_WANDB_SECURE_WANDB_TIMEOUT``, else
    30. A bad value is a ``ConfigurationError`` (never a silent default)."""
    raw = os.environ.get(CONNECT_TIMEOUT_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ConfigurationError(
            f"{CONNECT_TIMEOUT_ENV}={raw!r} is not a number of seconds between 0 and 3600",
            hint=f"unset it (default {DEFAULT_CONNECT_TIMEOUT:.0f} s) or set e.g. 60",
        )
    return value
MAX_RUN_ID_LEN = 128
MAX_RUN_NAME_LEN = 128
MAX_TAG_LEN = 64
RUN_ID_FORBIDDEN = frozenset("/\\#?%:")


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


def check_run_tags(tags: Sequence[str]) -> tuple[str, ...]:
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


class Secret:
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


def attr_obj(obj: Any, name: str) -> Any:
    """``obj.name``, or ``None`` when wandb refuses it."""
    # wandb raises ArtifactNotLoggedError (an AttributeError) for properties of unlogged artifacts
    try:
        return getattr(obj, name)
    except AttributeError:
        return None


def attr_str(obj: Any, name: str) -> Any:
    """``obj.name`` as a string, or ``None``."""
    value = attr_obj(obj, name)
    return None if value is None else str(value)


@dataclasses.dataclass
class _SharedRun:
    run: Any
    users: int


_RUNS: dict[tuple[Any, ...], _SharedRun] = {}
_RUNS_LOCK = threading.Lock()


class WandbRun:
    """The W&B run (and the W&B API client) of one store; nothing starts before ``ensure``.

    ``lock`` is the owning store's lock, so the store can forget its per-run state and
    ``detach`` the run in one step."""

    def __init__(
        self,
        *,
        sdk: Any,
        mode: Mode,
        entity: str,
        project: str,
        base_dir: Path,
        store_dir: Path,
        host: str | None,
        api_key: Secret | None,
        run_id: str | None,
        run_name: str | None,
        run_tags: tuple[str, ...],
        lock: threading.RLock,
    ) -> None:
        self._sdk = sdk
        self._WandbError: type[BaseException] = sdk.errors.Error
        self._AuthError: type[BaseException] = sdk.errors.AuthenticationError
        self.mode = mode
        self.entity = entity
        self.project = project
        self.base_dir = base_dir
        self.store_dir = store_dir
        self.host = host
        self._api_key = api_key
        self.run_id = run_id
        self.run_name = run_name
        self.run_tags = run_tags
        self._lock = lock
        self._run: Any = None
        self._run_key: tuple[Any, ...] | None = None
        self._api_client: Any = None

    @property
    def server(self) -> str:
        """The W&B server this run talks to (for messages)."""
        return self.host or os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"

    @property
    def current(self) -> Any:
        """The active W&B run, or ``None`` before ``ensure``."""
        return self._run

    def info(self) -> dict[str, str | None]:
        """``wandb_run_id``, ``wandb_run_name``, ``wandb_run_path``, ``wandb_run_url`` (and the
        offline run folder), or an empty dict when no run was started."""
        run = self._run
        if run is None:
            return {}
        info: dict[str, str | None] = {
            "wandb_run_id": attr_str(run, "id"),
            "wandb_run_name": attr_str(run, "name"),
            "wandb_run_path": attr_str(run, "path"),
            "wandb_run_url": attr_str(run, "url"),
        }
        if self.mode == "offline":
            info["wandb_offline_run_dir"] = attr_str(attr_obj(run, "settings"), "sync_dir")
        return info

    def ensure(self) -> Any:
        """The active run, started (or joined, if a store of this process shares its id) now."""
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
                    shared = _SharedRun(self._start(), 1)
                    if key is not None:
                        _RUNS[key] = shared
            self._run, self._run_key = shared.run, key
            return shared.run

    def detach(self) -> tuple[Any, tuple[Any, ...] | None]:
        """Forget the active run (call under ``lock``); returns what ``finish`` needs."""
        with self._lock:
            run, self._run = self._run, None
            key, self._run_key = self._run_key, None
        return run, key

    def finish(self, run: Any, key: tuple[Any, ...] | None) -> None:
        """Finish a detached run once no store of this process uses it any more."""
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
                f"finishing the W&B run {attr_str(run, 'path')} failed: {self.scrub(exc)}",
                hint="the run data may be incomplete; for an offline run, `wandb sync` its folder",
            ) from exc

    def _start(self) -> Any:
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
        if self.mode != "offline":
            timeout = connect_timeout()
            settings["init_timeout"] = timeout
            _log.info("connecting to W&B at %s (start-up timeout %.0f s)", self.server, timeout)
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
                f"W&B refused the credentials while starting run {where}: {self.scrub(exc)}",
                hint="check the API key (WANDB_API_KEY / api_key) and the host",
            ) from exc
        except ValueError as exc:  # wandb's settings validation (host, run id, name, tags)
            raise ConfigurationError(
                f"W&B refused the run settings of {where}: {self.scrub(exc)}",
                hint="check host (e.g. https://api.wandb.ai), run_id, run_name and run_tags",
            ) from exc
        except self._WandbError as exc:
            raise StoreError(
                f"could not start the W&B run {where} ({self.mode}"
                + (f", W&B at {self.server}" if self.mode != "offline" else "")
                + f"): {self.scrub(exc)}",
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
        if self.run_id is not None and attr_str(run, "id") != self.run_id:
            raise StoreError(
                f"wandb.init returned run {attr_str(run, 'id')!r} instead of {self.run_id!r}",
                hint="another W&B run is active in this process; finish it first",
            )
        return run

    def api(self, what: str) -> Any:
        if self.mode == "offline":  # pragma: no cover - every offline path is served by the mirror
            raise StoreError(f"{what}: the W&B API is not available offline")
        with self._lock:
            if self._api_client is None:
                overrides = {"base_url": self.host} if self.host else None
                key = self._api_key.get() if self._api_key else None
                try:
                    self._api_client = self._sdk.Api(api_key=key, overrides=overrides)
                except self._WandbError as exc:
                    raise StoreError(
                        f"{what}: could not connect to the W&B API: {self.scrub(exc)}",
                        hint="check the API key (WANDB_API_KEY / api_key), the host and network "
                        "access",
                    ) from exc
            return self._api_client

    def scrub(self, exc: object) -> str:
        text = str(exc)
        if self._api_key is not None:
            text = text.replace(self._api_key.get(), "<api key>")
        return text
