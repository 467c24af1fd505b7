"""Shared fixtures. Every test runs with wandb offline, Dagster telemetry off, and every tool's
home/cache folders inside the test's own temporary directory, so no test touches the network or
the real home directory."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

# the real PostgreSQL fixtures (pg_server, pg_url), started only by tests that ask for them
pytest_plugins = ["kit.postgres"]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    for sub in ("wandb", "wandb-data", "wandb-cache", "wandb-config", "wandb-artifacts", "dagster"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_DIR", str(home / "wandb"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(home / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(home / "wandb-cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "wandb-config"))
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(home / "wandb-artifacts"))
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield home


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to open an internet (AF_INET/AF_INET6) connection to a non-loopback host.

    Unix sockets (wandb's own helper process) and loopback stay allowed."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            host = str(address[0])
            if not (host.startswith("127.") or host in {"::1", "localhost"}):
                raise RuntimeError(f"test tried to open a network connection to {address!r}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A path that a malicious payload would create if it ever ran. Tests assert it is absent."""
    path = tmp_path / "PWNED-marker"
    assert not path.exists()
    return path


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
