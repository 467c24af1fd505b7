"""W&B Launch from Dagster: the ops live in ``launch.ops`` (upstream's module path)."""

from .ops import run_launch_agent, run_launch_job

__all__ = ["run_launch_agent", "run_launch_job"]
