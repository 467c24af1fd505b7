"""Fixtures for the examples: a fresh examples folder (key store + local store) per test, and a
loader that imports an example file as a new module, the way ``dagster dev -f`` does."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from dagster_wandb_secure.core.keys import KeyStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

if str(REPO) not in sys.path:  # the examples import their shared helper as ``examples.common``
    sys.path.insert(0, str(REPO))


@pytest.fixture
def examples_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "examples-home"
    home.mkdir()
    monkeypatch.setenv("DWS_EXAMPLES_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def signing_key(examples_home: Path) -> str:
    """The examples' key store with one primary Ed25519 key (``keys init``)."""
    return KeyStore.open(examples_home / "keys").generate("ed25519")


@pytest.fixture
def load_example() -> Callable[[str], ModuleType]:
    def load(name: str) -> ModuleType:
        path = EXAMPLES / f"{name}.py"
        module_name = f"example_{name}_{uuid.uuid4().hex[:8]}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
