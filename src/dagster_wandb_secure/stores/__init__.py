"""Artifact stores: the embedded local store and the W&B store. They know the core, not Dagster."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError

if TYPE_CHECKING:
    from .base import ArtifactStore

STORE_KINDS = ("auto", "local", "wandb")

__all__ = ["STORE_KINDS", "open_store", "select_store_kind"]


def select_store_kind(kind: str, *, api_key: str | None) -> str:
    """``"local"`` or ``"wandb"``: ``"auto"`` means W&B when an API key is configured (a
    non-empty ``api_key``), else the embedded local store."""
    if kind not in STORE_KINDS:
        raise ConfigurationError(
            f"unknown store {kind!r}: use one of {', '.join(STORE_KINDS)}",
            hint="set store to 'auto', 'local' or 'wandb' in the IO manager configuration",
        )
    if kind == "auto":
        return "wandb" if isinstance(api_key, str) and api_key.strip() else "local"
    return kind


def open_store(
    kind: str = "auto",
    *,
    local_dir: str | Path | None = None,
    entity: str | None = None,
    project: str | None = None,
    api_key: str | None = None,
    host: str | None = None,
    base_dir: str | Path | None = None,
    mode: str | None = None,
    run_id: str | None = None,
    run_name: str | None = None,
    run_tags: Sequence[str] = (),
    cache_duration: timedelta | None = None,
    sdk: Any = None,
) -> ArtifactStore:
    """Construct the artifact store for ``kind`` (``"auto"``, ``"local"`` or ``"wandb"``).

    - ``"local"``: ``LocalArtifactStore(local_dir)``; ``local_dir`` defaults to
      ``<base_dir>/wandb-secure/store``.
    - ``"wandb"``: ``WandbArtifactStore`` (online, or offline with ``WANDB_MODE=offline`` /
      ``mode="offline"``, then mirrored into ``local_dir``). Needs ``entity`` and ``project``.
      Nothing is started: the W&B run starts on first use.
    - ``"auto"``: ``"wandb"`` if ``api_key`` is non-empty, else ``"local"``.

    ``sdk`` is the W&B store's test seam (``None``: the real ``wandb`` module).
    Configuration errors raise ``ConfigurationError`` naming the key.
    """
    resolved = select_store_kind(kind, api_key=api_key)
    base = _default_base_dir(base_dir)
    if resolved == "local":
        from .local import LocalArtifactStore

        root = Path(local_dir) if local_dir is not None else default_local_dir(base)
        return LocalArtifactStore(root.expanduser())

    from .wandb_store import WandbArtifactStore  # imports wandb: only when W&B is wanted

    return WandbArtifactStore(
        entity=entity,
        project=project,
        base_dir=base,
        local_dir=local_dir,
        api_key=api_key,
        host=host,
        mode=mode,
        run_id=run_id,
        run_name=run_name,
        run_tags=run_tags,
        cache_duration=cache_duration,
        sdk=sdk,
    )


def default_local_dir(base_dir: str | Path | None = None) -> Path:
    """Where the embedded local store lives unless configured: ``<base_dir>/wandb-secure/store``.

    The one default shared by the IO manager and the CLI, so ``audit`` finds what the IO manager
    wrote."""
    return _default_base_dir(base_dir) / "wandb-secure" / "store"


def _default_base_dir(base_dir: str | Path | None) -> Path:
    if base_dir is None:
        base_dir = os.environ.get("DAGSTER_HOME") or Path.cwd()
    return Path(base_dir).expanduser().absolute()
