"""Upstream's ``dagster_wandb.launch.configs`` path: the launch ops' config schemas."""

from __future__ import annotations

from .ops import launch_agent_config, launch_config

__all__ = ["launch_agent_config", "launch_config"]
