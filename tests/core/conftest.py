from __future__ import annotations

from pathlib import Path

import pytest

from dagster_wandb_secure.core.keys import KeyStore

ALGS = ["ed25519", "hmac-sha256"]


@pytest.fixture(params=ALGS)
def alg(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def key_store(tmp_path: Path, alg: str) -> KeyStore:
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate(alg)
    return ks


@pytest.fixture
def other_store(tmp_path: Path, alg: str) -> KeyStore:
    """A second, unrelated key store (an attacker's, or another team's)."""
    ks = KeyStore.open(tmp_path / "other-keys")
    ks.generate(alg)
    return ks
