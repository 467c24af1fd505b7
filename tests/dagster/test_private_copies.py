"""Private copies are the defence against a cache tamperer only if nobody else can write the
folder holding them: a pre-created, group/other-writable cache root is refused, as loosened key
store folders are."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import asset, materialize
from dagster_wandb_secure.artifacts.private_copies import CACHE_DIR_NAME
from kit.dagster_runs import failure_text, read_via


def test_world_writable_private_copy_root_is_refused(
    key_store: Any, make_io_manager: Any, workdir: Path
) -> None:
    @asset(io_manager_key="m")
    def victim() -> dict[str, int]:
        return {"x": 1}

    assert materialize([victim], resources={"m": make_io_manager()}).success
    root = workdir / CACHE_DIR_NAME
    if root.exists():
        import shutil

        shutil.rmtree(root)
    root.mkdir()
    os.chmod(root, 0o777)  # pre-created by someone else who can write the base folder
    result = read_via(make_io_manager(), victim)
    assert not result.success
    text = failure_text(result)
    assert "UnsafePathError" in text and "chmod 700" in text and CACHE_DIR_NAME in text


def test_symlinked_private_copy_root_is_refused(
    key_store: Any, make_io_manager: Any, workdir: Path, tmp_path: Path
) -> None:
    @asset(io_manager_key="m")
    def victim() -> dict[str, int]:
        return {"x": 1}

    assert materialize([victim], resources={"m": make_io_manager()}).success
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    root = workdir / CACHE_DIR_NAME
    if root.exists():
        import shutil

        shutil.rmtree(root)
    root.symlink_to(elsewhere)
    result = read_via(make_io_manager(), victim)
    assert not result.success
    assert "UnsafePathError" in failure_text(result)
