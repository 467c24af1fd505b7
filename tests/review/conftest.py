"""Fixtures for the review tests: a real key store, a local store and IO manager factories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager

ENTITY, PROJECT = "team", "proj"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def key_store(workdir: Path) -> KeyStore:
    ks = KeyStore.open(workdir / "keys")
    ks.generate("ed25519")
    return ks


@pytest.fixture
def store_dir(workdir: Path) -> Path:
    return workdir / "store"


@pytest.fixture
def settings(workdir: Path, store_dir: Path) -> dict[str, Any]:
    return {
        "key_store": str(workdir / "keys"),
        "store": "local",
        "local_store_dir": str(store_dir),
        "base_dir": str(workdir),
    }


@pytest.fixture
def make_io_manager(settings: dict[str, Any]) -> Callable[..., WandbArtifactsIOManager]:
    def make(**overrides: Any) -> WandbArtifactsIOManager:
        return WandbArtifactsIOManager(
            **{**settings, "entity": ENTITY, "project": PROJECT, **overrides}
        )

    return make
