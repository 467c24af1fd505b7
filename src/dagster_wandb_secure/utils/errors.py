"""Upstream's ``dagster_wandb.utils.errors`` path: the IO manager error and the key lists.

The checks themselves live in ``artifacts/config.py``; these names only forward to it, so code
that imported them from upstream keeps working and sees this project's (stricter) rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..artifacts.config import (
    PARTITION_READ_KEYS,
    READ_KEYS,
    WRITE_KEYS,
    WandbArtifactsIOManagerError,
)

SUPPORTED_READ_CONFIG_KEYS = sorted(READ_KEYS)
SUPPORTED_WRITE_CONFIG_KEYS = sorted(WRITE_KEYS)
SUPPORTED_PARTITION_CONFIG_KEYS = sorted(PARTITION_READ_KEYS)


def _refuse_unknown(allowed: list[str], config: Mapping[str, Any] | None, what: str) -> None:
    if config is None:
        return
    extra = sorted(str(k) for k in config if k not in allowed)
    if extra:
        raise WandbArtifactsIOManagerError(
            f"unknown key(s) {extra} in wandb_artifact_configuration when {what}; "
            f"allowed keys are {allowed}"
        )


def raise_on_empty_configuration(partition_key: str, dictionary: Mapping[str, Any] | None) -> None:
    """An empty per-partition entry is a mistake (upstream refuses it too)."""
    if dictionary is not None and len(dictionary) == 0:
        raise WandbArtifactsIOManagerError(
            f"the configuration of partition {partition_key!r} is empty"
        )


def raise_on_unknown_write_configuration_keys(dictionary: Mapping[str, Any] | None) -> None:
    _refuse_unknown(SUPPORTED_WRITE_CONFIG_KEYS, dictionary, "writing an artifact")


def raise_on_unknown_read_configuration_keys(dictionary: Mapping[str, Any] | None) -> None:
    _refuse_unknown(SUPPORTED_READ_CONFIG_KEYS, dictionary, "reading an artifact")


def raise_on_unknown_partition_keys(partition_key: str, dictionary: Mapping[str, Any] | None) -> None:
    _refuse_unknown(
        SUPPORTED_PARTITION_CONFIG_KEYS, dictionary, f"reading partition {partition_key!r}"
    )


__all__ = [
    "SUPPORTED_PARTITION_CONFIG_KEYS",
    "SUPPORTED_READ_CONFIG_KEYS",
    "SUPPORTED_WRITE_CONFIG_KEYS",
    "WandbArtifactsIOManagerError",
    "raise_on_empty_configuration",
    "raise_on_unknown_partition_keys",
    "raise_on_unknown_read_configuration_keys",
    "raise_on_unknown_write_configuration_keys",
]
