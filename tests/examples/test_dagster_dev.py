"""``dagster dev`` on the examples: start it on 127.0.0.1 (telemetry off, its own DAGSTER_HOME),
launch an example job through its GraphQL API, and check that the asset's latest materialization
carries the signature metadata. The server is stopped by its own PID and process group.

Needs dagster-webserver (the ``webserver`` extra); skipped without it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.keys import KeyStore

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 120.0

LOCATIONS = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name jobs { name } } }
          ... on PythonError { message }
        }
      }
    }
  }
}
"""

LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN_STATUS = """
query($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""

MATERIALIZATION = """
query($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries {
          label
          __typename
          ... on TextMetadataEntry { text }
          ... on IntMetadataEntry { intValue }
          ... on UrlMetadataEntry { url }
        }
      }
    }
  }
}
"""

CHECKS = """
query($path: [String!]!) {
  assetNodes(assetKeys: [{path: $path}]) {
    assetChecksOrError {
      __typename
      ... on AssetChecks {
        checks { name executionForLatestMaterialization { status } }
      }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_signals() -> None:
    """In the child: SIGINT/SIGTERM back to default, so the server can be stopped by signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        doc = json.loads(response.read())
    assert "errors" not in doc, doc
    return doc["data"]


def wait_for_http(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"dagster dev did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group (it was started in a new session), then
    SIGKILL if it has not exited in time."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    try:  # children left behind in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def find_job(port: int, job: str) -> tuple[str, str]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        data = graphql(port, LOCATIONS)["workspaceOrError"]
        for entry in data.get("locationEntries", []):
            location = entry.get("locationOrLoadError") or {}
            if location.get("__typename") == "PythonError":
                pytest.fail(f"code location {entry['name']} failed: {location['message']}")
            for repo in location.get("repositories", []):
                if job in {j["name"] for j in repo["jobs"]}:
                    return entry["name"], repo["name"]
        if time.monotonic() > deadline:
            pytest.fail(f"job {job} not found in {data}")
        time.sleep(0.5)


def test_dagster_dev_shows_signature_metadata(tmp_path: Path) -> None:
    pytest.importorskip("dagster_webserver")
    dagster_home = tmp_path / "dagster-home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    examples_home = tmp_path / "examples-home"
    kid = KeyStore.open(examples_home / "keys").generate("ed25519")
    port = free_port()
    env = dict(os.environ)
    env.update(
        DAGSTER_HOME=str(dagster_home),
        DAGSTER_DISABLE_TELEMETRY="1",
        DWS_EXAMPLES_HOME=str(examples_home),
        WANDB_MODE="offline",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "dagster-dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-f", "examples/simple_assets.py",
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=default_signals,
            start_new_session=True,
        )
    try:
        wait_for_http(port, proc, log)
        location, repository = find_job(port, "simple_job")
        params = {
            "selector": {
                "repositoryLocationName": location,
                "repositoryName": repository,
                "jobName": "simple_job",
            },
            "runConfigData": {},
        }
        launched = graphql(port, LAUNCH, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        status = None
        while time.monotonic() < deadline:
            status = graphql(port, RUN_STATUS, {"runId": run_id})["runOrError"].get("status")
            if status in {"SUCCESS", "FAILURE", "CANCELED"}:
                break
            time.sleep(0.5)
        assert status == "SUCCESS", f"run {run_id}: {status}\n{log.read_text()[-3000:]}"

        asset = graphql(port, MATERIALIZATION, {"path": ["my_list_doubled"]})["assetOrError"]
        assert asset["__typename"] == "Asset", asset
        [materialization] = asset["assetMaterializations"]
        assert materialization["runId"] == run_id
        entries = {e["label"]: e for e in materialization["metadataEntries"]}
        assert entries["signature_status"]["text"] == "signed"
        assert entries["signing_key_id"]["text"] == kid
        assert entries["signature_algorithm"]["text"] == "ed25519"
        assert len(entries["payload_blake3"]["text"]) == 64
        assert entries["serializer"]["text"] == "pickle"
        assert entries["wandb_artifact_version"]["text"] == "v0"
        assert "wandb_run_url" not in entries  # unknown on the local store: no empty row

        # the example's signature checks are in the Checks tab, and ran with the job
        for path in (["my_first_list"], ["my_list_doubled"]):
            [node] = graphql(port, CHECKS, {"path": path})["assetNodes"]
            checks = node["assetChecksOrError"]
            assert checks["__typename"] == "AssetChecks", checks
            by_name = {c["name"]: c for c in checks["checks"]}
            assert "wandb_signature_verified" in by_name, (path, checks)
            execution = by_name["wandb_signature_verified"]["executionForLatestMaterialization"]
            assert execution is not None and execution["status"] == "SUCCEEDED", (path, execution)
    finally:
        stop(proc)
    assert proc.poll() is not None
