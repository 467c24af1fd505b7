"""An asset that builds its own ``wandb.Artifact`` (holding a ``wandb.Table``), plus files and a
folder added through ``add_files`` / ``add_dirs``, and every way of reading it back:

- ``get``: one W&B object from the artifact (the table);
- ``get_path``: the local path of one file (a private, verified copy);
- nothing: the whole artifact (a read-only view with ``get``, ``get_path``, ``download``);
- a fixed version (``v0``) and an alias.

Every file of the version is listed with its SHA-256 in a signed manifest; a reader refuses the
version if any file was added, removed or changed.
"""


from pathlib import Path
from typing import Any

import wandb

from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetSelection,
    Definitions,
    asset,
    define_asset_job,
)
from examples.common import DATA_DIR, IO_MANAGER_KEY, resources

GROUP = "artifacts"


@asset(
    io_manager_key=IO_MANAGER_KEY,
    metadata={
        "wandb_artifact_configuration": {
            "description": "Iris classes as a W&B table, with the CSV and notes it came from",
            "aliases": ["iris-classes", "baseline"],
            "add_files": [{"local_path": str(DATA_DIR / "notes.txt"), "name": "docs/notes.txt"}],
            "add_dirs": [{"local_path": str(DATA_DIR / "labels"), "name": "labels"}],
        }
    },
    group_name=GROUP,
)
def iris_classes() -> wandb.Artifact:
    """A user-built artifact: its name and type come from the artifact itself."""
    artifact = wandb.Artifact("iris_classes", type="dataset", metadata={"rows": 3})
    table = wandb.Table(columns=["label", "name"])
    for label, name in enumerate(["setosa", "versicolor", "virginica"]):
        table.add_data(label, name)
    artifact.add(table, "classes_table")
    return artifact


@asset(
    ins={
        "table": AssetIn(
            key="iris_classes",
            input_manager_key=IO_MANAGER_KEY,
            metadata={"wandb_artifact_configuration": {"get": "classes_table"}},
        )
    },
    group_name=GROUP,
)
def class_names(table: Any) -> list[str]:
    """``get``: the ``wandb.Table`` itself."""
    return [str(v) for v in table.get_column("name")]


@asset(
    ins={
        "csv_path": AssetIn(
            key="iris_classes",
            input_manager_key=IO_MANAGER_KEY,
            metadata={"wandb_artifact_configuration": {"get_path": "labels/classes.csv"}},
        )
    },
    group_name=GROUP,
)
def csv_line_count(csv_path: str) -> int:
    """``get_path``: a verified private copy of one file."""
    return len(Path(csv_path).read_text().splitlines())


@asset(
    ins={"artifact": AssetIn(key="iris_classes", input_manager_key=IO_MANAGER_KEY)},
    group_name=GROUP,
)
def artifact_summary(context: AssetExecutionContext, artifact: Any) -> dict[str, Any]:
    """No ``get``: the whole artifact (every file verified against the signed manifest)."""
    root = Path(artifact.download())
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    context.log.info(f"{artifact.name}: {files}")
    return {
        "name": artifact.name,
        "aliases": sorted(artifact.aliases),
        "notes": Path(artifact.get_path("docs/notes.txt").download()).read_text().strip(),
        "files": files,
    }


@asset(
    ins={
        "first": AssetIn(
            key="iris_classes",
            input_manager_key=IO_MANAGER_KEY,
            metadata={"wandb_artifact_configuration": {"version": "v0", "get": "classes_table"}},
        )
    },
    group_name=GROUP,
)
def first_version_rows(first: Any) -> int:
    """A fixed version: ``v0`` whatever ``latest`` points to now."""
    return len(first.data)


@asset(
    ins={
        "baseline": AssetIn(
            key="iris_classes",
            input_manager_key=IO_MANAGER_KEY,
            metadata={"wandb_artifact_configuration": {"alias": "baseline", "get": "classes_table"}},
        )
    },
    group_name=GROUP,
)
def baseline_rows(baseline: Any) -> int:
    """An alias: the version the ``baseline`` alias points to."""
    return len(baseline.data)


defs = Definitions(
    assets=[iris_classes, class_names, csv_line_count, artifact_summary,
            first_version_rows, baseline_rows],
    jobs=[define_asset_job("artifacts_job", selection=AssetSelection.groups(GROUP))],
    resources=resources(),
)
