"""Upstream's ``dagster_wandb.version`` path: the package version."""

from __future__ import annotations

from . import __version__

__all__ = ["__version__"]
