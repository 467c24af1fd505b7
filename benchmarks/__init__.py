"""Benchmarks for dagster-wandb-secure (issue 6).

Run ``python -m benchmarks`` (``make bench``) for the full run, ``--quick`` for a few-second smoke
run with tiny sizes, ``--json`` for one machine-readable JSON object. Every figure is the median of
several runs with the baseline and the candidate interleaved in the same process; the memory
metric runs each side in its own subprocess. The latest full run is in ``benchmarks/RESULTS.md``.

Modules:
- ``common``: configuration, targets, timing helpers, machine description, key stores.
- ``envelope_metrics``: seal/unseal against ``pickle`` (large ratios, small overhead, hashing
  throughput) and the payload-size scaling table.
- ``memory``: peak RSS of a signed versus a plain write+read, each in its own subprocess.
- ``io_manager_metrics``: this IO manager on the local store against Dagster's
  ``FilesystemIOManager`` through ``dagster.materialize``.
- ``audit_metrics``: fast audit of a local store of up to 10,000 versions and its scaling table.
"""
