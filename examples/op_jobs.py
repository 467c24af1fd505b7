"""Ops instead of assets: an op output needs a ``name`` in its ``wandb_artifact_configuration``.

- ``simple_job``: one op writes ``my_op_list``, the next reads it (the name comes from the
  upstream output's configuration).
- ``partitioned_job``: a statically partitioned job; each run writes ``op_partitioned.<key>``.
"""

from typing import Any

from dagster import (
    Definitions,
    In,
    OpExecutionContext,
    Out,
    StaticPartitionsDefinition,
    job,
    op,
)
from examples.common import IO_MANAGER_KEY, resources

FRUITS = StaticPartitionsDefinition(["apple", "pear"])


@op(
    out=Out(
        io_manager_key=IO_MANAGER_KEY,
        metadata={"wandb_artifact_configuration": {"name": "my_op_list", "type": "dataset"}},
    )
)
def write_list() -> list[int]:
    return [1, 2, 3]


@op(
    ins={"numbers": In(input_manager_key=IO_MANAGER_KEY)},
    out=Out(
        io_manager_key=IO_MANAGER_KEY,
        metadata={"wandb_artifact_configuration": {"name": "my_op_total"}},
    ),
)
def total(context: OpExecutionContext, numbers: list[int]) -> int:
    context.log.info(f"verified input: {numbers}")
    return sum(numbers)


@job
def simple_job() -> None:
    total(write_list())


@op(
    out=Out(
        io_manager_key=IO_MANAGER_KEY,
        metadata={"wandb_artifact_configuration": {"name": "op_partitioned"}},
    )
)
def write_partition(context: OpExecutionContext) -> dict[str, Any]:
    return {"fruit": context.partition_key}


@op(ins={"value": In(input_manager_key=IO_MANAGER_KEY)})
def read_partition(context: OpExecutionContext, value: dict[str, Any]) -> str:
    assert value["fruit"] == context.partition_key
    return str(value["fruit"])


@job(partitions_def=FRUITS)
def partitioned_job() -> None:
    read_partition(write_partition())


defs = Definitions(jobs=[simple_job, partitioned_job], resources=resources())
