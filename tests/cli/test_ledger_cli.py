"""``ledger status`` / ``ledger migrate`` and ``--ledger`` on the commands that use the ledger,
against a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from dagster_wandb_secure.core.keys import KeyStore
from kit.cli import ENTITY, PROJECT, Env, run_json


def _statuses(doc: dict) -> dict[str, str]:
    return {f"{v['name']}:{v['version']}": v["status"] for v in doc["versions"]}


def test_migrate_then_audit_from_a_third_folder(env: Env, runner, pg_url: str, tmp_path: Path) -> None:
    for name in ("a", "a", "b"):
        env.publish(name)
    env.ks.ledger.note_seen("seen-only-by-a-reader", "prod", 3)
    code, local = run_json(runner, "ledger", "status", "-k", str(env.keys), "--json")
    assert code == 0 and local["backend"] == "sqlite"
    assert (local["signatures"], local["artifacts"]) == (6, 2)
    sqlite_file = str(env.keys / "ledger.sqlite3")
    code, first = run_json(runner, "ledger", "migrate", "--from", sqlite_file, "--to", pg_url, "--json")
    assert code == 0, first
    assert (first["signatures_copied"], first["signatures_skipped"]) == (6, 0)
    code, again = run_json(runner, "ledger", "migrate", "--from", sqlite_file, "--to", pg_url, "--json")
    assert code == 0 and (again["signatures_copied"], again["signatures_skipped"]) == (0, 6)
    code, shared = run_json(runner, "ledger", "status", "--ledger", pg_url, "--json")
    assert code == 0 and shared["backend"] == "postgresql" and shared["schema_version"] == 1
    assert (shared["signatures"], shared["artifacts"], shared["marks"]) == (
        6, 2, local["marks"],
    )
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
