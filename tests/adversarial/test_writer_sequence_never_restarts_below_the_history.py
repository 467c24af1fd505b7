"""A writer's next signed sequence never falls below the artifact's history because of what the
store shows: 64 planted junk versions (highest store numbers, manifests that do not verify) must
not make a writer whose ledger has not seen the artifact (a fresh pod with the same key) sign
sequence 1 again, after which the old, higher-sequence content reads as newer than the new one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize
from dagster_wandb_secure.core import envelope as envelope_module
from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager
from dagster_wandb_secure.maintenance import audit as audit_module
from dagster_wandb_secure.maintenance.audit import Status, audit_store
from dagster_wandb_secure.stores.local import LocalArtifactStore

E, P = "team", "proj"
# More than the 64 newest versions the writer once scanned (the defect this test pins).
JUNK_VERSIONS = 65


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


def test_planted_junk_versions_never_restart_the_sequence(root: Path) -> None:
    _write(root, "keys", 1)
    _write(root, "keys", 2)  # v1, sequence 2
    store = LocalArtifactStore(root / "store")
    junk = root / "junk"
    junk.write_bytes(b"not a manifest")
    for _ in range(JUNK_VERSIONS):
        store.publish(entity=E, project=P, name="victim", type="artifact",
                      files={MANIFEST_NAME: junk})
    pod = root / "pod-keys"  # a fresh pod: the same key, an empty ledger
    shutil.copytree(root / "keys", pod, ignore=shutil.ignore_patterns("ledger*"))
    _write(root, "pod-keys", 3)
    assert _read(root) == 3
    store.move_alias(E, P, "victim", "latest", "v1")
    assert _read(root) is None, "old content (2) accepted after newer content (3)"


class _EarlierClock(datetime):
    """The writer's clock ten minutes back: what an artifact signed ten minutes ago carries."""

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) - timedelta(minutes=10)


def test_hidden_head_resurfacing_after_a_fresh_writer_is_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one way left to restart a fresh writer's sequence without a shared ledger: hide the
    whole history (here: swap in an empty store), let a fresh pod sign sequence 1, then bring
    the old sequence-2 version back. Its sequence is higher, but it was signed long before the
    version the reader accepted: the reader refuses it (rolled-back), never returns 2."""
    with monkeypatch.context() as m:
        m.setattr(envelope_module, "datetime", _EarlierClock)
        _write(root, "keys", 1)
        _write(root, "keys", 2)  # v1: sequence 2, signed ten minutes "ago"
    (root / "store").rename(root / "stash")  # the registry writer hides every version
    pod = root / "pod-keys"
    shutil.copytree(root / "keys", pod, ignore=shutil.ignore_patterns("ledger*"))
    _write(root, "pod-keys", 3)  # a fresh pod, an empty-looking store: sequence 1
    assert _read(root) == 3
    stash = LocalArtifactStore(root / "stash")
    old = stash.resolve(E, P, "victim", version=1)
    store = LocalArtifactStore(root / "store")
    store.publish(entity=E, project=P, name="victim", type=old.type, metadata=dict(old.metadata),
                  files={rel: stash.file_path(old, rel) for rel in old.files})
    assert _read(root) is None, "old content (2) accepted after newer content (3)"
    report = audit_store(store, KeyStore.open(root / "reader-keys"))
    assert {e.version: e.status.value for e in report.entries}["v1"] != "valid"
    _write(root, "pod-keys", 4)  # the next genuine version is accepted again
    assert _read(root) == 4


def test_audit_flags_a_higher_sequence_signed_long_before_a_lower_one() -> None:
    """What audit's history pass makes of the store above when its ledger holds every row: the
    resurfaced sequence-2 version (signed ten minutes before sequence 1) is ``forked``, and the
    versions in order are left alone."""
    def entry(sequence: int, minutes: int) -> SimpleNamespace:
        when = f"2026-12-01T12:{minutes:02d}:00.000000Z"
        return SimpleNamespace(position=Position(sequence, when, f"{sequence}{minutes}".ljust(64, "0")),
                               status=Status.VALID, reason=None, error_type=None)

    entries = [entry(1, 0), entry(2, 1), entry(1, 30), entry(2, 2), entry(3, 40)]
    audit_module._flag_restarts(entries, list(range(len(entries))))
    assert [e.status for e in entries] == [Status.VALID, Status.FORKED, Status.VALID,
                                           Status.FORKED, Status.VALID]
    assert "restarted below" in entries[1].reason
