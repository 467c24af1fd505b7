"""``require_ledger_record`` covers the model registry: a link statement signed offline with a
stolen copy of the writer's key (never recorded in the ledger) must not re-point a registry
alias, just as a version signed that way is refused by a normal read."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize
from dagster_wandb_secure.core.envelope import (
    deserialize,
    read_header_unverified,
    seal_with_header,
    verify_bytes,
)
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager
from kit.dagster_runs import failure_text

E, P = "team", "proj"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    ks.ledger.close()
    yield tmp_path


def _iom(root: Path, store: str, **settings: Any) -> WandbArtifactsIOManager:
    return WandbArtifactsIOManager(
        key_store=str(root / "keys"), store=store, local_store_dir=str(root / "store"),
        base_dir=str(root / "base"), entity=E, project=P, **settings,
    )


def _write(root: Path, store: str, depth: int, link: bool) -> None:
    conf: dict[str, Any] = {"type": "model"}
    if link:
        conf["link"] = {"target_path": "model-registry/clf", "aliases": ["staging"]}

    @asset(name="clf", metadata={"wandb_artifact_configuration": conf}, io_manager_key="m")
    def clf() -> dict[str, int]:
        return {"depth": depth}

    assert materialize([clf], resources={"m": _iom(root, store)}).success


def _read(root: Path, store: str) -> tuple[bool, Any, str]:
    seen: dict[str, Any] = {}
    key = AssetKey(["model-registry", "clf"])

    @asset(ins={"m": AssetIn(key=key, input_manager_key="m",
                             metadata={"wandb_artifact_configuration": {"alias": "staging"}})})
    def use(m: Any) -> None:
        seen["m"] = m

    result = materialize(
        [SourceAsset(key=key, io_manager_key="m"), use], selection=[use],
        resources={"m": _iom(root, store, require_ledger_record=True)}, raise_on_error=False,
    )
    text = failure_text(result) if not result.success else ""
    return result.success, seen.get("m"), text


def _forge_link_to_v0(root: Path) -> None:
    """The thief copies the genuine v0.link statement, points it at clf:v0 and signs it as v1
    with a copy of the key store (its own, empty ledger)."""
    stolen = root / "stolen-keys"
    shutil.copytree(root / "keys", stolen, ignore=shutil.ignore_patterns("ledger*"))
    thief = KeyStore.open(stolen)
    genuine = next(root.rglob("registry/team/model-registry/clf/v0.link"))
    header, payload = verify_bytes(genuine.read_bytes(), key_store=thief)
    doc = deserialize(header, payload)
    v0_manifest = next(p for p in root.rglob(MANIFEST_NAME) if p.parent.name == "v0"
                       and p.parent.parent.name == "clf")
    doc["source"]["version"] = "v0"
    v0_header = read_header_unverified(v0_manifest)["header"]
    v0_digest = v0_header["payload_" + v0_header["digest_alg"]]  # the signed digest_alg's field
    doc["source"]["manifest_sha256"] = v0_digest
    doc["registry_version"] = "v1"
    context = {**header.context, "registry_version": "v1"}
    data, _ = seal_with_header(doc, key_store=thief, serializer="json", context=context,
                               record=False)
    (genuine.parent / "v1.link").write_bytes(data)
    thief.ledger.close()


@pytest.mark.parametrize("store", ["local", "wandb"])
def test_an_unrecorded_link_statement_is_refused(root: Path, store: str) -> None:
    _write(root, store, 1, link=False)
    _write(root, store, 2, link=True)
    assert _read(root, store)[:2] == (True, {"depth": 2})
    _forge_link_to_v0(root)
    ok, value, text = _read(root, store)
    assert value is None and not ok, "a stolen key alone re-pointed the registry alias"
    assert "LedgerRecordMissingError" in text, text
