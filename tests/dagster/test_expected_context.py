"""The expected context of a payload read names every key the library signs, ``role`` included:
a manifest envelope (role "manifest") is never accepted as a payload, even when a (buggy or
misused) signed manifest lists it as one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import asset, materialize
from dagster_wandb_secure.core.manifest import MANIFEST_NAME, write_manifest
from kit.dagster_runs import (
    ENTITY,
    PROJECT,
    attacker_publish,
    failure_text,
    read_via,
    version_files,
)


def test_manifest_envelope_listed_as_payload_is_refused(
    key_store: Any, make_io_manager: Any, store_dir: Path, tmp_path: Path
) -> None:
    @asset(name="victim", io_manager_key="m")
    def victim() -> dict[str, int]:
        return {"x": 1}

    assert materialize([victim], resources={"m": make_io_manager()}).success
    inner = version_files(store_dir, "victim")[MANIFEST_NAME]
    # a holder of the signing key (or a bug in a tool) lists a manifest as the payload
    context = {
        "artifact": "victim",
        "type": "artifact",
        "partition": None,
        "asset_key": "victim",
        "project": f"{ENTITY}/{PROJECT}",
    }
    data, _ = write_manifest(
        {"output.json": inner}, key_store=key_store, context=context, record=False
    )
    outer = tmp_path / MANIFEST_NAME
    outer.write_bytes(data)
    attacker_publish(store_dir, "victim", {"output.json": inner, MANIFEST_NAME: outer})
    result = read_via(make_io_manager(), victim, version="v1")
    assert not result.success
    text = failure_text(result)
    assert "ContextMismatchError" in text and "role" in text
