"""Upstream's ``dagster_wandb.utils`` package path, kept so existing imports resolve."""
