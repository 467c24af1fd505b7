"""A job of 9 assets (in 6 step processes) under Dagster's multiprocess executor: every step process signs and
verifies against one key store and one local store; no error and no lost version."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dagster import build_reconstructable_job, execute_job, instance_for_test
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.stores.local import LocalArtifactStore

HERE = Path(__file__).parent
# forkserver with preloaded modules: step processes start in well under a second
MP_CONFIG = {
    "execution": {
        "config": {
            "multiprocess": {
                "max_concurrent": 4,
                "start_method": {"forkserver": {"preload_modules": ["dagster", "mp_defs"]}},
            }
        }
    }
}


def test_multiprocess_job_signs_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mp_defs

    keys = tmp_path / "keys"
    ks = KeyStore.open(keys)
    ks.generate("ed25519")
    store_dir = tmp_path / "store"
    monkeypatch.setenv("DWS_MP_KEYS", str(keys))
    monkeypatch.setenv("DWS_MP_STORE", str(store_dir))
    monkeypatch.setenv("DWS_MP_BASE", str(tmp_path / "base"))

    runs = 1
    (tmp_path / "dagster_home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        for _ in range(runs):
            with execute_job(
                build_reconstructable_job(
                    "mp_defs", "mp_job", reconstructor_working_directory=str(HERE)
                ),
                instance=instance,
                run_config=MP_CONFIG,
            ) as result:
                assert result.success, [
                    e.event_specific_data.error.message for e in result.get_step_failure_events()
                ]
                pids = {
                    e.pid for e in result.all_events if e.event_type_value == "STEP_START"
                }
                assert len(pids) > 1  # really several processes

    store = LocalArtifactStore(store_dir)
    names = [f"source_{i}" for i in range(mp_defs.N_SOURCES)]
    names += [f"double_{i}" for i in range(mp_defs.N_SOURCES)] + ["total"]
    assert len(names) >= 8
    for name in names:
        versions = sorted(av.version for av in store.list_versions(name=name))
        assert versions == list(range(runs)), name
    # every signature is in the ledger, attached to the version it became
    rows = KeyStore.open(keys).ledger.rows()
    assert len(rows) == 2 * runs * len(names)  # payload envelope + manifest per version
    assert all(r.artifact_version is not None for r in rows)
    # the final value, read back and verified in this process
    from dagster import AssetIn, asset, materialize

    got: dict[str, Any] = {}

    @asset(ins={"total": AssetIn(input_manager_key="m")})
    def check_total(total: int) -> None:
        got["total"] = total

    resources = {"m": mp_defs.defs.resources["m"]}
    assert materialize([mp_defs.total.to_source_asset(), check_total], resources=resources,
                       selection=[check_total]).success
    assert got["total"] == sum(
        2 * v for i in range(mp_defs.N_SOURCES) for v in range(i * 10, i * 10 + 10)
    )
    # the private copies of the exited step processes were cleaned up (duration 0)
    cache = tmp_path / "base" / "dagster-wandb-secure-cache"
    mine = f"-{os.getpid()}-"  # this process's folder is still in use
    leftovers: list[Any] = [
        p for p in cache.iterdir() if p.is_dir() and mine not in p.name
    ] if cache.exists() else []
    assert leftovers == []
