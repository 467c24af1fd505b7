"""W&B objects are rebuilt only from types whose loaders never unpickle, at EVERY depth: a cell of
a Table is rebuilt by W&B's own ``init_from_json``, which would build saved-model objects (whose
loaders unpickle, and may add artifact folders to ``sys.path``) if the JSON names them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import AssetIn, asset, materialize
from kit import payloads
from kit.dagster_runs import failure_text


def test_saved_model_nested_in_a_table_is_refused(
    key_store: Any, make_io_manager: Any, tmp_path: Path, marker: Path
) -> None:
    import wandb

    evil = tmp_path / "model.pkl"
    evil.write_bytes(payloads.reduce_os_system(marker))

    @asset(io_manager_key="m")
    def tables() -> Any:
        art = wandb.Artifact("tables", "dataset")
        cell = {"_type": "sklearn-model-file", "path": "model.pkl"}
        art.add(wandb.Table(columns=["m"], data=[[cell]]), "t")
        art.add_file(str(evil), "model.pkl")
        return art

    seen: dict[str, Any] = {}

    @asset(
        ins={
            "t": AssetIn(
                key=tables.key,
                input_manager_key="m",
                metadata={"wandb_artifact_configuration": {"get": "t"}},
            )
        }
    )
    def reader(t: Any) -> None:
        seen["t"] = t
        for row in t.data:  # what a user would do with a model cell
            for cell in row:
                getter = getattr(cell, "model_obj", None)
                if callable(getter):
                    getter()

    iom = make_io_manager()
    assert materialize([tables], resources={"m": iom}).success
    result = materialize(
        [tables.to_source_asset(), reader],
        resources={"m": make_io_manager()},
        selection=[reader],
        raise_on_error=False,
    )
    assert not marker.exists()
    assert not result.success
    text = failure_text(result)
    assert "SerializationError" in text and "sklearn-model-file" in text and "tables:v0" in text
    assert key_store.primary().kid in text  # the manifest's signer, though the error had none


def test_user_artifact_symlink_entry_is_refused_like_add_files(
    key_store: Any, make_io_manager: Any, tmp_path: Path
) -> None:
    """add_files refuses a symlink; a user-built wandb.Artifact whose entry is a symlink
    (``policy="immutable"`` keeps the user's path) must be refused the same way, without
    touching the file the link points to."""
    import os
    import stat

    import wandb

    secret = tmp_path / "secret.txt"
    secret.write_text("s")
    os.chmod(secret, 0o644)
    link = tmp_path / "link.txt"
    link.symlink_to(secret)

    @asset(io_manager_key="m")
    def linked() -> Any:
        art = wandb.Artifact("linked", "dataset")
        art.add_file(str(link), "f.txt", policy="immutable")
        return art

    result = materialize([linked], resources={"m": make_io_manager()}, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert "UnsafePathError" in text and "symlink" in text and "f.txt" in text
    assert stat.S_IMODE(secret.stat().st_mode) == 0o644


def test_saved_model_in_an_incremental_table_file_is_refused(tmp_path: Path, marker: Path) -> None:
    """An incremental Table reads its rows from the artifact's OTHER .table.json files itself;
    those are checked too before W&B rebuilds their cells."""
    import json

    import pytest
    import wandb

    from dagster_wandb_secure.artifacts.wandb_objects import VerifiedSource, load_wandb_object
    from dagster_wandb_secure.core.errors import SerializationError

    scratch = wandb.Artifact("s", "x")
    scratch.add(wandb.Table(columns=["m"], data=[[1]]), "t")
    (entry,) = scratch.manifest.entries.values()
    table = json.loads(Path(entry.local_path).read_text())
    table.update(log_mode="INCREMENTAL", increment_num=0, data=[], column_types=None)
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "t.table.json").write_text(json.dumps(table))
    cell = {"_type": "sklearn-model-file", "path": "model.pkl"}
    (folder / "0-1.u.table.json").write_text(json.dumps({"data": [[cell]]}))
    (folder / "model.pkl").write_bytes(payloads.reduce_os_system(marker))
    source = VerifiedSource(
        ["t.table.json", "0-1.u.table.json", "model.pkl"], lambda name: folder / name
    )
    with pytest.raises(SerializationError) as info:
        loaded = load_wandb_object(source, "t")
        for row in loaded.data:
            for value in row:
                getter = getattr(value, "model_obj", None)
                if callable(getter):
                    getter()
    assert "sklearn-model-file" in str(info.value)
    assert not marker.exists()
