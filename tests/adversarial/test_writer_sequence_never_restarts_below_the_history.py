"""A writer's next signed sequence never falls below the artifact's history because of what the
store shows: 64 planted junk versions (highest store numbers, manifests that do not verify) must
not make a writer whose ledger has not seen the artifact (a fresh pod with the same key) sign
sequence 1 again, after which the old, higher-sequence content reads as newer than the new one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize
from dagster_wandb_secure.artifacts.history import HEAD_SCAN_LIMIT
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager
from dagster_wandb_secure.stores.local import LocalArtifactStore

E, P = "team", "proj"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    ks = KeyStore.open(tmp_path / "keys")
    kid = ks.generate("ed25519")
    reader = KeyStore.open(tmp_path / "reader-keys")
    reader.import_public(ks.export_public(getattr(kid, "kid", kid)))
    ks.ledger.close()
    reader.ledger.close()
    yield tmp_path


def _iom(root: Path, keys: str) -> WandbArtifactsIOManager:
    return WandbArtifactsIOManager(
        key_store=str(root / keys), store="local", local_store_dir=str(root / "store"),
        base_dir=str(root / "base"), entity=E, project=P,
    )


def _write(root: Path, keys: str, value: Any) -> None:
    @asset(name="victim", io_manager_key="m")
    def producer() -> Any:
        return value

    assert materialize([producer], resources={"m": _iom(root, keys)}).success


def _read(root: Path) -> Any:
    seen: dict[str, Any] = {}

    @asset(ins={"up": AssetIn(key=AssetKey("victim"), input_manager_key="m")})
    def reader(up: Any) -> None:
        seen["value"] = up

    materialize([SourceAsset(key=AssetKey("victim"), io_manager_key="m"), reader],
                resources={"m": _iom(root, "reader-keys")}, selection=[reader],
                raise_on_error=False)
    return seen.get("value")


@pytest.mark.xfail(strict=True, reason=(
    "artifacts/history.py store_head scans only the 64 highest store numbers (attacker-chosen) "
    "and a writer whose ledger has not seen the artifact trusts it: it re-signs sequence 1 and "
    "the old sequence-2 content then reads as newer. Hiding index rows does the same, so the "
    "fix is a design one (writers must share a persistent ledger, or refuse to extend an "
    "existing artifact their ledger has never seen); see the review report"))
def test_planted_junk_versions_never_restart_the_sequence(root: Path) -> None:
    _write(root, "keys", 1)
    _write(root, "keys", 2)  # v1, sequence 2
    store = LocalArtifactStore(root / "store")
    junk = root / "junk"
    junk.write_bytes(b"not a manifest")
    for _ in range(HEAD_SCAN_LIMIT):
        store.publish(entity=E, project=P, name="victim", type="artifact",
                      files={MANIFEST_NAME: junk})
    pod = root / "pod-keys"  # a fresh pod: the same key, an empty ledger
    shutil.copytree(root / "keys", pod, ignore=shutil.ignore_patterns("ledger*"))
    _write(root, "pod-keys", 3)
    assert _read(root) == 3
    store.move_alias(E, P, "victim", "latest", "v1")
    assert _read(root) is None, "old content (2) accepted after newer content (3)"
