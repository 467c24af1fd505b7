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
    get: str
    get_path: str
    version: str
    alias: str


__all__ = ["PartitionConfiguration", "SerializationModule", "WandbArtifactConfiguration"]
