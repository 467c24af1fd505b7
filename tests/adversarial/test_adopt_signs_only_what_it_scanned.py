"""Guarantee: ``adopt`` signs exactly the bytes it scanned, for every file of the version.

``adopt`` used to scan the files other than the payload, then open each again to publish it (and
files that did not look like pickles at scan time were never checked again): a malicious pickle
swapped in between was signed into the adopted version, and readers would trust it. Now every
file is read once into memory, compared with the digest the scan recorded, re-scanned if it is
or looks like a pickle, and published from a private copy of those bytes (``publish_signed``
checks ``expected_digests`` after copying). A file that changed is a TamperedPayloadError.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest

import dagster_wandb_secure.maintenance.adopt as adopt_module
from dagster_wandb_secure.core.errors import TamperedPayloadError
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.maintenance.adopt import adopt_version, find_candidates
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit import payloads
from kit.cli import ENTITY, PROJECT, Env, make_writable

BENIGN = b"a plain configuration file\n"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    keys = tmp_path / "keys"
    ks = KeyStore.open(keys)
    ks.generate("ed25519")
    e = Env(tmp_path, keys, tmp_path / "store", ks, LocalArtifactStore(tmp_path / "store"))
    staging = tmp_path / "legacy"
    staging.mkdir()
    (staging / "output.pickle").write_bytes(pickle.dumps({"legacy": 1}))
    (staging / "config.txt").write_bytes(BENIGN)
    e.store.publish(entity=ENTITY, project=PROJECT, name="old", type="dataset",
                    files={"output.pickle": staging / "output.pickle",
                           "config.txt": staging / "config.txt"})
    return e


def _swap(env: Env, rel: str, data: bytes) -> None:
    av = env.store.resolve(ENTITY, PROJECT, "old", version=0)
    path = env.store.file_path(av, rel)
    make_writable(path)
    path.write_bytes(data)


def test_a_file_swapped_after_the_scan_is_refused(env: Env, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    (cand,) = find_candidates(env.store, name="old")
    assert not cand.flagged  # the scan saw a clean pickle and a text file
    _swap(env, "config.txt", payloads.reduce_os_system(marker))
    with pytest.raises(TamperedPayloadError, match="config.txt changed since it was scanned"):
        adopt_version(env.store, env.ks, cand)
    assert [av.version for av in env.store.list_versions(name="old")] == [0]  # nothing published
    assert not marker.exists()


def test_a_file_swapped_during_the_publish_is_never_signed(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap happens at the last moment before signing (the hook point is ``publish_signed``
    as adopt calls it): the signed version must hold the scanned bytes, not the swapped ones."""
    marker = tmp_path / "PWNED"
    evil = payloads.reduce_os_system(marker)
    real = adopt_module.publish_signed

    def swapping(*args: Any, **kwargs: Any) -> Any:
        _swap(env, "config.txt", evil)
        return real(*args, **kwargs)

    monkeypatch.setattr(adopt_module, "publish_signed", swapping)
    (cand,) = find_candidates(env.store, name="old")
    new = adopt_version(env.store, env.ks, cand)
    signed = env.store.file_path(new, "config.txt").read_bytes()
    assert signed == BENIGN
    for rel in [e.path for e in env.store.list_files(new)]:
        assert evil not in env.store.file_path(new, rel).read_bytes()
    assert not marker.exists()


def test_a_file_planted_after_the_scan_is_refused(env: Env) -> None:
    (cand,) = find_candidates(env.store, name="old")
    av = env.store.resolve(ENTITY, PROJECT, "old", version=0)
    planted = av.root / "later.bin"
    os.chmod(av.root, 0o755)
    planted.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(TamperedPayloadError, match="appeared or vanished since the scan"):
        adopt_version(env.store, env.ks, cand)
