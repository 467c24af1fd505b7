"""The console audit covers the model registry: a tampered link statement under
``<store>/registry`` fails ``dagster-wandb-secure audit`` as a tampered version does, instead of
an all-clear report that never looked at it (``audit_links()`` existed but the CLI did not call
it); a genuine statement is listed as valid and passes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagster import asset, materialize
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager

E, P = "team", "proj"
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    ks.ledger.close()
    yield tmp_path


def test_a_tampered_link_statement_fails_the_audit(root: Path) -> None:
    iom = WandbArtifactsIOManager(
        key_store=str(root / "keys"), store="local", local_store_dir=str(root / "store"),
        base_dir=str(root / "base"), entity=E, project=P,
    )

    @asset(name="clf", metadata={"wandb_artifact_configuration": {
        "type": "model", "link": {"target_path": "model-registry/clf", "aliases": ["prod"]}}})
    def clf() -> dict[str, int]:
        return {"depth": 3}

    assert materialize([clf], resources={"io_manager": iom}).success
    clean = _audit(root)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert '"registry": "team/model-registry/clf:v0"' in clean.stdout
    assert '"status": "valid"' in clean.stdout
    link = next(root.rglob("v0.link"))
    data = bytearray(link.read_bytes())
    data[-3] ^= 1
    link.write_bytes(bytes(data))
    result = _audit(root)
    assert result.returncode != 0, result.stdout
    assert "model-registry/clf" in result.stdout
    for fmt in ("html", "markdown"):  # the reports an auditor is handed show the statement too
        out = root / f"report.{fmt}"
        rendered = _audit(root, "--format", fmt, "--output", str(out))
        assert rendered.returncode != 0, rendered.stdout + rendered.stderr
        text = out.read_text()
        assert "Registry link statements" in text
        row = next(line for line in text.split("<tr") if "model-registry/clf:v0" in line) \
            if fmt == "html" else next(line for line in text.splitlines()
                                       if "model-registry/clf:v0" in line)
        assert "tampered" in row, row


def _audit(root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagster_wandb_secure.cli", "audit", *(options or ("--json",)),
         "-k", str(root / "keys"), "--store", "local", "--store-dir", str(root / "store")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": SRC},
    )
