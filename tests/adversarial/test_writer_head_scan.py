"""The writer's head scan (``artifacts/history.store_head``) stays a full scan of every version
while reading only what it must: each version's manifest file, opened without following a
symlink and bounded in size, and verified again only when the ledger has not recorded it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.artifacts.history import allocate, history_key, note_published, store_head
from dagster_wandb_secure.core import manifest as manifest_module
from dagster_wandb_secure.core.errors import ResourceLimitError, UnsafePathError
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import (
    MANIFEST_NAME,
    History,
    Resigns,
    manifest_digest,
    read_manifest_bytes,
    write_manifest,
)
from dagster_wandb_secure.stores.base import list_manifests
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.counting import count_calls

E, P, NAME = "team", "proj", "scanned"
CONTEXT = {"artifact": NAME, "type": "dataset", "project": f"{E}/{P}", "partition": None}
KEY = history_key(E, P, NAME)


@pytest.fixture
def ks(tmp_path: Path) -> KeyStore:
    keys = KeyStore.open(tmp_path / "keys")
    keys.generate("ed25519")
    return keys


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


def _publish(tmp_path: Path, store: LocalArtifactStore, ks: KeyStore, sequence: int, *,
             seen: bool, resigns: Resigns | None = None) -> bytes:
    """One genuine format-2 version; ``seen``: the writer's ledger records it (as a publish
    through the IO manager does). Returns the manifest envelope."""
    folder = tmp_path / f"src-{sequence}-{'resign' if resigns else 'new'}"
    folder.mkdir()
    payload = folder / "output.bin"
    payload.write_bytes(b"payload %d" % sequence)
    manifest, _ = write_manifest(
        {"output.bin": payload}, key_store=ks, context=CONTEXT, record=False,
        history=History(sequence=sequence, parent=None, resigns=resigns),
    )
    (folder / MANIFEST_NAME).write_bytes(manifest)
    av = store.publish(entity=E, project=P, name=NAME, type="dataset",
                       files={"output.bin": payload, MANIFEST_NAME: folder / MANIFEST_NAME})
    if seen:
        vm = read_manifest_bytes(manifest, key_store=ks, expected_context=CONTEXT)
        assert vm.position is not None
        note_published(ks, KEY, digest=vm.digest, position=vm.position,
                       version=av.version_label, aliases=())
    return manifest


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    return count_calls(monkeypatch, manifest_module, "verify_bytes")


def _fresh_pod(tmp_path: Path) -> KeyStore:
    """The same keys, an empty ledger (a new pod)."""
    shutil.copytree(tmp_path / "keys", tmp_path / "pod", ignore=shutil.ignore_patterns("ledger*"))
    return KeyStore.open(tmp_path / "pod")


def test_manifests_the_ledger_recorded_are_not_verified_again(
    tmp_path: Path, store: LocalArtifactStore, ks: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = [_publish(tmp_path, store, ks, seq, seen=True) for seq in range(1, 6)]
    calls = _count_verifications(monkeypatch)
    head = store_head(store, ks, E, P, NAME)
    assert head is not None and head.sequence == 5
    assert head.digest == manifest_digest(manifests[-1])
    assert calls == [], "a manifest the ledger recorded was verified again"
    pod = _fresh_pod(tmp_path)  # nothing recorded: every version is verified, same head
    fresh = store_head(store, pod, E, P, NAME)
    assert fresh == head and len(calls) == 5


def test_a_recorded_resign_counts_at_its_originals_place(
    tmp_path: Path, store: LocalArtifactStore, ks: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger records a re-sign at its original's place: skipping its verification gives
    the head a fresh pod finds by verifying everything."""
    original = _publish(tmp_path, store, ks, 2, seen=True)
    vm = read_manifest_bytes(original, key_store=ks, expected_context=CONTEXT)
    assert vm.position is not None
    _publish(tmp_path, store, ks, 2, seen=True,
             resigns=Resigns(2, vm.digest, vm.position.signed_at))
    calls = _count_verifications(monkeypatch)
    head = store_head(store, ks, E, P, NAME)
    assert head is not None and head.sequence == 2 and calls == []
    assert store_head(store, _fresh_pod(tmp_path), E, P, NAME) == head
    with allocate(store, ks, E, P, NAME) as slot:
        assert slot.sequence == 3


def test_a_recorded_manifest_of_a_revoked_key_still_raises_the_floor(
    tmp_path: Path, store: LocalArtifactStore, ks: KeyStore
) -> None:
    """Revoking the key a version was signed with never lets the sequence fall back below it:
    the ledger's record counts (it was verified when recorded); a fresh pod, which cannot
    verify it any more, ignores it, as before."""
    manifest = _publish(tmp_path, store, ks, 9, seen=True)
    kid = read_manifest_bytes(manifest, key_store=ks, expected_context=CONTEXT).header.kid
    ks.promote(ks.generate("ed25519"))
    ks.revoke(kid, "test: leaked")
    with pytest.raises(Exception, match="revoked"):
        read_manifest_bytes(manifest, key_store=ks, expected_context=CONTEXT)
    head = store_head(store, ks, E, P, NAME)
    assert head is not None and head.sequence == 9
    with allocate(store, ks, E, P, NAME) as slot:
        assert slot.sequence == 10
        assert slot.parent == manifest_digest(manifest)
    assert store_head(store, _fresh_pod(tmp_path), E, P, NAME) is None


def test_a_manifest_behind_a_symlink_or_over_the_cap_is_not_read(
    tmp_path: Path, store: LocalArtifactStore, ks: KeyStore
) -> None:
    _publish(tmp_path, store, ks, 1, seen=False)
    high = _publish(tmp_path, store, ks, 5, seen=False)
    planted = tmp_path / "outside.manifest"
    planted.write_bytes(high)
    v1 = store.resolve(E, P, NAME, version=1)
    target = Path(v1.root) / MANIFEST_NAME
    os.chmod(target.parent, 0o755)
    target.unlink()
    target.symlink_to(planted)  # the sequence-5 manifest, but only through a symlink
    head = store_head(store, ks, E, P, NAME)
    assert head is not None and head.sequence == 1
    items = list(list_manifests(store, entity=E, project=P, name=NAME, relpath=MANIFEST_NAME,
                                max_bytes=1 << 20))
    assert isinstance(items[1][1], UnsafePathError)
    small = list(list_manifests(store, entity=E, project=P, name=NAME, relpath=MANIFEST_NAME,
                                max_bytes=16))
    assert isinstance(small[0][1], ResourceLimitError)


def test_a_symlinked_version_folder_is_not_followed(
    tmp_path: Path, store: LocalArtifactStore, ks: KeyStore
) -> None:
    _publish(tmp_path, store, ks, 1, seen=False)
    _publish(tmp_path, store, ks, 5, seen=False)
    v1 = Path(store.resolve(E, P, NAME, version=1).root)
    os.chmod(v1.parent, 0o755)
    moved = tmp_path / "elsewhere"
    shutil.copytree(v1, moved)
    shutil.rmtree(v1, ignore_errors=True)
    if v1.exists():
        pytest.skip("version folder is read-only")
    v1.symlink_to(moved, target_is_directory=True)
    head = store_head(store, ks, E, P, NAME)
    assert head is not None and head.sequence == 1


def test_a_malformed_index_row_does_not_hide_the_head(
    tmp_path: Path, store: LocalArtifactStore, ks: KeyStore
) -> None:
    """One hostile index row is skipped; it used to end the listing, and with it the scan."""
    import sqlite3

    from dagster_wandb_secure.stores.local import INDEX_NAME

    _publish(tmp_path, store, ks, 5, seen=False)
    _publish(tmp_path, store, ks, 1, seen=False)
    with sqlite3.connect(Path(store.root) / INDEX_NAME) as conn:
        conn.execute("UPDATE versions SET number = 'v1; junk' WHERE number = 1")
    head = store_head(store, _fresh_pod(tmp_path), E, P, NAME)
    assert head is not None and head.sequence == 5
