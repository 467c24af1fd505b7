"""The signature asset checks must look at what a read would load, for every partition, and
agree with the IO manager about what is bound (SourceAssets carry no asset key)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from dagster import (
    AssetSelection,
    Out,
    SourceAsset,
    StaticPartitionsDefinition,
    asset,
    job,
    materialize,
    op,
)
from dagster_wandb_secure import build_signature_asset_checks
from dagster_wandb_secure.stores.local import INDEX_NAME
from kit import payloads
from kit.dagster_runs import attacker_publish

PARTS = StaticPartitionsDefinition(["a", "b"])


@asset(partitions_def=PARTS, io_manager_key="m")
def split(context) -> str:  # type: ignore[no-untyped-def]  # noqa: ANN001
    return f"data-{context.partition_key}"


def _run_checks(iom: Any, assets: list[Any], checks: list[Any]) -> list[Any]:
    result = materialize(
        [*assets, *checks], resources={"m": iom}, selection=AssetSelection.all_asset_checks()
    )
    return list(result.get_asset_check_evaluations())


def test_partition_hidden_by_unsigned_metadata_is_still_checked(
    key_store: Any, make_io_manager: Any, store_dir: Path, tmp_path: Path, marker: Path
) -> None:
    iom = make_io_manager()
    for pk in ("a", "b"):
        assert materialize([split], partition_key=pk, resources={"m": iom}).success
    checks = build_signature_asset_checks([split], io_manager_key="m")
    (ok,) = _run_checks(make_io_manager(), [split], checks)
    assert ok.passed and ok.metadata["versions_checked"].value == 2

    # a registry writer publishes an unsigned pickle as the latest of partition b and edits the
    # (unsigned, editable in W&B) metadata so that no version of split.b names its partition
    evil = tmp_path / "output.pickle"
    evil.write_bytes(payloads.reduce_os_system(marker))
    attacker_publish(store_dir, "split.b", {"output.pickle": evil})
    with sqlite3.connect(store_dir / INDEX_NAME) as conn:
        conn.execute(
            "UPDATE versions SET metadata = ? WHERE artifact_id = "
            "(SELECT id FROM artifacts WHERE name = 'split.b')",
            (json.dumps({}),),
        )
    (evaluation,) = _run_checks(make_io_manager(), [split], checks)
    assert not evaluation.passed
    assert evaluation.metadata["error"].value == "UnsignedPayloadError"
    assert evaluation.metadata["artifact"].value == "split.b"
    assert not marker.exists()


def test_source_asset_check_agrees_with_the_io_manager(
    key_store: Any, make_io_manager: Any
) -> None:
    """An artifact written by an op (no asset key in its signed context) is read by a
    SourceAsset; its signature check must pass too, not raise a false alarm."""

    @op(out=Out(io_manager_key="m", metadata={"wandb_artifact_configuration": {"name": "ext"}}))
    def produce() -> list[int]:
        return [1, 2]

    @job(resource_defs={"m": make_io_manager()})
    def producer() -> None:
        produce()

    assert producer.execute_in_process().success
    source = SourceAsset(key="ext", io_manager_key="m")
    checks = build_signature_asset_checks([source], io_manager_key="m")
    (evaluation,) = _run_checks(make_io_manager(), [source], checks)
    assert evaluation.passed, evaluation.metadata
