"""Refusals raised lazily (a whole-artifact view materializes files when user code asks) must
name the artifact, the version, the key id and the reason, like the eager ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import AssetIn, asset, materialize
from dagster_wandb_secure.core.errors import TamperedPayloadError
from kit.dagster_runs import ENTITY, PROJECT, store_of, writable


def test_lazy_view_refusal_names_version_and_key(
    key_store: Any, make_io_manager: Any, store_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "f.txt"
    data.write_text("hello")

    @asset(
        io_manager_key="m",
        metadata={
            "wandb_artifact_configuration": {
                "add_files": [{"local_path": str(data), "name": "f.txt"}]
            }
        },
    )
    def files() -> Any:
        import wandb

        art = wandb.Artifact("files", "dataset")
        art.add_file(str(data), "g.txt")
        return art

    assert materialize([files], resources={"m": make_io_manager()}).success
    seen: dict[str, Any] = {}

    @asset(ins={"view": AssetIn(key=files.key, input_manager_key="m")})
    def reader(view: Any) -> None:
        av = store_of(store_dir).resolve(ENTITY, PROJECT, "files", alias="latest")
        target = writable(av.root / "f.txt")
        target.write_text("HELLO")  # same size, other bytes: after the manifest check
        try:
            view.get_path("f.txt").download()
        except TamperedPayloadError as exc:
            seen["error"] = exc

    result = materialize(
        [files.to_source_asset(), reader],
        resources={"m": make_io_manager()},
        selection=[reader],
    )
    assert result.success
    err = seen["error"]
    kid = key_store.primary().kid
    assert err.version == "v0" and err.key_id == kid
    text = str(err)
    assert "files:v0" in text and kid in text and "What to do" in text
