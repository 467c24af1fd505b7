"""The W&B Launch ops, tested through their one seam: ``dagster_wandb_secure.launch.ops.BACKEND``
replaced by a recording fake. Nothing here reaches a server (the socket guard would fail it);
the refusals that must happen before wandb is touched run with the real backend in place."""

from __future__ import annotations

import os
from typing import Any

import pytest

from dagster import DagsterInstance, job, make_values_resource
from dagster_wandb_secure import run_launch_agent, run_launch_job, wandb_resource
from dagster_wandb_secure.artifacts.session import WandbCredentials
from dagster_wandb_secure.launch import ops as launch
from dagster_wandb_secure.launch.ops import (
    LaunchConfigurationError,
    LaunchFailedError,
    WandbLaunchBackend,
)

API_KEY = "0123456789abcdef0123456789abcdef01234567"
SECRET = "s3cr3t-value-never-logged"


class FakeBackend:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, WandbCredentials, dict[str, Any], dict[str, Any]]] = []
        self.error = error

    def _record(self, kind: str, credentials: WandbCredentials, spec: dict[str, Any],
                **extra: Any) -> str:
        self.calls.append((kind, credentials, dict(spec), extra))
        if self.error is not None:
            raise self.error
        return "ok"

    def run_agent(self, credentials: WandbCredentials, config: dict[str, Any]) -> None:
        self._record("agent", credentials, config)

    def launch(self, credentials: WandbCredentials, spec: dict[str, Any]) -> Any:
        return self._record("launch", credentials, spec)

    def enqueue(self, credentials: WandbCredentials, spec: dict[str, Any], *, wait: bool) -> Any:
        return self._record("enqueue", credentials, spec, wait=wait)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    backend = FakeBackend()
    monkeypatch.setattr(launch, "BACKEND", backend)
    return backend


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", API_KEY)
    monkeypatch.setenv("WANDB_MODE", "online")


def make_job(the_op: Any) -> Any:
    @job(
        resource_defs={
            "wandb_config": make_values_resource(entity=str, project=str),
            "wandb_resource": wandb_resource.configured({"api_key": {"env": "WANDB_API_KEY"}}),
        }
    )
    def the_job() -> None:
        the_op()

    return the_job


def execute(the_op: Any, op_config: dict[str, Any], *, entity: str = "team",
            project: str = "proj") -> tuple[Any, str]:
    run_config = {
        "resources": {"wandb_config": {"config": {"entity": entity, "project": project}}},
        "ops": {the_op.name: {"config": op_config}},
    }
    with DagsterInstance.ephemeral() as instance:
        result = make_job(the_op).execute_in_process(
            run_config=run_config, instance=instance, raise_on_error=False
        )
        logs = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
    return result, logs


def error_of(result: Any) -> Any:
    failures = result.get_step_failure_events()
    assert failures, "the op should have failed"
    error = failures[0].event_specific_data.error
    while error.cause is not None:
        error = error.cause
    return error


def test_public_api_uses_what_wandb_exports() -> None:
    import wandb.sdk.launch as wl
    from wandb.sdk.launch.api import LaunchApi  # noqa: F401 - the client the backend builds

    for name in ("create_and_run_agent", "launch", "launch_add"):
        assert name in wl.__all__
    assert isinstance(launch.BACKEND, WandbLaunchBackend)
    assert run_launch_agent.name == "run_launch_agent" and run_launch_job.name == "run_launch_job"
    assert set(run_launch_job.config_schema.config_type.fields) == {
        "uri", "job", "entry_point", "version", "parameters", "name", "resource",
        "resource_args", "docker_image", "config", "queue", "run_id", "synchronous", "cuda",
    }
    assert set(run_launch_agent.config_schema.config_type.fields) == {"queues", "max_jobs"}


def test_agent(fake: FakeBackend, online: None) -> None:
    result, logs = execute(run_launch_agent, {"queues": ["gpu", "cpu"], "max_jobs": 2})
    assert result.success
    [(kind, creds, config, _)] = fake.calls
    assert kind == "agent"
    assert config == {"entity": "team", "queues": ["gpu", "cpu"], "max_jobs": 2}
    assert creds.api_key == API_KEY
    assert API_KEY not in logs and "gpu" in logs


def test_job_launched_here_with_parameters(fake: FakeBackend, online: None) -> None:
    result, logs = execute(
        run_launch_job,
        {
            "job": "team/proj/train:latest",
            "parameters": {"epochs": 3, "lr": 0.1, "fast": True},
            "resource_args": {"env": {"TOKEN": SECRET}},
            "config": {"overrides": {"run_config": {"password": SECRET}}},
            "entry_point": ["python", "train.py", f"--token={SECRET}"],
            "name": "nightly",
            "cuda": False,
        },
    )
    assert result.success
    [(kind, _, spec, _)] = fake.calls
    assert kind == "launch"
    assert spec["entity"] == "team" and spec["project"] == "proj"
    assert spec["synchronous"] is True and "queue_name" not in spec
    assert spec["config"]["overrides"]["args"] == [
        "--epochs", "3", "--lr", "0.1", "--fast", "true"
    ]
    assert spec["config"]["overrides"]["run_config"] == {"password": SECRET}
    assert spec["entry_point"] == ["python", "train.py", f"--token={SECRET}"]
    assert spec["name"] == "nightly"
    assert "cuda" not in spec and "uri" not in spec
    assert SECRET not in logs and API_KEY not in logs
    assert "resource_args=<keys: env>" in logs and "entry_point=<3 items>" in logs


@pytest.mark.parametrize("synchronous", [True, False])
def test_job_enqueued(fake: FakeBackend, online: None, synchronous: bool) -> None:
    result, _ = execute(
        run_launch_job,
        {"docker_image": "repo/img:1", "queue": "gpu", "synchronous": synchronous},
    )
    assert result.success
    [(kind, _, spec, extra)] = fake.calls
    assert kind == "enqueue" and extra == {"wait": synchronous}
    assert spec == {"docker_image": "repo/img:1", "queue_name": "gpu", "entity": "team",
                    "project": "proj"}


def test_offline_is_refused_before_wandb_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real backend stays in place: a refusal must come before any call into wandb."""
    monkeypatch.setenv("WANDB_API_KEY", API_KEY)  # WANDB_MODE=offline from conftest
    result, _ = execute(run_launch_job, {"job": "team/proj/train:latest"})
    err = error_of(result)
    assert err.cls_name == "LaunchConfigurationError"
    assert "WANDB_MODE=offline" in err.message and "What to do" in err.message


def test_no_api_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "")
    result, _ = execute(run_launch_agent, {})
    err = error_of(result)
    assert err.cls_name == "LaunchConfigurationError" and "no API key" in err.message


@pytest.mark.parametrize(
    ("entity", "project", "needle"),
    [("", "proj", "entity"), ("team", "", "project"), ("a/b", "proj", "entity"),
     ("team", "p:q", "project")],
)
def test_entity_and_project_validated_first(
    fake: FakeBackend, monkeypatch: pytest.MonkeyPatch, entity: str, project: str, needle: str
) -> None:
    # offline and no key: the wandb_config error must still be the one reported
    monkeypatch.setenv("WANDB_API_KEY", "")
    result, _ = execute(run_launch_job, {"uri": "x"}, entity=entity, project=project)
    err = error_of(result)
    assert err.cls_name == "LaunchConfigurationError"
    assert f"wandb_config {needle}" in err.message
    assert fake.calls == []


@pytest.mark.parametrize(
    ("op_config", "needle"),
    [
        ({"uri": "https://github.com/x/y", "job": "j"}, "uri is not supported"),
        ({"job": "j", "cuda": True}, "cuda is not supported"),
        ({}, "nothing to launch"),
        ({"job": "j", "parameters": {"nested": {"a": 1}}}, "parameters['nested']"),
        ({"job": "j", "parameters": {"bad key": 1}}, "not a valid argument name"),
        ({"job": "j", "parameters": {"a": 1}, "config": {"overrides": {"args": ["--b"]}}},
         "not both"),
    ],
)
def test_job_config_refusals(
    fake: FakeBackend, online: None, op_config: dict[str, Any], needle: str
) -> None:
    result, _ = execute(run_launch_job, op_config)
    err = error_of(result)
    assert err.cls_name == "LaunchConfigurationError" and needle in err.message
    assert fake.calls == []


@pytest.mark.parametrize(
    ("op_config", "needle"),
    [({"max_jobs": 0}, "max_jobs"), ({"max_jobs": -2}, "max_jobs"), ({"queues": []}, "queues"),
     ({"queues": [" "]}, "queue name")],
)
def test_agent_config_refusals(
    fake: FakeBackend, online: None, op_config: dict[str, Any], needle: str
) -> None:
    result, _ = execute(run_launch_agent, op_config)
    err = error_of(result)
    assert err.cls_name == "LaunchConfigurationError" and needle in err.message
    assert fake.calls == []


def test_wandb_failure_is_typed_and_chained(
    monkeypatch: pytest.MonkeyPatch, online: None
) -> None:
    from wandb.sdk.launch.errors import LaunchError

    monkeypatch.setattr(launch, "BACKEND", FakeBackend(LaunchError("queue gpu not found")))
    result, _ = execute(run_launch_job, {"job": "team/proj/train:latest", "queue": "gpu"})
    failures = result.get_step_failure_events()
    error = failures[0].event_specific_data.error
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause
    names = [e.cls_name for e in chain]
    assert "LaunchFailedError" in names and names[-1] == "LaunchError"
    typed = chain[names.index("LaunchFailedError")]
    assert "queue gpu not found" in typed.message and "team/proj/train:latest" in typed.message


def test_scoped_credentials_restore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "previous")
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    creds = WandbCredentials(api_key=API_KEY, host="https://wandb.example.internal")
    with launch._scoped_credentials(creds):
        assert os.environ["WANDB_API_KEY"] == API_KEY
        assert os.environ["WANDB_BASE_URL"] == "https://wandb.example.internal"
    assert os.environ["WANDB_API_KEY"] == "previous"
    assert "WANDB_BASE_URL" not in os.environ


def test_direct_validation_helpers() -> None:
    assert launch.entity_and_project({"entity": "e", "project": "p"}) == ("e", "p")
    with pytest.raises(LaunchConfigurationError, match="wandb_config resource is missing"):
        launch.entity_and_project(None)
    spec, queue, sync = launch.job_spec({"job": "j", "synchronous": False}, "e", "p")
    assert queue is None and sync is False and spec["synchronous"] is False
    assert issubclass(LaunchFailedError, Exception)


def test_specs_match_the_installed_wandb_signatures() -> None:
    """Every keyword the ops pass exists in the installed wandb's launch / launch_add."""
    import inspect

    import wandb.sdk.launch as wl

    full = {
        "job": "j", "entry_point": ["python", "x.py"], "version": "main", "name": "n",
        "resource": "local-container", "resource_args": {"a": 1}, "docker_image": "i:1",
        "config": {"overrides": {}}, "run_id": "r1", "parameters": {"x": 1},
    }
    here, queue, _ = launch.job_spec(full, "e", "p")
    assert queue is None
    assert set(here) <= set(inspect.signature(wl.launch).parameters)
    queued, queue, _ = launch.job_spec({**full, "queue": "q"}, "e", "p")
    assert queue == "q"
    assert set(queued) <= set(inspect.signature(wl.launch_add).parameters)
    assert "api" in inspect.signature(wl.create_and_run_agent).parameters


def test_agent_config_is_valid_for_the_installed_wandb() -> None:
    from wandb.sdk.launch.agent.config import AgentConfig

    config = launch.agent_config({"queues": ["q"], "max_jobs": -1}, "e")
    AgentConfig(**config)  # validates, no network
    with pytest.raises(Exception, match="project"):  # why upstream's agent config breaks now
        AgentConfig(**config, project="p")
