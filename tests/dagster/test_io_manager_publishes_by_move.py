"""The IO manager's write and read paths with the local store (issue 16): an output is sealed
once, straight into the store's staging folder, and published by rename (the very file the seal
wrote becomes the version's file; the store neither copies nor re-reads it); a payload is read
into private memory and deserialized from it, with no private file copy (those are for
``get_path`` files only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dagster import asset, materialize
from dagster_wandb_secure.artifacts.private_copies import CACHE_DIR_NAME
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from dagster_wandb_secure.stores import local_staging
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.dagster_runs import read_via


def _no_read(*_a: object, **_k: object) -> None:
    raise AssertionError("the store copied or re-hashed a staged file")


def test_an_output_is_sealed_into_the_store_staging_folder_and_moved(
    key_store: Any, make_io_manager: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, int] = {}
    orig = LocalArtifactStore.publish

    def publish(self: LocalArtifactStore, **kw: Any) -> Any:
        assert kw.get("staged") is not None and kw["staged"].by_move
        for rel, path in kw["files"].items():
            assert Path(path).parent == kw["staged"].path or kw["staged"].path in Path(path).parents
            seen[rel] = os.stat(path).st_ino
        return orig(self, **kw)

    monkeypatch.setattr(LocalArtifactStore, "publish", publish)
    monkeypatch.setattr(LocalArtifactStore, "_copy_one", staticmethod(_no_read))
    monkeypatch.setattr(local_staging, "_hash_fd", _no_read)

    @asset(io_manager_key="m")
    def model() -> dict[str, Any]:
        return {"weights": list(range(1000))}

    assert materialize([model], resources={"m": make_io_manager()}).success
    store = LocalArtifactStore(store_dir)
    av = store.resolve("team", "proj", "model")
    assert set(seen) == set(av.files) == {"output.pickle", MANIFEST_NAME}
    for rel, inode in seen.items():
        assert os.stat(store.file_path(av, rel)).st_ino == inode
    # the index records what the publisher computed, under its kind
    assert av.files["output.pickle"].digest_kind.startswith("envelope_payload_")
    assert list((store_dir / "staging").iterdir()) == []
    monkeypatch.undo()
    result = read_via(make_io_manager(), model)
    assert result.success and result.seen["value"] == {"weights": list(range(1000))}


def test_a_payload_read_makes_no_private_file_copy_but_get_path_does(
    key_store: Any, make_io_manager: Any, workdir: Path
) -> None:
    @asset(io_manager_key="m")
    def table() -> dict[str, int]:
        return {"rows": 3}

    assert materialize([table], resources={"m": make_io_manager()}).success
    result = read_via(make_io_manager(), table)
    assert result.success and result.seen["value"] == {"rows": 3}
    cache = workdir / CACHE_DIR_NAME
    copies = [p.name for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert copies == []  # verified into memory; nothing written
    result = read_via(make_io_manager(), table, get_path="output.pickle")
    assert result.success
    path = Path(result.seen["value"])
    assert path.is_file() and cache in path.parents  # the get_path file is a private copy
    assert path.stat().st_mode & 0o777 == 0o400
