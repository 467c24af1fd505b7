"""A Dagster job whose op audits a local store (``audit_store(processes=True)``), for the test
that runs it on the multiprocess executor (its step processes import this module by name)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import In, Nothing, Out, job, multiprocess_executor, op
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.stores.local import LocalArtifactStore


@op(config_schema={"keys": str, "store": str}, out=Out(dict))
def audit_op(context) -> dict[str, Any]:  # type: ignore[no-untyped-def]  # noqa: ANN001
    import dagster_wandb_secure.maintenance.audit as audit

    forks = audit._fork_is_safe()
    report = audit.audit_store(
        LocalArtifactStore(Path(context.op_config["store"])),
        KeyStore.open(Path(context.op_config["keys"])),
        deep=True, processes=True, workers=2,
    )
    return {"forks": forks, "pid": os.getpid(),
            "statuses": [[e.name, e.version, str(e.status)] for e in report.entries]}


@op(ins={"start": In(Nothing)})
def after_op() -> None:
    pass


@job(executor_def=multiprocess_executor)
def audit_job() -> None:
    after_op(start=audit_op())
