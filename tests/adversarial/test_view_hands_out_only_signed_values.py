"""Every attribute of the verified ``wandb.Artifact`` a reader hands to user code is signed or
derived from signed data: ``created_at`` is the manifest's signed time, not the index's
``versions.created_at`` (which anyone who can write the store folder can edit)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize
from kit.adversarial import store_iom  # the ``root`` fixture: tests/adversarial/conftest.py


@pytest.mark.parametrize("store", ["local", "wandb"])
def test_created_at_is_the_signed_time(root: Path, store: str) -> None:
    import wandb

    @asset(name="model", io_manager_key="m")
    def model() -> Any:
        art = wandb.Artifact("model", "model")
        (root / "w.bin").write_bytes(b"w")
        art.add_file(str(root / "w.bin"))
        return art

    before = datetime.now().astimezone()
    assert materialize([model], resources={"m": store_iom(root, store)}).success
    index = next((root / "store").rglob("index.sqlite3"))
    conn = sqlite3.connect(index)
    conn.execute("UPDATE versions SET created_at = '1999-01-01T00:00:00+00:00'")
    conn.commit()
    conn.close()
    seen: dict[str, Any] = {}

    @asset(ins={"up": AssetIn(key=AssetKey("model"), input_manager_key="m")})
    def reader(up: Any) -> None:
        seen["created_at"] = up.created_at

    assert materialize([SourceAsset(key=AssetKey("model"), io_manager_key="m"), reader],
                       selection=[reader], resources={"m": store_iom(root, store)}).success
    created = datetime.fromisoformat(seen["created_at"].replace("Z", "+00:00"))
    assert created >= before.replace(microsecond=0), seen
