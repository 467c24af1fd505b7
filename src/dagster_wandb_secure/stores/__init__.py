"""Artifact stores: the embedded local store and the W&B store. They know the core, not Dagster."""
