"""A registry link statement becomes visible (its ``v<N>.link`` file renamed into place) only
after the ledger's ``durable()`` barrier: its signature row is on disk first, as for every
published version (artifacts/publishing.py). Regression: the link was written with the row
still in the ledger's open group commit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from dagster import asset, materialize
from dagster_wandb_secure.core.ledger import Ledger
from dagster_wandb_secure.core.ledger_groups import GroupCommits
from kit.adversarial import store_iom


def test_the_link_statement_appears_after_the_durable_barrier(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_durable, real_replace, real_row = GroupCommits.durable, os.replace, Ledger.record_signature

    def row(self: Ledger, **entry: Any) -> int:
        events.append("row")
        return real_row(self, **entry)

    def durable(self: GroupCommits) -> None:
        real_durable(self)
        events.append("durable")

    def replace(src: Any, dst: Any, *rest: Any, **kw: Any) -> None:
        real_replace(src, dst, *rest, **kw)
        if str(dst).endswith(".link"):
            events.append("link")

    monkeypatch.setattr(GroupCommits, "durable", durable)
    monkeypatch.setattr(Ledger, "record_signature", row)
    monkeypatch.setattr(os, "replace", replace)
    conf = {"type": "model", "link": {"target_path": "model-registry/clf", "aliases": ["prod"]}}

    @asset(name="clf", metadata={"wandb_artifact_configuration": conf}, io_manager_key="m")
    def clf() -> dict[str, int]:
        return {"depth": 1}

    assert materialize([clf], resources={"m": store_iom(root, "local")}).success
    assert "link" in events
    before = events[: events.index("link")]
    last_row = len(before) - 1 - before[::-1].index("row")  # the statement's signature row
    assert "durable" in before[last_row:], events
