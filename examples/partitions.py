"""Partitioned assets. Each partition is its own artifact, ``<asset>.<partition key>``
(multi-partition keys join their dimensions with ``-``); each is signed for its partition, so a
valid partition cannot be swapped in for another.

- ``daily_rows``: daily partitions; ``all_daily_rows`` reads every partition at once
  (a ``{partition: value}`` dict); ``daily_growth`` reads the day and the day before through
  ``TimeWindowPartitionMapping(start_offset=-1)`` (so its first day has no input: start at the
  second).
- ``color_days``: multi-partitions (date x color), read whole by ``color_days_summary``.
- ``daily_tables`` + ``table_sizes``: the ``*`` wildcard sets what to ``get`` from every partition;
  a specific partition entry replaces it (one pinned to ``version: v0``, one to an alias).
"""

from typing import Any

import wandb

from dagster import (
    AssetExecutionContext,
    AssetIn,
    DailyPartitionsDefinition,
    Definitions,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
    define_asset_job,
)
from examples.common import IO_MANAGER_KEY, resources

GROUP = "partitions"
DAYS = DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")  # 3 days
COLORS = StaticPartitionsDefinition(["red", "blue"])
DAYS_X_COLORS = MultiPartitionsDefinition({"date": DAYS, "color": COLORS})


@asset(partitions_def=DAYS, io_manager_key=IO_MANAGER_KEY, group_name=GROUP)
def daily_rows(context: AssetExecutionContext) -> dict[str, Any]:
    day = context.partition_key
    return {"day": day, "rows": 100 + int(day[-2:])}


@asset(
    ins={"daily_rows": AssetIn(input_manager_key=IO_MANAGER_KEY)},
    group_name=GROUP,
)
def all_daily_rows(daily_rows: dict[str, dict[str, Any]]) -> int:
    """Every partition: ``{"2024-01-01": {...}, "2024-01-02": {...}, ...}``."""
    return sum(p["rows"] for p in daily_rows.values())


@asset(
    partitions_def=DAYS,
    ins={
        "daily_rows": AssetIn(
            input_manager_key=IO_MANAGER_KEY,
            partition_mapping=TimeWindowPartitionMapping(start_offset=-1),
        )
    },
    group_name=GROUP,
)
def daily_growth(context: AssetExecutionContext, daily_rows: dict[str, Any]) -> int:
    """This day and the previous one: two partitions, so a dict keyed by day."""
    days = sorted(daily_rows)
    context.log.info(f"{context.partition_key}: read {days}")
    return int(daily_rows[days[-1]]["rows"] - daily_rows[days[0]]["rows"])


@asset(partitions_def=DAYS_X_COLORS, io_manager_key=IO_MANAGER_KEY, group_name=GROUP)
def color_days(context: AssetExecutionContext) -> str:
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    return f"{keys['color']} on {keys['date']}"


@asset(
    ins={"color_days": AssetIn(input_manager_key=IO_MANAGER_KEY)},
    group_name=GROUP,
)
def color_days_summary(color_days: dict[str, str]) -> list[str]:
    """Every (date, color) partition, keyed by the multi-partition key ``color|date``."""
    return sorted(color_days.values())


@asset(
    partitions_def=DAYS,
    io_manager_key=IO_MANAGER_KEY,
    metadata={"wandb_artifact_configuration": {"type": "dataset", "aliases": ["reviewed"]}},
    group_name=GROUP,
)
def daily_tables(context: AssetExecutionContext) -> wandb.Table:
    """A W&B table per day (stored under the object's class name, ``Table``)."""
    day = context.partition_key
    return wandb.Table(columns=["day", "n"], data=[[day, i] for i in range(int(day[-2:]))])


@asset(
    ins={
        "daily_tables": AssetIn(
            input_manager_key=IO_MANAGER_KEY,
            metadata={
                "wandb_artifact_configuration": {
                    "partitions": {
                        "*": {"get": "Table"},  # every partition not named below
                        "2024-01-02": {"get": "Table", "version": "v0"},
                        "2024-01-03": {"get": "Table", "alias": "reviewed"},
                    }
                }
            },
        )
    },
    group_name=GROUP,
)
def table_sizes(daily_tables: dict[str, Any]) -> dict[str, int]:
    return {day: len(table.data) for day, table in sorted(daily_tables.items())}


defs = Definitions(
    assets=[
        daily_rows,
        all_daily_rows,
        daily_growth,
        color_days,
        color_days_summary,
        daily_tables,
        table_sizes,
    ],
    jobs=[
        define_asset_job("daily_job", selection=[daily_rows, daily_tables], partitions_def=DAYS),
        define_asset_job("growth_job", selection=[daily_growth], partitions_def=DAYS),
        define_asset_job("color_days_job", selection=[color_days], partitions_def=DAYS_X_COLORS),
        define_asset_job(
            "partition_readers_job",
            selection=[all_daily_rows, color_days_summary, table_sizes],
        ),
    ],
    resources=resources(),
)
