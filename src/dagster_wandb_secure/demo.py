"""``make demo``: signed W&B artifacts end to end, offline, in well under a minute.

A Dagster ``Definitions`` trains a small scikit-learn model (stored with skops), stores a plain
Python object (a signed pickle), a ``wandb.Table`` and a daily-partitioned asset, reads them all
back through the IO manager (each one verified before use), then tampers with one stored
artifact and shows that the next read refuses it. It prints where the store and key store are.

The key store is ``keys/`` in the current folder (a key is generated when it is empty); the
artifact store lives under ``.demo/``. Run ``python -m dagster_wandb_secure.demo``.
"""


import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from dagster import (  # noqa: E402 - the environment above must be set before import
    AssetExecutionContext,
    AssetIn,
    DagsterInstance,
    DailyPartitionsDefinition,
    Definitions,
    asset,
    define_asset_job,
)

from .core.algorithms import DEFAULT_ALGORITHM
from .core.keys import KeyStore
from .io_manager import WandbArtifactsIOManager  # noqa: E402
from .stores.local import LocalArtifactStore

DEMO_DIR = Path(".demo")
KEY_DIR = Path("keys")
IO_MANAGER_KEY = "wandb_artifacts_manager"
DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")


@asset(
    io_manager_key=IO_MANAGER_KEY,
    metadata={"wandb_artifact_configuration": {"type": "model"}},
    group_name="demo",
)
def iris_model() -> Any:
    """A small scikit-learn pipeline: stored with skops (no pickle), signed."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y)


@asset(
    io_manager_key=IO_MANAGER_KEY,
    metadata={"wandb_artifact_configuration": {"type": "dataset", "aliases": ["demo"]}},
    group_name="demo",
)
def training_summary() -> dict[str, Any]:
    """A plain Python object: a pickle inside a signed envelope."""
    return {"dataset": "iris", "features": 4, "classes": ["setosa", "versicolor", "virginica"]}


@asset(
    io_manager_key=IO_MANAGER_KEY,
    metadata={"wandb_artifact_configuration": {"type": "dataset"}},
    group_name="demo",
)
def class_table() -> Any:
    """A W&B object: stored with W&B's own format, covered by the signed manifest."""
    import wandb

    return wandb.Table(columns=["class", "id"], data=[["setosa", 0], ["versicolor", 1]])


@asset(io_manager_key=IO_MANAGER_KEY, partitions_def=DAYS, group_name="demo")
def daily_count(context: AssetExecutionContext) -> dict[str, Any]:
    """A daily-partitioned asset: each partition is its own artifact ``daily_count.<day>``."""
    return {"day": context.partition_key, "rows": 100 + int(context.partition_key[-2:])}


@asset(
    ins={
        "iris_model": AssetIn(input_manager_key=IO_MANAGER_KEY),
        "training_summary": AssetIn(input_manager_key=IO_MANAGER_KEY),
        "class_table": AssetIn(input_manager_key=IO_MANAGER_KEY),
        "daily_count": AssetIn(input_manager_key=IO_MANAGER_KEY),
    },
    group_name="demo",
)
def report(
    context: AssetExecutionContext,
    iris_model: Any,
    training_summary: dict[str, Any],
    class_table: Any,
    daily_count: dict[str, Any],
) -> dict[str, Any]:
    """Reads every artifact back (each verified before it was deserialized)."""
    prediction = int(iris_model.predict([[5.1, 3.5, 1.4, 0.2]])[0])
    table = class_table.get("Table")
    out = {
        "prediction": training_summary["classes"][prediction],
        "table_rows": len(table.data),
        "partitions": sorted(daily_count),
    }
    context.log.info(f"report: {out}")
    return out


def build_definitions(root: Path, key_dir: Path) -> Definitions:
    io_manager = WandbArtifactsIOManager(
        key_store=str(key_dir),
        store="local",
        local_store_dir=str(root / "store"),
        base_dir=str(root),
        entity="demo",
        project="dagster-wandb-secure",
    )
    return Definitions(
        assets=[iris_model, training_summary, class_table, daily_count, report],
        jobs=[define_asset_job("demo_job", selection=[report])],
        resources={IO_MANAGER_KEY: io_manager},
    )


def _ensure_key(key_dir: Path) -> str:

    ks = KeyStore.open(key_dir)
    if not ks.records():
        kid = ks.generate(DEFAULT_ALGORITHM)
        print(f"  generated signing key {kid} ({DEFAULT_ALGORITHM}) in {key_dir}/")
        return kid
    return ks.primary().kid


def _tamper(store_root: Path) -> Path:
    """Flip one byte of the latest stored ``training_summary`` payload (a registry writer)."""

    store = LocalArtifactStore(store_root)
    av = store.resolve("demo", "dagster-wandb-secure", "training_summary", alias="latest")
    target = av.root / "output.pickle"
    os.chmod(target, 0o600)
    data = bytearray(target.read_bytes())
    data[-2] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def main(argv: list[str] | None = None) -> int:
    from dagster import materialize

    started = time.monotonic()
    root = DEMO_DIR.absolute()
    key_dir = KEY_DIR.absolute()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    print("dagster-wandb-secure demo (offline, local store)")
    kid = _ensure_key(key_dir)
    print(f"  signing key: {kid}")
    defs = build_definitions(root, key_dir)
    resources = {IO_MANAGER_KEY: defs.resources[IO_MANAGER_KEY]}
    assets = [iris_model, training_summary, class_table, daily_count, report]

    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    with DagsterInstance.ephemeral() as instance:
        print("1. writing signed artifacts ...")
        for day in DAYS.get_partition_keys():
            r = materialize([daily_count], partition_key=day, resources=resources,
                            instance=instance, run_config=quiet)
            assert r.success
        r = materialize([iris_model, training_summary, class_table], resources=resources,
                        instance=instance, run_config=quiet)
        assert r.success
        for key in ("iris_model", "training_summary", "class_table"):
            meta = r.asset_materializations_for_node(key)[0].metadata
            print(
                f"   {key:17s} {meta['wandb_artifact_version'].value}  "
                f"serializer={meta['serializer'].value:10s} "
                f"signed by {meta['signing_key_id'].value} ({meta['signature_algorithm'].value})"
            )
        print("2. reading them all back (verified before use) ...")
        r = materialize(assets, resources=resources, instance=instance, selection=[report],
                        run_config=quiet)
        assert r.success
        value = r.output_for_node("report")
        print(f"   report: {value}")
        print("3. tampering with one stored artifact ...")
        tampered = _tamper(root / "store")
        print(f"   flipped one byte of {tampered}")
        r = materialize(assets, resources=resources, instance=instance, selection=[report],
                        raise_on_error=False, run_config=quiet)
        failures = r.get_step_failure_events()
        if r.success or not failures:
            print("   ERROR: the tampered artifact was accepted")
            return 1
        error = failures[0].event_specific_data.error
        while error.cause is not None:
            error = error.cause
        text = error.message.strip().split(": ", 1)[-1]
        print(f"   refused: {text}")
    print(f"artifact store: {root / 'store'}")
    print(f"key store:      {key_dir}")
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
