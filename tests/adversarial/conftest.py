"""Fixtures of the adversarial suite; the machinery lives in ``kit.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dagster_wandb_secure.core.keys import KeyStore
from kit.adversarial import ALGS, World
from kit.adversarial import one_key_root as root  # noqa: F401 - the ``root`` fixture


@pytest.fixture(params=ALGS)
def alg(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def world(tmp_path: Path, alg: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    ks = KeyStore.open(work / "keys")
    ks.generate(alg)
    yield World(work, alg, work / "keys", ks, work / "store", work / "attacker-keys")


