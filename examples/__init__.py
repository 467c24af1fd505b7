"""Runnable examples for dagster-wandb-secure (each module is a Dagster ``Definitions``)."""
