"""Signed manifests over multi-file versions: extra, missing, swapped, renamed and empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagster_wandb_secure.core.envelope import seal_to
from dagster_wandb_secure.core.errors import (
    ConfigurationError,
    ContextMismatchError,
    TamperedPayloadError,
    UnsafePathError,
    UnsignedPayloadError,
)
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME, verify_manifest, write_manifest

CTX = {"artifact": "multi", "type": "dataset", "partition": None, "asset_key": "multi"}


def make_version(root: Path, ks: KeyStore, ctx: dict = CTX) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "a.csv").write_text("a,b\n1,2\n")
    (root / "table.json").write_text('{"columns": ["a"]}')
    seal_to(root / "output.pickle", {"k": 1}, key_store=ks, context=ctx)
    files = {
        "data/a.csv": root / "data" / "a.csv",
        "table.json": root / "table.json",
        "output.pickle": root / "output.pickle",
    }
    data, _ = write_manifest(files, key_store=ks, context=ctx)
    (root / MANIFEST_NAME).write_bytes(data)
    return {**files, MANIFEST_NAME: root / MANIFEST_NAME}


def test_valid_version_verifies(tmp_path: Path, key_store: KeyStore) -> None:
    files = make_version(tmp_path / "v0", key_store)
    vm = verify_manifest(files, key_store=key_store, expected_context=CTX)
    assert set(vm.entries) == {"data/a.csv", "table.json", "output.pickle"}
    assert vm.entries["output.pickle"].serializer == "pickle"


def test_attack_23_extra_unsigned_file(tmp_path: Path, key_store: KeyStore) -> None:
    files = make_version(tmp_path / "v0", key_store)
    extra = tmp_path / "v0" / "evil.pickle"
    extra.write_bytes(b"\x80\x04.")
    with pytest.raises(TamperedPayloadError, match="not covered"):
        verify_manifest({**files, "evil.pickle": extra}, key_store=key_store, expected_context=CTX)


def test_missing_and_modified_files(tmp_path: Path, key_store: KeyStore) -> None:
    files = make_version(tmp_path / "v0", key_store)
    without = {k: v for k, v in files.items() if k != "table.json"}
    with pytest.raises(TamperedPayloadError, match="missing"):
        verify_manifest(without, key_store=key_store, expected_context=CTX)
    files["table.json"].write_text('{"columns": ["b"]}')  # same size, other bytes
    with pytest.raises(TamperedPayloadError, match="signed blake3 digest"):
        verify_manifest(files, key_store=key_store, expected_context=CTX)
    # fast mode checks sizes, not digests
    verify_manifest(files, key_store=key_store, expected_context=CTX, deep=False)


def test_attack_11_mix_and_match_envelopes(tmp_path: Path, key_store: KeyStore) -> None:
    a = make_version(tmp_path / "a", key_store)
    b_root = tmp_path / "b"
    b = make_version(b_root, key_store)
    # same artifact context, another payload: swap b's envelope into a
    seal_to(b_root / "output.pickle", {"k": 2}, key_store=key_store, context=CTX)
    a["output.pickle"].write_bytes(b["output.pickle"].read_bytes())
    with pytest.raises(TamperedPayloadError):
        verify_manifest(a, key_store=key_store, expected_context=CTX)


def test_manifest_replayed_for_other_artifact(tmp_path: Path, key_store: KeyStore) -> None:
    files = make_version(tmp_path / "v0", key_store)
    with pytest.raises(ContextMismatchError):
        verify_manifest(
            files, key_store=key_store, expected_context={**CTX, "artifact": "another"}
        )
    with pytest.raises(ContextMismatchError):
        verify_manifest(files, key_store=key_store, expected_context={**CTX, "partition": "p1"})


def test_unsigned_and_empty_artifacts(tmp_path: Path, key_store: KeyStore) -> None:
    files = make_version(tmp_path / "v0", key_store)
    del files[MANIFEST_NAME]
    with pytest.raises(UnsignedPayloadError):
        verify_manifest(files, key_store=key_store, expected_context=CTX)
    with pytest.raises(ConfigurationError, match="empty"):
        write_manifest({}, key_store=key_store, context=CTX)


@pytest.mark.parametrize("name", ["../x", "/abs", "a//b", "nul\x00", "back\\slash"])
def test_attack_22_unsafe_names(tmp_path: Path, key_store: KeyStore, name: str) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UnsafePathError):
        write_manifest({name: f}, key_store=key_store, context=CTX)
    files = make_version(tmp_path / "v0", key_store)
    with pytest.raises(UnsafePathError):
        verify_manifest({**files, name: f}, key_store=key_store, expected_context=CTX)


def test_symlinked_file_refused(tmp_path: Path, key_store: KeyStore) -> None:
    files = make_version(tmp_path / "v0", key_store)
    target = files["table.json"]
    moved = tmp_path / "elsewhere.json"
    target.rename(moved)
    target.symlink_to(moved)
    with pytest.raises(UnsafePathError):
        verify_manifest(files, key_store=key_store, expected_context=CTX)
