"""Fixtures for the CLI tests: a fresh key store and local store, and a CLI runner; the builders
they use live in ``kit/cli.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.cli import Env


@pytest.fixture
def env(tmp_path: Path) -> Env:
    keys = tmp_path / "keys"
    ks = KeyStore.open(keys)
    ks.generate("ed25519")
    store_dir = tmp_path / "store"
    return Env(tmp_path, keys, store_dir, ks, LocalArtifactStore(store_dir))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
