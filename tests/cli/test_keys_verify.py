from __future__ import annotations

import json
import pickle
from datetime import timedelta
from pathlib import Path

from dagster_wandb_secure.core.keys import KeyStore
from kit.cli import Env, append_byte, make_writable, run, run_json


def test_keys_commands_end_to_end(tmp_path: Path, runner) -> None:
    ks = str(tmp_path / "keys")
    code, doc = run_json(runner, "keys", "init", "-k", ks)
    assert code == 0 and doc["schema"] == "dagster-wandb-secure/keys-init/v1"
    first = doc["kid"]
    code, doc = run_json(runner, "keys", "generate", "-k", ks, "--expires-in", "90d")
    assert code == 0 and doc["key"]["status"] == "verify-only" and doc["key"]["not_after"]
    staged = doc["kid"]
    assert run(runner, "keys", "promote", staged, "-k", ks).exit_code == 0
    code, doc = run_json(runner, "keys", "list", "-k", ks)
    status = {k["kid"]: k["status"] for k in doc["keys"]}
    assert status == {first: "verify-only", staged: "primary"}
    assert set(doc["keys"][0]) >= {"kid", "alg", "status", "created_at", "not_after",
                                   "fingerprint", "has_private", "origin", "revoked_reason"}
    code, doc = run_json(runner, "keys", "rotate", "-k", ks, "--alg", "hmac-sha256")
    assert code == 0 and doc["previous"] == staged
    assert run(runner, "keys", "retire", first, "-k", ks).exit_code == 0
    assert run(runner, "keys", "revoke", first, "-k", ks, "--reason", "test", "--yes").exit_code == 0
    # destroy: confirmation required; non-interactive without --yes is a usage error
    assert run(runner, "keys", "destroy", staged, "-k", ks).exit_code == 2
    assert run(runner, "keys", "destroy", staged, "-k", ks, "--yes").exit_code == 0
    final = {k.kid: k.status.value for k in KeyStore.open(ks).records()}
    assert final[first] == "revoked" and final[staged] == "destroyed"


def test_keys_errors_are_one_line_with_exit_codes(tmp_path: Path, runner) -> None:
    ks = str(tmp_path / "keys")
    missing = run(runner, "keys", "list", "-k", ks)
    assert missing.exit_code == 3 and missing.stderr.count("\n") == 1
    assert "KeyStoreError" in missing.stderr and "What to do" in missing.stderr
    run(runner, "keys", "init", "-k", ks)
    unknown = run(runner, "keys", "promote", "0123456789abcdef", "-k", ks)
    assert unknown.exit_code == 1 or unknown.exit_code == 3
    assert "0123456789abcdef" in unknown.stderr and "Traceback" not in unknown.output
    hostile = run(runner, "keys", "promote", "../../etc/passwd", "-k", ks)
    assert hostile.exit_code in (1, 3) and "Traceback" not in hostile.output
    assert run(runner, "keys", "generate", "-k", ks, "--alg", "none").exit_code == 2
    assert run(runner, "keys", "generate", "-k", ks, "--expires-in", "soon").exit_code == 2
    assert run(runner, "keys", "revoke", "x", "-k", ks).exit_code == 2  # --reason missing
    code, doc = run_json(runner, "keys", "promote", "0123456789abcdef", "-k", ks)
    assert doc["schema"] == "dagster-wandb-secure/error/v1" and doc["error"]["key_id"]
    assert run(runner, "--help").exit_code == 0
    for group in (["keys"], ["keys", "rotate"], ["audit"], ["adopt"], ["resign"], ["verify"]):
        assert run(runner, *group, "--help").exit_code == 0


def test_export_import_public_between_writer_and_reader(env: Env, runner, tmp_path: Path) -> None:
    av = env.publish("a")
    kid = env.ks.primary().kid
    bundle = tmp_path / "writer.pub"
    exported = run(runner, "keys", "export-public", kid, "-k", str(env.keys), "-o", str(bundle))
    assert exported.exit_code == 0
    reader = str(tmp_path / "reader-keys")
    folder = str(env.store.file_path(av, "output.pickle").parent)
    assert run(runner, "verify", folder, "-k", reader).exit_code == 3  # no key store yet
    run(runner, "keys", "init", "-k", reader, "--no-key")
    assert run(runner, "verify", folder, "-k", reader).exit_code == 1  # unknown key
    code, doc = run_json(runner, "keys", "import-public", str(bundle), "-k", reader)
    assert code == 0 and doc["kid"] == kid
    code, doc = run_json(runner, "verify", folder, "-k", reader, "--artifact", "a")
    assert code == 0 and doc["verdict"] == "valid" and doc["key_status"] == "verify-only"


def test_verify_and_inspect(env: Env, runner, marker: Path) -> None:
    from kit.payloads import reduce_os_system

    av = env.publish("a")
    path = env.store.file_path(av, "output.pickle")
    folder = str(path.parent)
    k = ["-k", str(env.keys)]
    code, doc = run_json(runner, "verify", str(path), *k, "--artifact", "a", "--type", "dataset")
    assert code == 0 and doc["header"]["context"]["artifact"] == "a" and doc["deep"] is True
    code, doc = run_json(runner, "inspect", str(path))
    assert code == 0 and doc["verified"] is False and doc["files"][0]["header"]["kid"]
    text = run(runner, "inspect", str(path)).stdout
    assert "UNVERIFIED" in text
    # attack 9/11 via verify: replay as another artifact
    code, doc = run_json(runner, "verify", str(path), *k, "--artifact", "b")
    assert code == 1 and doc["error"]["type"] == "ContextMismatchError"
    # attack 8: envelope stripped, raw malicious pickle stored: never loaded
    make_writable(path)
    path.write_bytes(reduce_os_system(marker))
    code, doc = run_json(runner, "verify", str(path), *k)
    assert code == 1 and doc["error"]["type"] == "UnsignedPayloadError"
    code, doc = run_json(runner, "verify", folder, *k)
    assert code == 1 and doc["error"]["type"] == "TamperedPayloadError"
    code, doc = run_json(runner, "inspect", folder)
    assert code == 0 and {f["kind"] for f in doc["files"]} >= {"raw pickle stream"}
    assert not marker.exists()


def test_attack_11_mix_and_match_between_versions(env: Env, runner) -> None:
    a0 = env.publish("a", {"v": 0})
    a1 = env.publish("a", {"v": 1})
    p0, p1 = env.store.file_path(a0, "output.pickle"), env.store.file_path(a1, "output.pickle")
    make_writable(p1)
    p1.write_bytes(p0.read_bytes())
    code, doc = run_json(runner, "verify", str(p1.parent), "-k", str(env.keys), "--fast")
    assert code == 1 and doc["error"]["type"] == "TamperedPayloadError"
    code, doc = run_json(runner, "audit", "-k", str(env.keys), "--store-dir", str(env.store_dir))
    assert [v["status"] for v in doc["versions"]] == ["valid", "tampered"]


def test_attacks_12_to_14_rotation_revocation_expiry(env: Env, runner) -> None:
    old_kid = env.ks.primary().kid
    old = env.publish("old")
    new_kid = env.ks.rotate()
    new = env.publish("new")
    folder_old = str(env.store.file_path(old, "output.pickle").parent)
    folder_new = str(env.store.file_path(new, "output.pickle").parent)
    k = ["-k", str(env.keys)]
    # 14: old artifacts still verify with the kept key; new ones use only the new primary
    code, doc = run_json(runner, "verify", folder_old, *k)
    assert code == 0 and doc["header"]["kid"] == old_kid
    code, doc = run_json(runner, "verify", folder_new, *k)
    assert code == 0 and doc["header"]["kid"] == new_kid
    # 12: retired key past its grace period verifies nothing
    ks_later = KeyStore.open(env.keys, clock=lambda: __import__("datetime").datetime.now(
        __import__("datetime").UTC) + timedelta(days=400))
    env.ks.rotate(grace=timedelta(days=30))  # new_kid retired with a 30-day grace
    from dagster_wandb_secure.maintenance.audit import Status, audit_store

    statuses = {e.name: e.status for e in audit_store(env.store, ks_later).entries}
    assert statuses["new"] is Status.EXPIRED_KEY and statuses["old"] is Status.VALID
    # 12: revoked key; 14: destroyed key verifies nothing
    assert run(runner, "keys", "revoke", old_kid, *k, "--reason", "leak", "--yes").exit_code == 0
    code, doc = run_json(runner, "verify", folder_old, *k)
    assert code == 1 and doc["error"]["type"] == "RevokedKeyError"
    assert run(runner, "keys", "destroy", new_kid, *k, "--yes").exit_code == 0
    code, doc = run_json(runner, "verify", folder_new, *k)
    assert code == 1 and doc["error"]["type"] == "RevokedKeyError"


def test_attack_13_signed_after_expiry(env: Env) -> None:
    from datetime import UTC, datetime

    from dagster_wandb_secure.maintenance.audit import Status, audit_store

    kid = env.ks.rotate(expires_in=timedelta(days=1))
    future = KeyStore.open(env.keys, clock=lambda: datetime.now(UTC) + timedelta(days=2))
    # A key that expired cannot sign at all...
    import pytest

    from dagster_wandb_secure.core.errors import NoSigningKeyError

    with pytest.raises(NoSigningKeyError):
        future.signer()
    env.publish("a")  # signed now, inside the key's lifetime
    report = audit_store(env.store, future)
    # primary past not_after: it verifies nothing any more, whatever signed_at says (issue 11)
    assert report.entries[0].status is Status.EXPIRED_KEY and report.entries[0].key_id == kid


def test_attack_10_rollback_via_audit(env: Env, runner) -> None:
    env.publish("m")
    env.publish("m")
    env.store.move_alias("team", "proj", "m", "latest", 0)
    code, doc = run_json(runner, "audit", "-k", str(env.keys), "--store-dir", str(env.store_dir),
                         "--fail-on", "rolled-back")
    assert code == 1 and doc["versions"][0]["status"] == "rolled-back"


def test_tampered_fast_audit_by_size(env: Env) -> None:
    from dagster_wandb_secure.maintenance.audit import Status, audit_store

    av = env.publish("a")
    append_byte(env.store.file_path(av, "output.pickle"))
    assert audit_store(env.store, env.ks).entries[0].status is Status.TAMPERED
    assert pickle  # imported for builders
    assert json
