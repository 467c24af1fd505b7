from __future__ import annotations

import pickle
from datetime import timedelta
from pathlib import Path

from dagster_wandb_secure.core.envelope import unseal_from
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from dagster_wandb_secure.maintenance.audit import Status, audit_store
from kit.cli import Env, make_writable, run, run_json
from kit.payloads import reduce_os_system


def _base(env: Env) -> list[str]:
    return ["-k", str(env.keys), "--store-dir", str(env.store_dir)]


def test_adopt_clean_legacy_pickle_after_confirmation(env: Env, runner) -> None:
    env.publish_legacy("legacy", pickle.dumps({"a": [1, 2, 3]}, protocol=4))
    code, doc = run_json(runner, "adopt", *_base(env), "--scan-only")
    assert code == 0 and doc["candidates"][0]["outcome"] == "scanned"
    assert doc["candidates"][0]["flagged"] is False
    # without --yes and without a terminal: usage error, nothing adopted
    assert run(runner, "adopt", *_base(env)).exit_code == 2
    code, doc = run_json(runner, "adopt", *_base(env), "--yes")
    assert code == 0 and doc["candidates"][0]["outcome"] == "adopted"
    new = env.store.resolve("team", "proj", "legacy")
    assert new.version == 1 and MANIFEST_NAME in new.files
    row = [r for r in env.ks.ledger.rows(artifact="legacy")]
    assert {r.origin for r in row} == {"adopted"}
    obj = unseal_from(env.store.file_path(new, "output.pickle"), key_store=env.ks,
                      expected_context={"artifact": "legacy", "asset_key": "legacy"})
    assert obj == {"a": [1, 2, 3]}
    statuses = [e.status for e in audit_store(env.store, env.ks).entries]
    assert statuses == [Status.UNSIGNED, Status.ADOPTED]


def test_adopt_refuses_flagged_pickle_without_loud_override(
    env: Env, runner, marker: Path
) -> None:
    env.publish_legacy("evil", reduce_os_system(marker))
    code, doc = run_json(runner, "adopt", *_base(env), "--yes")
    assert code == 1 and doc["candidates"][0]["outcome"] == "refused-flagged"
    assert doc["candidates"][0]["flagged"] is True
    assert any("system" in f for s in doc["candidates"][0]["scans"] for f in s["findings"])
    assert env.store.resolve("team", "proj", "evil").version == 0
    code, doc = run_json(runner, "adopt", *_base(env), "--yes",
                         "--i-accept-the-risk-of-running-flagged-pickles")
    assert code == 0 and doc["candidates"][0]["outcome"] == "adopted"
    assert not marker.exists()


def test_resign_from_retired_key(env: Env, runner) -> None:
    old = env.ks.primary().kid
    env.publish("a", {"x": 1})
    env.publish("b", {"y": 2})
    env.ks.rotate(grace=timedelta(days=1))
    code, doc = run_json(runner, "resign", "--from", old, *_base(env))
    assert code == 0, doc
    assert [r["outcome"] for r in doc["results"]] == ["resigned", "resigned"]
    assert {r["check"] for r in doc["results"]} == {"verified"}
    report = audit_store(env.store, env.ks)
    latest = {e.name: e for e in report.entries if "latest" in e.aliases}
    assert all(e.status is Status.VALID and e.key_id == doc["to"] for e in latest.values())
    assert {e.origin for e in latest.values()} == {"resigned"}
    got = unseal_from(env.store.file_path(env.store.resolve("team", "proj", "a"), "output.pickle"),
                      key_store=env.ks, expected_context={"artifact": "a"})
    assert got == {"x": 1}


def test_resign_from_revoked_key_refuses_tampered_data(env: Env, runner) -> None:
    old = env.ks.primary().kid
    env.publish("good", {"x": 1})
    bad = env.publish("bad", b"A" * 100)
    env.ks.rotate()
    env.ks.revoke(old, "key leaked")
    p = env.store.file_path(bad, "output.pickle")
    make_writable(p)
    data = bytearray(p.read_bytes())
    data[-1] ^= 1  # same size: only the ledger digest check can catch it
    p.write_bytes(bytes(data))
    result = run(runner, "resign", "--from", old, *_base(env), "--json")
    import json

    doc = json.loads(result.stdout)
    assert result.exit_code == 1
    outcome = {r["artifact"].split("/")[-1]: r for r in doc["results"]}
    assert outcome["good"]["outcome"] == "resigned" and outcome["good"]["check"] == "ledger-digest"
    assert outcome["bad"]["outcome"] == "refused" and "ledger" in outcome["bad"]["reason"]
    assert env.store.resolve("team", "proj", "bad").version == 0  # nothing published
