"""The large IO-manager benchmark holds the page cache of one payload at most, like the baseline
that overwrites one file: before each of our runs it deletes the payload files the store holds
from earlier runs (benchmarks/io_manager_metrics.py, ``drop_stored_payloads``), and the next run
still publishes and loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dagster import DagsterInstance
from dagster_wandb_secure.stores.local import LocalArtifactStore

REPO = Path(__file__).resolve().parent.parent


def test_every_stored_payload_is_dropped_and_the_next_run_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks import io_manager_metrics as m
    from benchmarks.common import make_key_store

    make_key_store(tmp_path / "keys", "ed25519")
    holder = {"array": np.arange(1000)}
    assets = m._large_assets(holder)
    ours = m._ours(tmp_path / "large", tmp_path / "keys")
    instance = DagsterInstance.ephemeral()
    store_root = tmp_path / "large" / "store"
    for _ in range(3):
        m._timed_materialize(assets, ours, instance)
    assert m.drop_stored_payloads(store_root) > 0
    store = LocalArtifactStore(store_root)
    try:
        versions = [v for v in store.list_versions() if v.name == "big_array"]
        kept = {
            v.version: sorted(e.path for e in store.list_files(v) if e.path.startswith("output."))
            for v in versions
        }
    finally:
        store.close()
    assert kept == {0: [], 1: [], 2: []}
    assert m.drop_stored_payloads(store_root) == 0  # nothing left to drop
    m._timed_materialize(assets, ours, instance)  # the next run publishes and loads its version
    store = LocalArtifactStore(store_root)
    try:
        newest = max(v.version for v in store.list_versions() if v.name == "big_array")
    finally:
        store.close()
    assert newest == 3
