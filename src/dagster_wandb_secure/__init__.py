"""dagster-wandb-secure: a drop-in dagster-wandb whose artifacts are signed and verified.

The Dagster-facing names are imported lazily so that ``import dagster_wandb_secure.core`` never
pulls in Dagster or wandb.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "wandb_resource": "dagster_wandb_secure.resources",
    "WandbResource": "dagster_wandb_secure.resources",
    "wandb_artifacts_io_manager": "dagster_wandb_secure.io_manager",
    "WandbArtifactsIOManager": "dagster_wandb_secure.io_manager",
    "WandbArtifactsIOManagerError": "dagster_wandb_secure.io_manager",
    "SerializationModule": "dagster_wandb_secure.types",
    "WandbArtifactConfiguration": "dagster_wandb_secure.types",
    "build_signature_asset_checks": "dagster_wandb_secure.asset_checks",
    "run_launch_agent": "dagster_wandb_secure.launch",
    "run_launch_job": "dagster_wandb_secure.launch",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dagster_wandb_secure' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
