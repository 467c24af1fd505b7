"""The artifact engine: turns a Dagster output into a signed artifact version and back.

Dagster- and W&B-free apart from the lazily imported W&B object handling; the IO manager and the
asset checks are thin shells over it."""
