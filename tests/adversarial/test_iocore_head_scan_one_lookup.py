"""The writer's head scan still reads every store version's manifest, but asks the ledger about
all of them in one lookup (``seen_manifests``): its ledger reads no longer grow with the
artifact's versions (issue 16; a daily asset holds 365 versions after a year)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_wandb_secure.artifacts.history import history_key, note_published, store_head
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.ledger import Ledger
from dagster_wandb_secure.core.manifest import (
    MANIFEST_NAME,
    History,
    read_manifest_bytes,
    write_manifest,
)
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.counting import count_calls

E, P, NAME = "team", "proj", "counted"
CONTEXT = {"artifact": NAME, "type": "dataset", "project": f"{E}/{P}", "partition": None}
KEY = history_key(E, P, NAME)


def _publish(tmp_path: Path, store: LocalArtifactStore, ks: KeyStore, sequence: int) -> None:
    folder = tmp_path / f"src-{sequence}"
    folder.mkdir()
    payload = folder / "output.bin"
    payload.write_bytes(b"payload %d" % sequence)
    manifest, _ = write_manifest(
        {"output.bin": payload}, key_store=ks, context=CONTEXT, record=False,
        history=History(sequence=sequence, parent=None),
    )
    (folder / MANIFEST_NAME).write_bytes(manifest)
    av = store.publish(entity=E, project=P, name=NAME, type="dataset",
                       files={"output.bin": payload, MANIFEST_NAME: folder / MANIFEST_NAME})
    if sequence % 2:  # half of them recorded by this writer's ledger, half verified again
        vm = read_manifest_bytes(manifest, key_store=ks, expected_context=CONTEXT)
        assert vm.position is not None
        note_published(ks, KEY, digest=vm.digest, position=vm.position,
                       version=av.version_label, aliases=())


def test_the_ledger_reads_of_a_head_scan_do_not_grow_with_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    store = LocalArtifactStore(tmp_path / "store")
    reads_per_scan = []
    for sequence in range(1, 9):
        _publish(tmp_path, store, ks, sequence)
        if sequence in (2, 8):
            with monkeypatch.context() as m:
                reads = count_calls(m, Ledger, "_read")
                head = store_head(store, ks, E, P, NAME)
            assert head is not None and head.sequence == sequence
            reads_per_scan.append(len(reads))
    assert reads_per_scan[0] == reads_per_scan[1] == 1  # was 2 and 8: one per version
