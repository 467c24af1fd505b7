"""Concurrency (SECURITY.md attack catalogue item 16).

Four writer processes materialize assets through the IO manager (two of them write the *same*
artifact, so version numbers are contended) while another process rotates keys and another runs
``audit`` over the store, for a bounded time. Afterwards: no lost version (everything a writer
saw published is in the store with its value), no duplicate version numbers, no duplicate key id,
no torn file (the key store parses, every version verifies), and every artifact verifies with the
key the ledger records for it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.envelope import read_header_unverified, unseal_from
from dagster_wandb_secure.core.keys import KeyStatus, KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME, verify_manifest
from dagster_wandb_secure.stores.local import LocalArtifactStore

WRITER = r"""
import json, sys, time
from dagster import asset, materialize
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager
from dagster_wandb_secure.stores.local import LocalArtifactStore
root, writer, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
name = "shared" if writer in ("0", "1") else f"own{writer}"
iom = WandbArtifactsIOManager(key_store=f"{root}/keys", store="local",
                              local_store_dir=f"{root}/store", base_dir=f"{root}/base-{writer}",
                              entity="team", project="proj")
print("ready", flush=True)
sys.stdin.readline()
deadline = time.monotonic() + seconds
i = 0
while time.monotonic() < deadline:
    i += 1
    value = {"writer": writer, "i": i}

    @asset(name=name, io_manager_key="m")
    def out():
        return value

    result = materialize([out], resources={"m": iom}, raise_on_error=False)
    if not result.success:
        err = result.get_step_failure_events()[0].event_specific_data.error
        while err.cause is not None:
            err = err.cause
        print(json.dumps({"failed": err.message[:500]}), flush=True)
        continue
    meta = result.asset_materializations_for_node(name)[-1].metadata
    print(json.dumps({"name": name, "version": meta["wandb_artifact_version"].value,
                      "kid": meta["signing_key_id"].value, "value": value}), flush=True)
"""

ROTATOR = r"""
import json, sys, time
from dagster_wandb_secure.core.keys import KeyStore
keys, seconds = sys.argv[1], float(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
deadline = time.monotonic() + seconds
ks = KeyStore.open(keys)
while time.monotonic() < deadline:
    print(json.dumps({"kid": ks.rotate()}), flush=True)
    time.sleep(0.3)
"""

AUDITOR = r"""
import json, sys, time
from typer.testing import CliRunner
from dagster_wandb_secure.cli import app
keys, store, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
runner = CliRunner()
print("ready", flush=True)
sys.stdin.readline()
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    r = runner.invoke(app, ["audit", "-k", keys, "--store-dir", store, "--json"])
    print(json.dumps({"exit": r.exit_code, "out": r.stdout}), flush=True)
"""


def _start(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "ready", proc.stderr.read() if proc.stderr else line
    return proc


def _lines(proc: subprocess.Popen[str], timeout: float) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def run_storm(tmp_path: Path, alg: str, seconds: float) -> None:
    keys = tmp_path / "keys"
    ks = KeyStore.open(keys)
    first = ks.generate(alg)
    store_dir = tmp_path / "store"
    LocalArtifactStore(store_dir)  # exists before the auditor's first look
    writers = [_start(WRITER, str(tmp_path), str(i), str(seconds)) for i in range(4)]
    rotator = _start(ROTATOR, str(keys), str(seconds))
    auditor = _start(AUDITOR, str(keys), str(store_dir), str(seconds))
    everyone = [*writers, rotator, auditor]
    for proc in everyone:  # start together
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    budget = seconds + 120
    written = [row for w in writers for row in _lines(w, budget)]
    published = [row for row in written if "failed" not in row]
    failed = [row["failed"] for row in written if "failed" in row]
    rotated = [row["kid"] for row in _lines(rotator, budget)]
    audits = _lines(auditor, budget)

    assert published and rotated and audits
    # rotation needs no downtime: no publish fails while keys rotate
    assert not failed, failed[:3]
    # no duplicate version numbers, no lost version
    keys_seen = [(p["name"], p["version"]) for p in published]
    assert len(keys_seen) == len(set(keys_seen)), "two writers got the same version"
    store = LocalArtifactStore(store_dir)
    versions = {(av.name, av.version_label): av for av in store.list_versions()}
    assert set(keys_seen) == set(versions), "a published version is missing (or unexplained)"
    shared = sorted(int(v[1:]) for n, v in keys_seen if n == "shared")
    assert shared == list(range(len(shared))), "version numbers have a gap"
    # no duplicate key id, no torn key store, every rotation kept
    ks = KeyStore.open(keys, create=False)
    records = ks.records()
    kids = [r.kid for r in records]
    assert len(kids) == len(set(kids))
    assert {first, *rotated} <= set(kids)
    assert sum(r.status is KeyStatus.PRIMARY for r in records) == 1
    # every artifact verifies, with the key the ledger records for it
    ledger = ks.ledger
    for p in published:
        av = versions[(p["name"], p["version"])]
        ctx = {"artifact": av.name, "type": "artifact", "partition": None, "asset_key": av.name}
        files = {rel: store.file_path(av, rel) for rel in av.files}
        verify_manifest(files, key_store=ks, expected_context=ctx)
        assert unseal_from(files["output.pickle"], key_store=ks, expected_context=ctx) == p["value"]
        payload_kid = read_header_unverified(files["output.pickle"])["header"]["kid"]
        manifest_kid = read_header_unverified(files[MANIFEST_NAME])["header"]["kid"]
        # the reported key is the manifest's; a rotation between the two seals may leave the
        # payload signed by the previous primary (still verify-only, so still valid)
        assert manifest_kid == p["kid"]
        rows = [r for r in ledger.rows(artifact=av.name) if r.artifact_version == p["version"]]
        assert rows, f"the ledger does not know {av.name}:{p['version']}"
        assert {r.key_id for r in rows} == {payload_kid, manifest_kid}, (
            "the ledger records another key"
        )
        assert MANIFEST_NAME in files
    # the audits that ran meanwhile never saw anything but valid versions
    # (a version published but not yet attached in the ledger may show as missing-from-ledger)
    statuses: set[str] = set()
    for a in audits:
        assert a["exit"] == 0, a["out"][-2000:]
        statuses |= {v["status"] for v in json.loads(a["out"])["versions"]}
    assert statuses <= {"valid", "missing-from-ledger"}, statuses


def test_attack_16_writers_rotation_and_audit_at_once(tmp_path: Path, alg: str) -> None:
    start = time.monotonic()
    run_storm(tmp_path, alg, seconds=4.0)
    assert time.monotonic() - start < 150


@pytest.mark.slow
def test_attack_16_long_storm(tmp_path: Path, alg: str) -> None:
    run_storm(tmp_path, alg, seconds=45.0)


def test_attack_16_rotation_mid_publish(
    tmp_path: Path, alg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic form of the race the storm hits: the object rotates the key store while
    it is being pickled, i.e. after the payload's signer was chosen, before the manifest."""
    from dagster import asset, materialize
    from dagster_wandb_secure.io_manager import WandbArtifactsIOManager

    monkeypatch.chdir(tmp_path)
    keys = tmp_path / "keys"
    KeyStore.open(keys).generate(alg)

    @asset(io_manager_key="m")
    def rotating() -> RotateWhilePickled:
        return RotateWhilePickled(str(keys))

    iom = WandbArtifactsIOManager(
        key_store=str(keys),
        store="local",
        local_store_dir=str(tmp_path / "store"),
        base_dir=str(tmp_path),
        entity="team",
        project="proj",
    )
    assert materialize([rotating], resources={"m": iom}).success


class RotateWhilePickled:
    def __init__(self, keys: str) -> None:
        self.keys = keys

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        KeyStore.open(self.keys).rotate()
        return (str, ("rotated",))
