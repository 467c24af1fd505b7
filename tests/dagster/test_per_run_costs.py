"""Per-run work stays per run (issue 16, small assets): what a run needs once is not redone
for every output and input."""

from __future__ import annotations

from typing import Any

import pytest

from dagster import AssetIn, asset, materialize
from dagster_wandb_secure.artifacts.private_copies import PrivateCopies
from kit.counting import count_calls


def _assets(count: int) -> list[Any]:
    def producer(i: int) -> Any:
        @asset(name=f"part_{i}")
        def part() -> dict[str, int]:
            return {"i": i}

        return part

    names = [f"part_{i}" for i in range(count)]

    @asset(name="gather", ins={n: AssetIn() for n in names})
    def gather(**inputs: Any) -> int:
        return len(inputs)

    return [producer(i) for i in range(count)] + [gather]


def test_the_private_copy_root_is_swept_once_per_run(
    key_store: Any, make_io_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeps = count_calls(monkeypatch, PrivateCopies, "cleanup")
    io = make_io_manager()
    for run in range(2):
        assert materialize(_assets(3), resources={"io_manager": io}).success
        assert len(sweeps) == run + 1  # 4 outputs and 3 inputs, one sweep per run


def test_the_ledger_barrier_runs_once_per_publish_before_the_version_appears(
    key_store: Any, make_io_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from dagster_wandb_secure.core.ledger_groups import GroupCommits

    events: list[str] = []
    real_durable, real_rename = GroupCommits.durable, os.rename

    def durable(self: GroupCommits) -> None:
        real_durable(self)
        events.append("durable")

    def rename(a: Any, b: Any, *rest: Any, **kw: Any) -> None:
        real_rename(a, b, *rest, **kw)
        if "/artifacts/" in str(b) and "/staging/" in str(a):
            events.append("published")

    monkeypatch.setattr(GroupCommits, "durable", durable)
    monkeypatch.setattr(os, "rename", rename)
    assert materialize(_assets(3), resources={"io_manager": make_io_manager()}).success
    assert events == ["durable", "published"] * 4
