from __future__ import annotations

import json
import re
from pathlib import Path

from dagster_wandb_secure.maintenance.audit import AUDIT_SCHEMA, Status, audit_store
from kit.cli import Env, build_every_status, flip_last_byte, run, run_json

ENTRY_KEYS = {
    "entity", "project", "name", "version", "aliases", "type", "serializer", "key_id", "alg",
    "signed_at", "digest", "status", "origin", "reason", "error_type", "created_at",
    "sequence", "manifest_digest", "parent", "resigns",
}
TOP_KEYS = {
    "schema", "generated_at", "key_store", "store", "mode", "elapsed_s", "summary", "keys",
    "versions", "fail_on", "failed", "ok", "verdict", "payloads_rehashed", "needs_attention",
    "registry_links",
}


def _by_name(versions: list[dict]) -> dict[tuple[str, str], dict]:
    return {(v["name"], v["version"]): v for v in versions}


def test_every_status_in_one_store(env: Env, runner) -> None:
    expected = build_every_status(env)
    code, doc = run_json(
        runner, "audit", "-k", str(env.keys), "--store-dir", str(env.store_dir), "--fail-on", "none"
    )
    assert code == 0, doc
    got = _by_name(doc["versions"])
    assert got[("rolled-back", "v0")]["status"] == "rolled-back"
    assert got[("rolled-back", "v1")]["status"] == "valid"
    assert got[("adopted", "v0")]["status"] == "unsigned"
    assert got[("adopted", "v1")]["status"] == "adopted"
    assert got[("adopted", "v1")]["origin"] == "adopted"
    for name, status in expected.items():
        newest = max(
            (v for (n, _), v in got.items() if n == name), key=lambda v: int(v["version"][1:])
        )
        if name == "rolled-back":
            continue
        assert newest["status"] == status, (name, newest)
    counts = doc["summary"]["by_status"]
    assert set(counts) == {s.value for s in Status}
    for status in set(expected.values()):
        assert counts[status] >= 1, status
    # one-line typed reasons name what went wrong
    assert "revoked" in got[("revoked-key", "v0")]["reason"]
    assert got[("unknown-key", "v0")]["error_type"] == "UnknownKeyError"
    assert got[("tampered", "v0")]["key_id"]  # claimed key id shown even when it failed


def test_json_schema_is_stable(env: Env, runner) -> None:
    env.publish("a")
    code, doc = run_json(runner, "audit", "-k", str(env.keys), "--store-dir", str(env.store_dir))
    assert code == 0
    assert doc["schema"] == AUDIT_SCHEMA
    assert set(doc) == TOP_KEYS
    assert set(doc["summary"]) == {"total", "by_status", "by_key"}
    assert set(doc["versions"][0]) == ENTRY_KEYS
    assert doc["mode"] == "deep" and doc["ok"] is True and doc["failed"] == 0
    assert doc["payloads_rehashed"] is True and doc["needs_attention"] == []


def test_fast_mode_skips_hashing_deep_mode_catches_a_flipped_payload_byte(env: Env) -> None:
    av = env.publish("a", b"x" * 1000)
    flip_last_byte(env.path_of(av, "output.pickle"))
    fast = audit_store(env.store, env.ks, deep=False)
    deep = audit_store(env.store, env.ks, deep=True)
    assert fast.entries[0].status is Status.SIGNATURE_OK  # same size: never called valid
    assert deep.entries[0].status is Status.TAMPERED


def test_fail_on_exit_codes(env: Env, runner) -> None:
    env.publish("a")
    env.publish_legacy("old", b"\x80\x04K\x01.")
    base = ["audit", "-k", str(env.keys), "--store-dir", str(env.store_dir)]
    assert run(runner, *base).exit_code == 1  # default: anything but valid/adopted fails
    assert run(runner, *base, "--fail-on", "none").exit_code == 0
    assert run(runner, *base, "--fail-on", "tampered").exit_code == 0
    result = run(runner, *base, "--fail-on", "unsigned")
    assert result.exit_code == 1
    assert "unsigned: 1" in result.stderr
    assert run(runner, *base, "--fail-on", "any").exit_code == 1
    assert run(runner, *base, "--fail-on", "tampered,unsigned").exit_code == 1
    bad = run(runner, *base, "--fail-on", "bogus")
    assert bad.exit_code == 2 and "not a status" in bad.stderr
    assert run(runner, *base, "--format", "xml").exit_code == 2
    missing = run(runner, "audit", "-k", str(env.root / "nope"), "--store-dir", str(env.store_dir))
    assert missing.exit_code == 3
    assert missing.stderr.startswith("error: KeyStoreError") and "Traceback" not in missing.output
    code, doc = run_json(runner, *base, "--fail-on", "unsigned")
    assert code == 1 and doc["ok"] is False and doc["failed"] == 1


def test_html_report_is_self_contained(env: Env, runner, tmp_path: Path) -> None:
    build_every_status(env)
    out = tmp_path / "report.html"
    result = run(runner, "audit", "-k", str(env.keys), "--store-dir", str(env.store_dir),
                 "--format", "html", "-o", str(out), "--fail-on", "none")
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>")
    # no external asset of any kind (the SVG namespace URI is an identifier, not a fetch)
    stripped = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"https?://", stripped)
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=", stripped)
    assert "<svg" in html and 'data-status="tampered"' in html
    for status in ("valid", "tampered", "unsigned", "adopted", "rolled-back"):
        assert f'data-status="{status}"' in html
    summary = re.search(r'id="summary-data">(.*?)</script>', html).group(1)
    assert json.loads(summary)["total"] >= 10


def test_html_escapes_untrusted_text(env: Env) -> None:
    from dagster_wandb_secure.maintenance.report import render_html

    env.publish("a")
    report = audit_store(env.store, env.ks)
    report.entries[0].reason = "<script>alert(1)</script>"
    html = render_html(report)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_markdown_and_table(env: Env, runner, tmp_path: Path) -> None:
    env.publish("a")
    base = ["audit", "-k", str(env.keys), "--store-dir", str(env.store_dir)]
    md = run(runner, *base, "--format", "markdown")
    assert md.exit_code == 0 and "| valid | 1 |" in md.stdout
    table = run(runner, *base)
    assert table.exit_code == 0 and "valid" in table.stdout and "a:v0" in table.stdout
    assert "entity: team   project: proj" in table.stdout


def test_progress_bar_on_a_terminal_reports_the_same(env: Env, runner, monkeypatch) -> None:
    from rich.console import Console

    import dagster_wandb_secure.cli.audit as cli_audit

    env.publish("a")
    env.publish("b")
    ticks: list[tuple[int, int]] = []
    real_bar = cli_audit._progress_bar

    def spy_bar(stack):  # type: ignore[no-untyped-def]
        tick = real_bar(stack)

        def spy(done: int, total: int) -> None:
            ticks.append((done, total))
            tick(done, total)

        return spy

    monkeypatch.setattr(cli_audit, "err_console", lambda: Console(stderr=True, force_terminal=True))
    monkeypatch.setattr(cli_audit, "_progress_bar", spy_bar)
    base = ["audit", "-k", str(env.keys), "--store-dir", str(env.store_dir)]
    result = run(runner, *base)
    assert result.exit_code == 0 and "b:v0" in result.stdout
    assert ticks and ticks[-1] == (2, 2)
    ticks.clear()
    assert run(runner, *base, "--no-progress").exit_code == 0
    assert not ticks


def test_the_progress_bar_starts_no_thread(env: Env, runner, monkeypatch) -> None:
    """A thread running beside the audit keeps it off forked worker processes
    (``audit._fork_is_safe``): the bar is redrawn by its updates, not by rich's refresh thread."""
    import threading

    from rich.console import Console

    import dagster_wandb_secure.cli.audit as cli_audit

    env.publish("a")
    started: list[set[str]] = []
    real_audit = cli_audit.audit_store
    before: set[threading.Thread] = set()

    def spy_audit(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append({t.name for t in set(threading.enumerate()) - before})
        return real_audit(*args, **kwargs)

    monkeypatch.setattr(cli_audit, "err_console", lambda: Console(stderr=True, force_terminal=True))
    monkeypatch.setattr(cli_audit, "audit_store", spy_audit)
    before.update(threading.enumerate())
    result = run(runner, "audit", "-k", str(env.keys), "--store-dir", str(env.store_dir))
    assert result.exit_code == 0 and "a:v0" in result.stdout
    assert started == [set()]
