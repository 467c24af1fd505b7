"""Partition handling must be the same on the write and the read side."""

from __future__ import annotations

from typing import Any

from dagster import AssetIn, StaticPartitionsDefinition, asset, materialize


def test_partitioned_asset_reads_unpartitioned_upstream(
    key_store: Any, make_io_manager: Any
) -> None:
    """The run's partition key belongs to the downstream asset; the unpartitioned upstream was
    written without one and must be read without one."""

    @asset(io_manager_key="m")
    def base() -> dict[str, int]:
        return {"x": 1}

    seen: dict[str, Any] = {}

    @asset(
        partitions_def=StaticPartitionsDefinition(["p"]),
        ins={"value": AssetIn(key=base.key, input_manager_key="m")},
    )
    def down(value: Any) -> None:
        seen["value"] = value

    iom = make_io_manager()
    assert materialize([base], resources={"m": iom}).success
    result = materialize(
        [base, down],
        resources={"m": make_io_manager()},
        selection=[down],
        partition_key="p",
        raise_on_error=False,
    )
    assert result.success
    assert seen["value"] == {"x": 1}


def test_unpartitioned_asset_written_in_a_partitioned_run_keeps_its_name(
    key_store: Any, make_io_manager: Any, store_dir: Any
) -> None:
    from kit.dagster_runs import store_of

    @asset(io_manager_key="m")
    def base() -> dict[str, int]:
        return {"x": 1}

    @asset(partitions_def=StaticPartitionsDefinition(["p"]), io_manager_key="m")
    def part(base: Any) -> int:
        return 1

    result = materialize(
        [base, part], resources={"m": make_io_manager()}, partition_key="p", raise_on_error=False
    )
    if not result.success:  # Dagster refused the mixed run itself: nothing to check
        return
    names = {av.name for av in store_of(store_dir).list_versions()}
    assert "base" in names and "base.p" not in names
