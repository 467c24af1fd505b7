"""A long-lived process (``dagster dev``'s run worker, a daemon, a test session) running many
materializations keeps a constant number of open files: each run used to leave its private copy
folder's lock file open (one descriptor per run, until the process exited)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dagster import asset, materialize
from dagster_wandb_secure import WandbArtifactsIOManager, wandb_artifacts_io_manager
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.resources import wandb_resource

RUNS = 6


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("form", ["configurable", "legacy"])
def test_materializations_do_not_gather_open_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # the legacy form requires one; store is local
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    ks.close()
    settings = {"key_store": str(tmp_path / "keys"), "store": "local",
                "local_store_dir": str(tmp_path / "store"), "base_dir": str(tmp_path / "base")}

    @asset(io_manager_key="m")
    def upstream() -> dict[str, int]:
        return {"x": 1}

    @asset(io_manager_key="m")
    def downstream(upstream: dict[str, int]) -> dict[str, int]:
        return upstream

    def resources() -> dict[str, Any]:
        if form == "configurable":
            return {"m": WandbArtifactsIOManager(entity="e", project="p", **settings)}
        return {"m": wandb_artifacts_io_manager.configured(settings),
                "wandb_resource": wandb_resource.configured({"api_key": {"env": "WANDB_API_KEY"}}),
                "wandb_config": {"entity": "e", "project": "p"}}

    counts = []
    for _ in range(RUNS):
        assert materialize([upstream, downstream], resources=resources()).success
        counts.append(_open_files())
    # each run's teardown closes what it opened: the count never grows (no garbage collection
    # needed: before the fix it grew by the lock file and, until a collection, by 5 per run)
    assert counts[-1] <= counts[0], counts
