"""Store options shared by ``audit``, ``adopt`` and ``resign``."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from ..core.errors import ConfigurationError
from ..stores import STORE_BACKENDS, default_local_dir, open_store

# an Enum, so --help shows the fixed choices ([local|wandb]) and typer refuses others
StoreChoice = StrEnum("StoreChoice", {kind: kind for kind in STORE_BACKENDS})  # type: ignore[misc]

StoreKindOption = typer.Option(
    StoreChoice("local"),
    "--store",
    help="Artifact store: local (a folder) or wandb (W&B, needs an API key).",
    case_sensitive=False,
)
StoreDirOption = typer.Option(
    None,
    "--store-dir",
    help="Local store folder (default, as the IO manager's: $DAGSTER_HOME/wandb-secure/store, else ./wandb-secure/"
    "store). With --store wandb: the offline mirror folder.",
    envvar="DAGSTER_WANDB_SECURE_STORE_DIR",
)
EntityOption = typer.Option(None, "--entity", help="W&B entity (filter for local stores).")
ProjectOption = typer.Option(None, "--project", help="W&B project (filter for local stores).")
NameOption = typer.Option(None, "--name", help="Only this artifact name.")


def listing_filter(
    kind: str, entity: str | None, project: str | None
) -> tuple[str | None, str | None]:
    """(entity, project) to filter listings by: a local store holds any number of them, a W&B
    store only the one it was opened for, so there they filter nothing."""
    if kind == "local":
        return entity, project
    return None, None


def open_cli_store(
    kind: str, store_dir: Path | None, entity: str | None, project: str | None
) -> tuple[Any, str]:
    """Open the store the options name; returns (store, label for reports)."""

    kind = str(getattr(kind, "value", kind))
    if kind not in STORE_BACKENDS:
        raise typer.BadParameter(
            f"{kind!r} is not {' or '.join(STORE_BACKENDS)}", param_hint="--store"
        )
    if kind == "wandb":
        if not entity or not project:
            raise ConfigurationError(
                "--store wandb needs --entity and --project",
                hint="pass --entity E --project P (and set WANDB_API_KEY)",
            )
        store = open_store(
            "wandb",
            entity=entity,
            project=project,
            local_dir=store_dir,
            api_key=os.environ.get("WANDB_API_KEY"),
        )
        return store, f"wandb {entity}/{project}"

    root = store_dir if store_dir is not None else default_local_dir()
    if not root.is_dir():
        raise ConfigurationError(
            f"no local store at {root.absolute()} (nothing was created)",
            hint="point --store-dir (or $DAGSTER_WANDB_SECURE_STORE_DIR) at the folder the IO "
            "manager writes to: $DAGSTER_HOME/wandb-secure/store, else ./wandb-secure/store "
            "where Dagster ran; the IO manager's first write creates it",
        )
    store = open_store("local", local_dir=root)
    return store, f"local {store.root}"  # type: ignore[attr-defined]
