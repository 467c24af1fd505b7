"""Fixtures for the Dagster layer: a temp working folder with a real key store, a local store,
and IO manager factories in both the current and the legacy style."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager

ALGS = ["ed25519", "hmac-sha256"]
DUMMY_API_KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(params=ALGS)
def alg(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's working folder: the default key store is ``./keys`` relative to it."""
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
def key_store_alg(workdir: Path, alg: str) -> KeyStore:
    ks = KeyStore.open(workdir / "keys")
    ks.generate(alg)
    return ks


@pytest.fixture
def store_dir(workdir: Path) -> Path:
    return workdir / "store"


@pytest.fixture
def make_io_manager(workdir: Path, store_dir: Path) -> Callable[..., WandbArtifactsIOManager]:
    def make(**overrides: Any) -> WandbArtifactsIOManager:
        settings: dict[str, Any] = {
            "key_store": str(workdir / "keys"),
            "store": "local",
            "local_store_dir": str(store_dir),
            "base_dir": str(workdir),
            "entity": "team",
            "project": "proj",
        }
        settings.update(overrides)
        return WandbArtifactsIOManager(**settings)

    return make


@pytest.fixture
def io_manager(key_store: KeyStore, make_io_manager: Callable[..., Any]) -> WandbArtifactsIOManager:
    return make_io_manager()


@pytest.fixture
def dummy_api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The seed samples read WANDB_API_KEY from the environment; wandb stays offline."""
    monkeypatch.setenv("WANDB_API_KEY", DUMMY_API_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return DUMMY_API_KEY
