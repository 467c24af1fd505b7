"""Artifact stores: the embedded local store and the W&B store. They know the core, not Dagster.

``STORE_FACTORIES`` is the one registry of store kinds; ``STORE_KINDS`` (what a configuration may
name) and ``STORE_BACKENDS`` (the kinds that are real stores) are derived from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigurationError
from .local import LocalArtifactStore
from .wandb_store import WandbArtifactStore

if TYPE_CHECKING:
    from .base import ArtifactStore


@dataclass(frozen=True)
class StoreOptions:
    """Everything ``open_store`` was given, for the factory of the chosen kind."""

    base_dir: Path  # resolved: the configured folder, else $DAGSTER_HOME, else the cwd
    local_dir: str | Path | None = None
    entity: str | None = None
    project: str | None = None
    api_key: str | None = None
    host: str | None = None
    mode: str | None = None
    run_id: str | None = None
    run_name: str | None = None
    run_tags: Sequence[str] = ()
    cache_duration: timedelta | None = None
    sdk: Any = None


def _open_local(options: StoreOptions) -> ArtifactStore:

    local_dir = options.local_dir
    root = Path(local_dir) if local_dir is not None else default_local_dir(options.base_dir)
    return LocalArtifactStore(root.expanduser())


def _open_wandb(options: StoreOptions) -> ArtifactStore:

    return WandbArtifactStore(
        entity=options.entity,
        project=options.project,
        base_dir=options.base_dir,
        local_dir=options.local_dir,
        api_key=options.api_key,
        host=options.host,
        mode=options.mode,
        run_id=options.run_id,
        run_name=options.run_name,
        run_tags=options.run_tags,
        cache_duration=options.cache_duration,
        sdk=options.sdk,
    )


STORE_FACTORIES: Mapping[str, Callable[[StoreOptions], ArtifactStore]] = MappingProxyType(
    {"local": _open_local, "wandb": _open_wandb}
)
AUTO = "auto"
STORE_BACKENDS: tuple[str, ...] = tuple(STORE_FACTORIES)
STORE_KINDS: tuple[str, ...] = (AUTO, *STORE_BACKENDS)

__all__ = [
    "STORE_BACKENDS",
    "STORE_FACTORIES",
    "STORE_KINDS",
    "StoreOptions",
    "default_local_dir",
    "open_store",
    "select_store_kind",
]


def _quoted_choices() -> str:
    quoted = [repr(kind) for kind in STORE_KINDS]
    return ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def select_store_kind(kind: str, *, api_key: str | None) -> str:
    """``"local"`` or ``"wandb"``: ``"auto"`` means W&B when an API key is configured (a
    non-empty ``api_key``), else the embedded local store."""
    if kind not in STORE_KINDS:
        raise ConfigurationError(
            f"unknown store {kind!r}: use one of {', '.join(STORE_KINDS)}",
            hint=f"set store to {_quoted_choices()} in the IO manager configuration",
        )
    if kind == AUTO:
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
    options = StoreOptions(
        base_dir=_default_base_dir(base_dir),
        local_dir=local_dir,
        entity=entity,
        project=project,
        api_key=api_key,
        host=host,
        mode=mode,
        run_id=run_id,
        run_name=run_name,
        run_tags=run_tags,
        cache_duration=cache_duration,
        sdk=sdk,
    )
    return STORE_FACTORIES[resolved](options)


def default_local_dir(base_dir: str | Path | None = None) -> Path:
    """Where the embedded local store lives unless configured: ``<base_dir>/wandb-secure/store``.

    The one default shared by the IO manager and the CLI, so ``audit`` finds what the IO manager
    wrote."""
    return _default_base_dir(base_dir) / "wandb-secure" / "store"


def _default_base_dir(base_dir: str | Path | None) -> Path:
    if base_dir is None:
        base_dir = os.environ.get("DAGSTER_HOME") or Path.cwd()
    return Path(base_dir).expanduser().absolute()
