"""Per-run work stays per run (issue 16, small assets): what a run needs once is not redone
for every output and input."""

from __future__ import annotations

from typing import Any

import pytest

from dagster import materialize
from dagster_wandb_secure.artifacts.private_copies import PrivateCopies
from kit.counting import count_calls
from kit.fan_in import fan_in_assets


def test_the_private_copy_root_is_swept_once_per_run(
    key_store: Any, make_io_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeps = count_calls(monkeypatch, PrivateCopies, "cleanup")
    io = make_io_manager()
    for run in range(2):
        assert materialize(fan_in_assets(3), resources={"io_manager": io}).success
        assert len(sweeps) == run + 1  # 4 outputs and 3 inputs, one sweep per run


def test_the_ledger_barrier_runs_once_per_publish_before_the_version_appears(
    key_store: Any, make_io_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_wandb_secure.core.ledger_groups import GroupCommits
    from dagster_wandb_secure.stores.local import LocalArtifactStore

    events: list[str] = []
    real_durable, real_rows = GroupCommits.durable, LocalArtifactStore._write_rows

    def durable(self: GroupCommits) -> None:
        real_durable(self)
        events.append("durable")

    def rows(self: LocalArtifactStore, conn: Any, **kw: Any) -> None:
        # the version's index rows: their commit is what makes it visible (the folder is
        # renamed into artifacts/ before the flush round, but nothing names it until then)
        real_rows(self, conn, **kw)
        events.append("published")

    monkeypatch.setattr(GroupCommits, "durable", durable)
    monkeypatch.setattr(LocalArtifactStore, "_write_rows", rows)
    assert materialize(fan_in_assets(3), resources={"io_manager": make_io_manager()}).success
    assert events == ["durable", "published"] * 4
