"""The model registry folder is store data: a symlink planted in ``<store>/registry`` never makes
``link()`` create folders or write a link statement outside the store, and a read never lists
statements through it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize
from dagster_wandb_secure.core.keys import KeyStore
from kit.adversarial import store_iom  # the ``root`` fixture: tests/adversarial/conftest.py
from kit.dagster_runs import failure_text


def _write(root: Path, store: str, link: bool) -> tuple[bool, str]:
    conf: dict[str, Any] = {"type": "model"}
    if link:
        conf["link"] = {"target_path": "model-registry/clf", "aliases": ["staging"]}

    @asset(name="clf", metadata={"wandb_artifact_configuration": conf}, io_manager_key="m")
    def clf() -> dict[str, int]:
        return {"depth": 1}

    result = materialize([clf], resources={"m": store_iom(root, store)}, raise_on_error=False)
    text = failure_text(result) if not result.success else ""
    return result.success, text


def _read(root: Path, store: str) -> tuple[bool, Any]:
    seen: dict[str, Any] = {}
    key = AssetKey(["model-registry", "clf"])

    @asset(ins={"m": AssetIn(key=key, input_manager_key="m")})
    def use(m: Any) -> None:
        seen["m"] = m

    result = materialize([SourceAsset(key=key, io_manager_key="m"), use], selection=[use],
                         resources={"m": store_iom(root, store)}, raise_on_error=False)
    return result.success, seen.get("m")


def _store_root(root: Path) -> Path:
    index = [p for p in (root / "store").rglob("index.sqlite3")]
    assert index, sorted((root / "store").rglob("*"))
    return index[0].parent


@pytest.mark.parametrize("store", ["local", "wandb"])
def test_link_never_writes_through_a_symlink_in_the_registry(root: Path, store: str) -> None:
    assert _write(root, store, link=False)[0]
    outside = root / "outside"
    outside.mkdir()
    (_store_root(root) / "registry").symlink_to(outside, target_is_directory=True)
    ok, text = _write(root, store, link=True)
    assert sorted(outside.rglob("*")) == [], "link() wrote outside the store"
    assert not ok and "UnsafePathError" in text, text


@pytest.mark.parametrize("store", ["local", "wandb"])
def test_a_registry_read_does_not_follow_a_symlinked_registry(root: Path, store: str) -> None:
    assert _write(root, store, link=True)[0]
    assert _read(root, store) == (True, {"depth": 1})
    registry = _store_root(root) / "registry"
    moved = root / "elsewhere"
    registry.rename(moved)
    registry.symlink_to(moved, target_is_directory=True)
    assert _read(root, store) == (False, None)


def test_audit_does_not_verify_statements_through_a_symlinked_registry(root: Path) -> None:
    from dagster_wandb_secure.maintenance.audit import audit_links

    assert _write(root, "local", link=True)[0]
    registry = _store_root(root) / "registry"
    moved = root / "elsewhere"
    registry.rename(moved)
    registry.symlink_to(moved, target_is_directory=True)
    ks = KeyStore.open(root / "keys")
    try:
        rows = audit_links(_store_root(root), ks)
    finally:
        ks.ledger.close()
    assert rows and all(r["status"] != "valid" for r in rows), rows
    assert "outside the store" in rows[0]["reason"]


@pytest.mark.parametrize("store", ["local", "wandb"])
def test_a_file_planted_where_a_registry_folder_goes_is_a_typed_error(
    root: Path, store: str
) -> None:
    assert _write(root, store, link=False)[0]
    (_store_root(root) / "registry").write_bytes(b"not a folder")
    ok, text = _write(root, store, link=True)
    assert not ok and "StoreError" in text and "registry" in text, text
    assert "NotADirectoryError" not in text and "FileExistsError" not in text, text
