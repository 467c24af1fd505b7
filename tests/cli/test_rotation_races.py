"""Attacks 15 and 16: two rotations at once, and SIGKILL at any step of key operations."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from dagster_wandb_secure.core.envelope import seal, verify_bytes
from dagster_wandb_secure.core.keys import KeyStore

CLI = [sys.executable, "-m", "dagster_wandb_secure.cli"]

CHURN = r"""
import sys
from datetime import timedelta
from dagster_wandb_secure.core.keys import KeyStore
ks = KeyStore.open(sys.argv[1])
protected = set(sys.argv[2:])
print("ready", flush=True)
i = 0
while True:
    i += 1
    kid = ks.generate("ed25519" if i % 2 else "hmac-sha256", expires_in=timedelta(days=9))
    ks.rotate()
    ks.promote(kid)
    ks.revoke(kid if i % 3 else ks.rotate(), "churn")
    for rec in ks.records():
        if rec.kid not in protected and rec.status.value == "revoked":
            ks.destroy(rec.kid)
"""


def test_two_rotations_at_once_one_wins_nothing_lost(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ks = KeyStore.open(keys)
    first = ks.generate("ed25519")
    env = dict(os.environ)
    procs = [
        subprocess.Popen([*CLI, "keys", "rotate", "-k", str(keys), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    kids = [json.loads(out)["kid"] for out, _ in outs]
    assert len(set(kids)) == 2
    records = {r.kid: r for r in KeyStore.open(keys).records()}
    assert set(records) == {first, *kids}  # nothing lost, no duplicates
    primaries = [k for k, r in records.items() if r.status.value == "primary"]
    assert len(primaries) == 1 and primaries[0] in kids


def test_sigkill_at_any_step_leaves_a_loadable_store_that_verifies(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ks = KeyStore.open(keys)
    base = ks.generate("ed25519")
    envelope = seal({"before": True}, key_store=ks, serializer="json",
                     context={"artifact": "a"}, record=False)
    rng = random.Random(4)
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", CHURN, str(keys), base],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        after = KeyStore.open(keys)  # always loads
        records = after.records()
        assert base in {r.kid for r in records}
        assert len({r.kid for r in records}) == len(records)
        assert sum(r.status.value == "primary" for r in records) <= 1
        header, _ = verify_bytes(envelope, key_store=after, expected_context={"artifact": "a"})
        assert header.kid == base
        # and the CLI reads it too
        out = subprocess.run([*CLI, "keys", "list", "-k", str(keys), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert base in {k["kid"] for k in json.loads(out.stdout)["keys"]}
