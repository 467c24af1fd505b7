"""A validly signed version copied into another project's artifact of the same name is refused:
``entity/project`` is part of the signed context (a replay, SECURITY.md attack catalogue item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster import asset, materialize
from dagster_wandb_secure.core.errors import ContextMismatchError
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager
from dagster_wandb_secure.stores.local import LocalArtifactStore


@pytest.mark.parametrize("alg", ["ed25519", "hmac-sha256"])
def test_version_copied_into_another_project_is_refused(tmp_path: Path, alg: str) -> None:
    keys = tmp_path / "keys"
    KeyStore.open(keys).generate(alg)
    store_dir = tmp_path / "store"

    def iom(project: str) -> WandbArtifactsIOManager:
        return WandbArtifactsIOManager(
            key_store=str(keys),
            store="local",
            local_store_dir=str(store_dir),
            base_dir=str(tmp_path),
            entity="team",
            project=project,
        )

    @asset(io_manager_key="m")
    def model() -> dict[str, str]:
        return {"weights": "from project a"}

    assert materialize([model], resources={"m": iom("a")}).success

    # a registry writer copies project a's signed files into project b's `model`
    store = LocalArtifactStore(store_dir)
    av = store.resolve("team", "a", "model", alias="latest")
    files = {entry.path: store.file_path(av, entry.path) for entry in store.list_files(av)}
    store.publish(entity="team", project="b", name="model", type=av.type, files=files)

    @asset(io_manager_key="m")
    def consumer(model: dict[str, str]) -> None:
        raise AssertionError(f"loaded {model!r}")

    with pytest.raises(ContextMismatchError) as info:
        materialize([model.to_source_asset(), consumer], resources={"m": iom("b")})
    text = str(info.value)
    assert "model" in text and "project" in text and "team/a" in text
