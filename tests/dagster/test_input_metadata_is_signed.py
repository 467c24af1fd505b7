"""What the Dagster UI shows for a loaded input comes from the verified manifest and says so:
the LOADED_INPUT event's metadata and the step's log line carry the signed sequence and the
signed manifest envelope's digest (the identity the reader's history marks keep)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from dagster import DagsterInstance, asset, materialize
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from kit.dagster_runs import read_via, version_files


@pytest.mark.parametrize("store", ["local", "wandb"])
def test_loaded_input_shows_the_signed_sequence_and_manifest_digest(
    key_store: Any, make_io_manager: Any, store_dir: Path, store: str
) -> None:
    @asset(name="model", io_manager_key="m")
    def model() -> dict[str, int]:
        return {"depth": 3}

    for _ in range(2):
        assert materialize([model], resources={"m": make_io_manager(store=store)}).success
    envelope = version_files(store_dir, "model", "v1")[MANIFEST_NAME].read_bytes()
    digest = hashlib.sha256(envelope).hexdigest()
    instance = DagsterInstance.ephemeral()
    result = read_via(make_io_manager(store=store), model, instance=instance)
    assert result.success and result.seen["value"] == {"depth": 3}
    (loaded,) = [e for e in result.all_events if e.event_type_value == "LOADED_INPUT"]
    meta = {k: getattr(v, "value", getattr(v, "text", v))
            for k, v in loaded.event_specific_data.metadata.items()}
    assert meta["signed_sequence"] == 2
    assert meta["signed_manifest_digest"] == digest
    line = f"verified model:v1 (signed seq 2, signed manifest {digest[:12]}) signed by "
    assert meta["signature_status"].startswith(line)
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(str(m).startswith(line) for m in logs), logs
