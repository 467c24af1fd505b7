"""Guarantee: no name in the audit report can disable its filter script or run a script of its own.

The report embeds a JSON summary in a ``<script type="application/json">`` element and only
escaped ``</``: a key id ``<!--<script>`` switched the HTML parser into the "double escaped"
script state, so the JSON element swallowed the rest of the page, the filter script included.
Now ``script_json`` writes ``<``, ``>``, ``&`` and U+2028/2029 as ``\\uXXXX``. The report is
rendered from hostile names and opened in headless Chromium (``--dump-dom``: the DOM after the
page's scripts ran): the filter script must have filled in its counter and hidden rows, and no
injected script may have run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.maintenance.audit import Status, audit_store
from dagster_wandb_secure.maintenance.report import render_html, script_json
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.cli import Env

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome")) if p), None)
INJECT = "<script>document.body.setAttribute('data-pwned','1')</script>"
HOSTILE_KEY_IDS = ["<!--<script>", "</script>" + INJECT, "k\u2028" + INJECT]
HOSTILE_NAMES = ["</script>" + INJECT, "<!--", "x</SCRIPT ><script>"]


def _report_html(tmp_path: Path) -> str:
    keys = tmp_path / "keys"
    ks = KeyStore.open(keys)
    ks.generate("ed25519")
    env = Env(tmp_path, keys, tmp_path / "store", ks, LocalArtifactStore(tmp_path / "store"))
    for i in range(len(HOSTILE_KEY_IDS)):
        env.publish(f"a{i}")
    env.publish("ok")
    report = audit_store(env.store, ks)
    for entry, kid, name in zip(report.entries, HOSTILE_KEY_IDS, HOSTILE_NAMES, strict=False):
        entry.key_id, entry.name, entry.status = kid, name, Status.TAMPERED
        entry.reason = INJECT
    report.keys.append({"kid": "<!--<script>", "alg": INJECT, "status": "active"})
    return render_html(report)


def test_embedded_json_cannot_end_or_change_its_script_element() -> None:
    doc = {"by_key": {k: {"tampered": 1} for k in HOSTILE_KEY_IDS}, "n": HOSTILE_NAMES}
    text = script_json(doc)
    assert not re.search(r"[<>&\u2028\u2029]", text)
    assert json.loads(text) == doc


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_the_filter_script_runs_and_no_injected_script_does(tmp_path: Path) -> None:
    html = _report_html(tmp_path)
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    assert CHROMIUM is not None
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-extensions", "--user-data-dir=" + str(tmp_path / "chrome-profile"),
         "--dump-dom", page.as_uri() + "#status=valid"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    dom = result.stdout
    assert "<table" in dom, result.stderr[-2000:]
    # the filter script ran to its end: it wrote the counter and applied #status=valid
    total = len(re.findall(r"<tr data-status=", dom))
    assert total == len(HOSTILE_KEY_IDS) + 1
    assert re.search(rf'id="count">1 of {total} versions shown<', dom), dom[-3000:]
    assert dom.count('style="display: none;"') == len(HOSTILE_KEY_IDS)
    # no injected script ran, and none became an element of the page
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None and "data-pwned" not in body.group(0)
    assert dom.count("<script") == 2  # the JSON summary and the filter script, nothing else
