"""W&B Launch ops: ``run_launch_agent`` and ``run_launch_job``, with upstream's config schema.

Upstream calls a launch function that current wandb no longer has; these ops use what
``wandb.sdk.launch`` exports today: ``create_and_run_agent(api, config)``,
``launch(api, job=..., ...)`` (run here, no queue) and ``launch_add(..., queue_name=...)``
(enqueue), with a ``wandb.sdk.launch.api.LaunchApi`` built from the ``wandb_resource``.

Both ops require the resources ``wandb_resource`` and ``wandb_config`` (``entity``,
``project``), as upstream. Before anything touches W&B they check, in this order: entity and
project, the op's config, and that a server can be reached at all (an API key is configured and
``WANDB_MODE`` is not offline/dryrun/disabled). Every refusal is a ``LaunchConfigurationError``
naming the key and what to do; a failure reported by wandb is a ``LaunchFailedError`` chained to
wandb's own exception. Logs name the entity, project, queue(s), job and the *keys* of the
free-form dictionaries (``config``, ``resource_args``, ``parameters``), never their values and
never the API key (lists such as ``entry_point``: their length only).

What changed from upstream, because current wandb changed:

- ``uri``: wandb no longer launches from a URI (``launch_add`` silently drops it). Setting it is
  an error that says to create a job (``wandb job create``) and pass ``job``.
- ``parameters``: passed as the entry point's arguments, ``config["overrides"]["args"] =
  ["--key", "value", ...]`` (scalar values only).
- ``cuda``: wandb has no such option any more; ``cuda: true`` is an error that says to use a
  CUDA base image (``docker_image``). ``false`` is accepted and changes nothing.
- the agent gets ``entity``, ``queues`` and ``max_jobs``; wandb's agent config refuses a
  ``project`` key, so the project is validated but not sent.

The test seam: every call into wandb goes through the module attribute ``BACKEND`` (a
``LaunchBackend``). Tests replace it (``monkeypatch.setattr(launch.ops, "BACKEND", fake)``); the
product never does.
"""

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from dagster import (
    Array,
    Bool,
    Field,
    Noneable,
    OpExecutionContext,
    Permissive,
    String,
    op,
)

from ..artifacts.session import WandbCredentials
from ..core.errors import ConfigurationError, SecureArtifactError
from ..resources import credentials_of

OFFLINE_MODES = frozenset({"offline", "dryrun", "disabled"})
_NAME_FORBIDDEN = re.compile(r"[/\\#?%:\s]")
_ARG_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class LaunchConfigurationError(ConfigurationError):
    """A launch op cannot start: bad ``wandb_config``, bad op config, or no W&B server."""

    default_hint = "fix the launch op configuration named above"


class LaunchFailedError(SecureArtifactError):
    """wandb accepted the request but the launch, the queueing or the agent failed."""

    default_hint = "read wandb's error above (chained); check the queue, job and agent in W&B"


# --- upstream's config schema --------------------------------------------------------------


def launch_agent_config() -> dict[str, Field]:
    """The config schema of ``run_launch_agent`` (upstream keys)."""
    return {
        "queues": Field(
            Array(String), is_required=False, description="Names of the queues to poll."
        ),
        "max_jobs": Field(
            int,
            is_required=False,
            description="Launch jobs run in parallel at most (default 1; -1: no limit).",
        ),
    }


def launch_config() -> dict[str, Field]:
    """The config schema of ``run_launch_job`` (upstream keys)."""
    return {
        "uri": Field(
            String,
            is_required=False,
            description="Not supported by current wandb (an error): create a job, pass 'job'.",
        ),
        "job": Field(
            String, is_required=False, description="Job to launch, e.g. 'team/project/job:latest'."
        ),
        "entry_point": Field(
            Array(String), is_required=False, description="Command to run inside the job."
        ),
        "version": Field(
            String, is_required=False, description="Git commit or branch (Git-based jobs)."
        ),
        "parameters": Field(
            Noneable(Permissive()),
            is_required=False,
            description="Arguments for the entry point: {key: value} -> --key value.",
        ),
        "name": Field(String, is_required=False, description="Name of the launched run."),
        "resource": Field(
            String,
            is_required=False,
            description="Execution resource (wandb's default: local-container).",
        ),
        "resource_args": Field(
            Noneable(Permissive()),
            is_required=False,
            description="Arguments for the execution resource.",
        ),
        "docker_image": Field(
            String, is_required=False, description="Docker image to run, 'name:tag'."
        ),
        "config": Field(
            Noneable(Permissive()),
            is_required=False,
            description="Launch configuration (overrides, resource_args, builder, ...).",
        ),
        "queue": Field(
            String,
            is_required=False,
            description="Queue to add the run to; without it the run is launched here.",
        ),
        "run_id": Field(String, is_required=False, description="ID of the launched run."),
        "synchronous": Field(
            Bool,
            is_required=False,
            default_value=True,
            description="Wait until the run has finished (default true).",
        ),
        "cuda": Field(
            Bool,
            is_required=False,
            description="Not supported by current wandb: true is an error (use docker_image).",
        ),
    }


# --- the one seam: everything that talks to wandb ------------------------------------------


class LaunchBackend(Protocol):
    """What the ops need from wandb. ``WandbLaunchBackend`` is the real one."""

    def run_agent(self, credentials: WandbCredentials, config: dict[str, Any]) -> None: ...

    def launch(self, credentials: WandbCredentials, spec: dict[str, Any]) -> Any: ...

    def enqueue(
        self, credentials: WandbCredentials, spec: dict[str, Any], *, wait: bool
    ) -> Any: ...


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _scoped_credentials(credentials: WandbCredentials) -> Iterator[None]:
    """``launch_add`` builds its own API client from the environment: set key and host for the
    duration of the call only (under a lock), then restore whatever was there."""
    values = {"WANDB_API_KEY": credentials.api_key, "WANDB_BASE_URL": credentials.host}
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        try:
            for key, value in values.items():
                if value:
                    os.environ[key] = value
            yield
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old


class WandbLaunchBackend:
    """The real backend: wandb's public launch functions (imported only when called)."""

    @staticmethod
    def _api(credentials: WandbCredentials) -> Any:
        from wandb.sdk.launch.api import LaunchApi

        overrides = {"base_url": credentials.host} if credentials.host else {}
        return LaunchApi(api_key=credentials.api_key, overrides=overrides)

    def run_agent(self, credentials: WandbCredentials, config: dict[str, Any]) -> None:
        from wandb.sdk.launch import create_and_run_agent

        create_and_run_agent(self._api(credentials), config)

    def launch(self, credentials: WandbCredentials, spec: dict[str, Any]) -> Any:
        from wandb.sdk.launch import launch

        return launch(self._api(credentials), **spec)

    def enqueue(self, credentials: WandbCredentials, spec: dict[str, Any], *, wait: bool) -> Any:
        from wandb.sdk.launch import launch_add

        with _scoped_credentials(credentials):
            queued = launch_add(**spec)
        if wait:
            return queued.wait_until_finished()
        return queued


BACKEND: LaunchBackend = WandbLaunchBackend()


# --- validation (no network) ----------------------------------------------------------------


def _fail(reason: str, *, hint: str | None = None, artifact: str | None = None) -> None:
    raise LaunchConfigurationError(reason, hint=hint, artifact=artifact)


def _wandb_name(value: Any, label: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(
            f"wandb_config {label} must be a non-empty string, not {value!r}",
            hint=f"set {label} in the wandb_config resource",
        )
    if len(value) > 128 or _NAME_FORBIDDEN.search(value):
        _fail(
            f"wandb_config {label} {value!r} is not a W&B name (at most 128 characters, "
            "none of / \\ # ? % : or whitespace)"
        )
    return value


def entity_and_project(wandb_config: Any) -> tuple[str, str]:
    """Entity and project from the ``wandb_config`` resource (a mapping or an object)."""
    if wandb_config is None:
        _fail("the wandb_config resource is missing", hint="provide entity and project")
    if isinstance(wandb_config, Mapping):
        entity, project = wandb_config.get("entity"), wandb_config.get("project")
    else:
        entity = getattr(wandb_config, "entity", None)
        project = getattr(wandb_config, "project", None)
    return _wandb_name(entity, "entity"), _wandb_name(project, "project")


def require_server(credentials: WandbCredentials, *, what: str) -> None:
    """Refuse before any network call when no W&B server can be used."""
    mode = (os.environ.get("WANDB_MODE") or "").strip().lower()
    if mode in OFFLINE_MODES:
        _fail(
            f"{what} needs a W&B server, but WANDB_MODE={mode}",
            hint="unset WANDB_MODE (or set it to 'online') where a W&B server is reachable",
        )
    if (os.environ.get("WANDB_OFFLINE") or "").strip().lower() in {"1", "true", "yes"}:
        _fail(
            f"{what} needs a W&B server, but WANDB_OFFLINE is set",
            hint="unset WANDB_OFFLINE where a W&B server is reachable",
        )
    if not credentials.configured:
        _fail(
            f"{what} needs a W&B server, but the wandb_resource has no API key",
            hint="configure wandb_resource with api_key (e.g. {'env': 'WANDB_API_KEY'})",
        )


def agent_config(op_config: Mapping[str, Any], entity: str) -> dict[str, Any]:
    """wandb's agent configuration for ``run_launch_agent``."""
    config: dict[str, Any] = {"entity": entity}
    queues = op_config.get("queues")
    if queues is not None:
        if isinstance(queues, str) or not isinstance(queues, Sequence) or not queues:
            _fail("queues must be a non-empty list of queue names")
        for queue in queues:
            if not isinstance(queue, str) or not queue.strip():
                _fail(f"queues: {queue!r} is not a queue name")
        config["queues"] = list(queues)
    max_jobs = op_config.get("max_jobs")
    if max_jobs is not None:
        if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs == 0 or (
            max_jobs < -1
        ):
            _fail(f"max_jobs must be a positive integer or -1 (no limit), not {max_jobs!r}")
        config["max_jobs"] = max_jobs
    return config


def _optional_dict(op_config: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = op_config.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        _fail(f"{key} must be a dictionary, not {type(value).__name__}")
    return dict(value)


def _parameter_args(parameters: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in parameters.items():
        if not isinstance(key, str) or not _ARG_KEY.fullmatch(key):
            _fail(f"parameters: {key!r} is not a valid argument name")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            _fail(
                f"parameters[{key!r}] must be a string, number or boolean, "
                f"not {type(value).__name__}",
                hint="put structured settings in config['overrides']['run_config'] instead",
            )
        args.extend((f"--{key}", text))
    return args


def job_spec(
    op_config: Mapping[str, Any], entity: str, project: str
) -> tuple[dict[str, Any], str | None, bool]:
    """(keyword arguments for wandb, queue or None, synchronous) for ``run_launch_job``."""
    job = op_config.get("job")
    if op_config.get("uri"):
        _fail(
            "uri is not supported: the installed wandb launches jobs and images only "
            "(launch_add ignores a uri)",
            hint="create a job from the repository (`wandb job create git URI`) and set 'job'",
            artifact=job,
        )
    if op_config.get("cuda"):
        _fail(
            "cuda is not supported by the installed wandb's launch API",
            hint="use a CUDA base image: set docker_image (or the queue's builder config)",
            artifact=job,
        )
    docker_image = op_config.get("docker_image")
    if not job and not docker_image:
        _fail("set 'job' (a W&B job) or 'docker_image': there is nothing to launch")
    synchronous = op_config.get("synchronous", True)
    if not isinstance(synchronous, bool):
        _fail(f"synchronous must be true or false, not {synchronous!r}")
    config = _optional_dict(op_config, "config") or {}
    parameters = _optional_dict(op_config, "parameters")
    if parameters:
        overrides = config.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            _fail("config['overrides'] must be a dictionary")
        if overrides.get("args"):
            _fail("set either parameters or config['overrides']['args'], not both", artifact=job)
        config = {**config, "overrides": {**overrides, "args": _parameter_args(parameters)}}
    entry_point = op_config.get("entry_point")
    if entry_point is not None and (
        isinstance(entry_point, str)
        or not isinstance(entry_point, Sequence)
        or not all(isinstance(p, str) for p in entry_point)
    ):
        _fail("entry_point must be a list of strings")
    spec: dict[str, Any] = {
        "job": job,
        "entry_point": list(entry_point) if entry_point else None,
        "version": op_config.get("version"),
        "name": op_config.get("name"),
        "resource": op_config.get("resource"),
        "resource_args": _optional_dict(op_config, "resource_args"),
        "project": project,
        "entity": entity,
        "docker_image": docker_image,
        "config": config or None,
        "run_id": op_config.get("run_id"),
    }
    queue = op_config.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue.strip()):
        _fail(f"queue must be a queue name, not {queue!r}")
    if queue:
        spec["queue_name"] = queue
    else:
        spec["synchronous"] = synchronous
    return {k: v for k, v in spec.items() if v is not None}, queue, synchronous


def describe(spec: Mapping[str, Any]) -> str:
    """A log line: scalar fields as they are, dictionaries as their keys only and lists (an
    entry point's arguments may hold a token) as their length only, never their values."""
    parts = []
    for key in sorted(spec):
        value = spec[key]
        if isinstance(value, Mapping):
            parts.append(f"{key}=<keys: {', '.join(sorted(map(str, value)))}>")
        elif isinstance(value, list | tuple) and key != "queues":
            parts.append(f"{key}=<{len(value)} items>")
        else:
            parts.append(f"{key}={value!r}")
    return ", ".join(parts)


def _call(what: str, fn: Any, *args: Any, artifact: str | None = None, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except SecureArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised as a typed error, wandb's chained
        reason = f"{what} failed: {type(exc).__name__}: {exc}"
        raise LaunchFailedError(reason, artifact=artifact) from exc


# --- the ops ---------------------------------------------------------------------------------


@op(
    required_resource_keys={"wandb_resource", "wandb_config"},
    config_schema=launch_agent_config(),
    description="Run a W&B Launch agent that polls the configured queues (until stopped).",
)
def run_launch_agent(context: OpExecutionContext) -> None:
    entity, project = entity_and_project(context.resources.wandb_config)
    config = agent_config(context.op_config or {}, entity)
    credentials = credentials_of(context.resources.wandb_resource)
    require_server(credentials, what="run_launch_agent")
    context.log.info(f"W&B Launch agent for {entity} (project {project}): {describe(config)}")
    _call("the W&B Launch agent", BACKEND.run_agent, credentials, config)


@op(
    required_resource_keys={"wandb_resource", "wandb_config"},
    config_schema=launch_config(),
    description="Launch a W&B job here, or add it to a W&B Launch queue.",
)
def run_launch_job(context: OpExecutionContext) -> None:
    entity, project = entity_and_project(context.resources.wandb_config)
    spec, queue, synchronous = job_spec(context.op_config or {}, entity, project)
    credentials = credentials_of(context.resources.wandb_resource)
    require_server(credentials, what="run_launch_job")
    job = spec.get("job") or spec.get("docker_image")
    context.log.info(f"W&B Launch job: {describe(spec)}")
    if queue is None:
        context.log.info("no queue: launching the job from this process")
        _call("launching the job", BACKEND.launch, credentials, spec, artifact=job)
        return
    mode = "waiting until it has finished" if synchronous else "not waiting"
    context.log.info(f"adding the job to queue {queue!r} ({mode})")
    _call("queueing the job", BACKEND.enqueue, credentials, spec, wait=synchronous, artifact=job)


__all__ = [
    "BACKEND",
    "LaunchBackend",
    "LaunchConfigurationError",
    "LaunchFailedError",
    "WandbLaunchBackend",
    "agent_config",
    "entity_and_project",
    "job_spec",
    "launch_agent_config",
    "launch_config",
    "require_server",
    "run_launch_agent",
    "run_launch_job",
]
