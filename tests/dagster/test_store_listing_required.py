"""The verifier compares the signed manifest with what is actually on disk. A store that cannot
list its files must be refused, not trusted for its own index (which misses planted files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagster import AssetKey, asset, build_input_context, materialize
from dagster_wandb_secure.core.errors import SecureArtifactError
from kit import payloads
from kit.dagster_runs import ENTITY, PROJECT, store_of, writable


class NoListing:
    """A third-party store: everything but ``list_files``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "list_files":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_store_without_list_files_is_refused(
    key_store: Any, make_io_manager: Any, store_dir: Path, marker: Path
) -> None:
    @asset(io_manager_key="m")
    def victim() -> dict[str, int]:
        return {"x": 1}

    assert materialize([victim], resources={"m": make_io_manager()}).success
    av = store_of(store_dir).resolve(ENTITY, PROJECT, "victim", alias="latest")
    planted = writable(av.root / "planted.pickle")
    planted.write_bytes(payloads.reduce_os_system(marker))

    engine = make_io_manager().engine()
    session = engine.session(None)
    session.store = NoListing(session.store)
    with pytest.raises(SecureArtifactError) as info:
        engine.load_input(build_input_context(asset_key=AssetKey("victim")))
    assert "list_files" in str(info.value) and "victim" in str(info.value)
    assert not marker.exists()
