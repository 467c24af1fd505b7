"""Typing helpers with the upstream names, for users who annotate their configuration.

``WandbArtifactConfiguration`` is the dictionary placed under the ``wandb_artifact_configuration``
metadata key of an asset, an ``AssetIn``/``AssetOut``, or an op's ``In``/``Out``. The keys are the
upstream ones; ``config.py`` validates them at run time and refuses unknown keys by name.
"""

from __future__ import annotations

from typing import Any, TypedDict


class SerializationModule(TypedDict, total=False):
    """Which serializer writes a Python object, and its keyword parameters."""

    name: str
    parameters: dict[str, Any]


class PartitionConfiguration(TypedDict, total=False):
    """Per-partition read settings (under ``partitions[key]`` or the ``"*"`` wildcard)."""

    get: str
    get_path: str
    version: str
    alias: str


class LinkConfiguration(TypedDict, total=False):
    """Link the written version into a registry collection (``model-registry/NAME``)."""

    target_path: str
    aliases: list[str]


class Config(TypedDict, total=False):
    """Upstream's ``dagster_wandb.io_manager.Config`` (the legacy IO manager's resolved settings)."""

    dagster_run_id: str
    wandb_host: str
    wandb_entity: str
    wandb_project: str
    wandb_run_name: str | None
    wandb_run_id: str | None
    wandb_run_tags: list[str] | None
    base_dir: str
    cache_duration_in_minutes: int | None


class WandbArtifactConfiguration(TypedDict, total=False):
    """Read and write settings for one W&B artifact (upstream key names)."""

    name: str
    type: str
    description: str
    aliases: list[str]
    add_dirs: list[dict[str, Any]]
    add_files: list[dict[str, Any]]
    add_references: list[dict[str, Any]]
    serialization_module: SerializationModule
    partitions: dict[str, PartitionConfiguration]
    link: LinkConfiguration | str
    get: str
    get_path: str
    version: str
    alias: str


__all__ = [
    "Config",
    "LinkConfiguration",
    "PartitionConfiguration",
    "SerializationModule",
    "WandbArtifactConfiguration",
]
