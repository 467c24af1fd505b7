"""``ledger status`` / ``ledger migrate`` and ``--ledger`` on the commands that use the ledger,
against a real PostgreSQL."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.keys import KeyStore
from kit.cli import ENTITY, PROJECT, Env, run_json


def _statuses(doc: dict) -> dict[str, str]:
    return {f"{v['name']}:{v['version']}": v["status"] for v in doc["versions"]}


def test_migrate_then_audit_from_a_third_folder(env: Env, runner, pg_url: str, tmp_path: Path) -> None:
    for name in ("a", "a", "b"):
        env.publish(name)
    env.ks.ledger.note_seen("seen-only-by-a-reader", "prod", 3)
    # signed history (as the IO manager's writer and a reader leave it): 2 artifacts' sequences,
    # 3 manifests (one format 1), marks for latest and prod
    for key, n in ((f"{ENTITY}/{PROJECT}/a", 1), (f"{ENTITY}/{PROJECT}/a", 2), (f"{ENTITY}/{PROJECT}/b", 1)):
        seq = env.ks.ledger.allocate_sequence(key, floor=0)
        position = Position(seq, f"2024-05-01T12:00:0{n}.000000Z", hashlib.sha256(f"{key}{n}".encode()).hexdigest())
        env.ks.ledger.record_manifest(key, position.digest, position, version=f"v{n - 1}", source="writer")
        env.ks.ledger.advance_mark(key, "latest", position, source="writer")
    env.ks.ledger.advance_mark(f"{ENTITY}/{PROJECT}/b", "prod", position, source="reader")
    env.ks.ledger.record_manifest(f"{ENTITY}/{PROJECT}/b", "0" * 64, None, version="v9", source="reader")
    code, local = run_json(runner, "ledger", "status", "-k", str(env.keys), "--json")
    assert code == 0 and local["backend"] == "sqlite"
    assert (local["signatures"], local["artifacts"]) == (6, 2)
    sqlite_file = str(env.keys / "ledger.sqlite3")
    code, first = run_json(runner, "ledger", "migrate", "--from", sqlite_file, "--to", pg_url, "--json")
    assert code == 0, first
    assert (first["signatures_copied"], first["signatures_skipped"]) == (6, 0)
    history = ("sequences", "history_marks", "manifests")
    assert (local["sequences"], local["history_marks"], local["manifests"]) == (2, 3, 4)
    assert (first["sequences_raised"], first["history_marks_advanced"], first["manifests_copied"]) == (
        local["sequences"], local["history_marks"], local["manifests"],
    )
    code, again = run_json(runner, "ledger", "migrate", "--from", sqlite_file, "--to", pg_url, "--json")
    assert code == 0 and (again["signatures_copied"], again["signatures_skipped"]) == (0, 6)
    assert (again["sequences_raised"], again["history_marks_advanced"], again["manifests_copied"]) == (
        0, 0, 0,
    )
    code, shared = run_json(runner, "ledger", "status", "--ledger", pg_url, "--json")
    assert code == 0 and shared["backend"] == "postgresql" and shared["schema_version"] == 2
    assert (shared["signatures"], shared["artifacts"], shared["marks"]) == (
        6, 2, local["marks"],
    )
    assert [shared[n] for n in history] == [local[n] for n in history]
    # the shared ledger continues the writer's sequences: nothing handed out twice
    from dagster_wandb_secure.core.ledger_api import open_ledger

    shared_ledger = open_ledger(pg_url, tmp_path)
    key = f"{ENTITY}/{PROJECT}/a"
    assert shared_ledger.allocate_sequence(key, floor=0) == env.ks.ledger.allocate_sequence(key, floor=0)
    shared_ledger.close()
    # an auditor's folder with the public key only: the shared ledger vouches for every version
    auditor = KeyStore.open(tmp_path / "auditor-keys")
    auditor.import_public(env.ks.export_public(env.ks.primary().kid))
    args = ["audit", "-k", str(auditor.path), "--store-dir", str(env.store_dir), "--json"]
    _, alone = run_json(runner, *args)
    assert set(_statuses(alone).values()) == {"missing-from-ledger"}
    code, doc = run_json(runner, *args, "--ledger", pg_url)
    assert code == 0 and set(_statuses(doc).values()) == {"valid"}, doc
    # the registry writer moves latest back: audit with the shared ledger flags it
    env.store.move_alias(ENTITY, PROJECT, "a", "latest", "v0")
    code, doc = run_json(runner, *args, "--ledger", pg_url)
    assert "rolled-back" in _statuses(doc).values(), _statuses(doc)
    code, _ = run_json(runner, *args, "--ledger", pg_url, "--fail-on", "any")
    assert code == 1


def test_ledger_url_from_the_environment_and_never_printed(
    env: Env, runner, pg_url: str, monkeypatch
) -> None:
    with_password = pg_url.replace("postgres:@", "postgres:hunter2@")
    monkeypatch.setenv("DAGSTER_WANDB_SECURE_LEDGER", with_password)
    result = runner.invoke(__import__("dagster_wandb_secure.cli", fromlist=["app"]).app,
                           ["ledger", "status"])
    assert result.exit_code == 0, result.output
    assert "postgresql" in result.stdout and "hunter2" not in result.stdout
    bad = "postgresql://u:hunter2@/db?host=/nonexistent&connect_timeout=1"
    code, doc = run_json(runner, "ledger", "status", "--ledger", bad, "--json")
    assert code == 3 and doc["error"]["type"] == "LedgerUnavailableError"
    assert "hunter2" not in str(doc)
    code, doc = run_json(runner, "verify", "-k", str(env.keys), str(env.root), "--ledger", bad,
                         "--json")
    assert code == 3 and "hunter2" not in str(doc)
