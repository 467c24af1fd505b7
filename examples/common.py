"""What every example shares: where its files live, and the IO manager that signs and verifies.

Everything lives under one folder, ``$DWS_EXAMPLES_HOME`` (default ``.examples`` in the current
directory): the key store in ``keys/``, the embedded local artifact store in ``store/``. No W&B
account is needed. Create the signing key once before the first run::

    dagster-wandb-secure keys init -k .examples/keys

With no key the first write stops with ``NoSigningKeyError`` saying exactly that.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster_wandb_secure import WandbArtifactsIOManager

HOME_ENV = "DWS_EXAMPLES_HOME"
IO_MANAGER_KEY = "wandb_artifacts_manager"
ENTITY = "examples"
PROJECT = "dagster-wandb-secure"
DATA_DIR = Path(__file__).resolve().parent / "data"

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def examples_home() -> Path:
    """The folder holding the examples' key store and artifact store (read when called)."""
    return Path(os.environ.get(HOME_ENV) or ".examples").expanduser().absolute()


def io_manager(*, key_store: Path | None = None, **settings: object) -> WandbArtifactsIOManager:
    """The IO manager on the embedded local store; ``settings`` are extra IO manager keys."""
    home = examples_home()
    return WandbArtifactsIOManager(
        store="local",
        key_store=str(key_store or home / "keys"),
        local_store_dir=str(home / "store"),
        base_dir=str(home),
        entity=ENTITY,
        project=PROJECT,
        **settings,  # type: ignore[arg-type]
    )


def resources() -> dict[str, object]:
    return {IO_MANAGER_KEY: io_manager()}
