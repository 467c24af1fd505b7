"""A reader's registry marks are signed positions (registry version, signed time, statement
digest), never a bare version number: two writers that never shared a ledger can both sign a
``v0`` link statement, and the registry writer who swaps the older one back in under the same
number must not make a reader accept the older model silently."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize
from kit.adversarial import store_iom
from kit.dagster_runs import failure_text

LINK = "registry/team/model-registry/clf/v0.link"


def _write(keys: Path, root: Path, store: str, depth: int) -> None:
    conf = {"type": "model",
            "link": {"target_path": "model-registry/clf", "aliases": ["staging"]}}

    @asset(name="clf", metadata={"wandb_artifact_configuration": conf}, io_manager_key="m")
    def clf() -> dict[str, int]:
        return {"depth": depth}

    assert materialize([clf], resources={"m": store_iom(root, store, keys=keys)}).success


def _read(keys: Path, root: Path, store: str) -> Any:
    seen: dict[str, Any] = {}
    key = AssetKey(["model-registry", "clf"])

    @asset(ins={"m": AssetIn(key=key, input_manager_key="m",
                             metadata={"wandb_artifact_configuration": {"alias": "staging"}})})
    def use(m: Any) -> None:
        seen["m"] = m

    result = materialize([SourceAsset(key=key, io_manager_key="m"), use], selection=[use],
                         resources={"m": store_iom(root, store, keys=keys)},
                         raise_on_error=False)
    return result.success, seen.get("m"), "" if result.success else failure_text(result)


@pytest.mark.parametrize("reader_ledger", ["own", "writers"])
@pytest.mark.parametrize("store", ["local", "wandb"])
def test_a_link_swapped_in_under_the_same_number_is_refused(
    root: Path, store: str, reader_ledger: str
) -> None:
    keys = root / "keys"
    second = root / "second-writer-keys"  # another machine: same key, a ledger of its own
    shutil.copytree(keys, second)
    _write(keys, root, store, 1)  # registry v0 -> clf:v0 (depth 1)
    link = root / "store" / LINK
    older = link.read_bytes()
    link.unlink()  # the registry writer removes it; the second machine then links v0 again
    _write(second, root, store, 2)  # registry v0 -> clf:v1 (depth 2)
    assert link.read_bytes() != older
    if reader_ledger == "own":
        reader = root / "reader-keys"
        shutil.copytree(keys, reader, ignore=shutil.ignore_patterns("ledger*"))
    else:
        reader = second
    assert _read(reader, root, store)[:2] == (True, {"depth": 2})
    link.write_bytes(older)  # the older, validly signed v0 statement swapped back in
    ok, value, text = _read(reader, root, store)
    assert value is None and not ok, "the reader accepted the swapped-in older model"
    assert "RollbackError" in text and "forked" in text and "model-registry/clf" in text, text
