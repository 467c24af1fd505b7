"""One "machine" of the multi-machine tests, run as its own process:
``python -m kit.machine write|read '<json settings>'``; prints one JSON line.

``write`` materializes the asset ``model`` once per value in ``values``; ``read`` materializes a
reader of ``model`` (a SourceAsset, as on a machine that does not produce it) and reports the
value it received or the failed step's error chain. Each process has only what its settings
name: its own key store folder, the shared store (``kind``: ``local``, the default, or ``wandb``:
the W&B store offline, ``store`` then being its local mirror) and the (shared) ledger URL. With
``barrier`` (a folder) and ``parties``, a writer waits until that many writers are ready, so
their publishes overlap."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from dagster import asset, materialize
from dagster_wandb_secure import WandbArtifactsIOManager
from kit.dagster_runs import failure_text, read_via


def io_manager(cfg: dict[str, Any]) -> WandbArtifactsIOManager:
    return WandbArtifactsIOManager(
        key_store=cfg["keys"],
        store=cfg.get("kind", "local"),
        local_store_dir=cfg["store"],
        base_dir=cfg["base"],
        entity="team",
        project="proj",
        cache_duration_in_minutes=0,
        ledger=cfg.get("ledger"),
        require_ledger_record=cfg.get("require_ledger_record"),
    )


def _model(value: Any) -> Any:
    @asset(name="model", io_manager_key="m")
    def model() -> dict[str, Any]:
        return {"value": value}

    return model


def wait_for_the_others(folder: str, parties: int) -> None:
    (Path(folder) / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while len(list(Path(folder).glob("ready-*"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("the other writers never became ready")
        time.sleep(0.01)


def main(role: str, cfg: dict[str, Any]) -> dict[str, Any]:
    iom = io_manager(cfg)
    if role == "write":
        if cfg.get("barrier"):
            wait_for_the_others(cfg["barrier"], int(cfg["parties"]))
        for value in cfg["values"]:
            result = materialize([_model(value)], resources={"m": iom}, raise_on_error=False)
            if not result.success:
                return {"ok": False, "error": failure_text(result)}
        return {"ok": True}
    result = read_via(iom, _model(None))
    if result.success:
        return {"ok": True, "value": result.seen["value"]}
    return {"ok": False, "error": failure_text(result)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
