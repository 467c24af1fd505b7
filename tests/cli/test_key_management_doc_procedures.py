"""docs/key-management.md's "Staged rotation" and "Responding to a leaked key" procedures, run
literally: the shell commands are extracted from the doc's code blocks (so the doc cannot drift
from what is tested) and run with the real console script, placeholders (``NEW``, ``OLD``,
``LEAKED``, ``STORE``) replaced by the real key ids and store folder. After each procedure every
alias (``latest``, a custom alias, the ``dagster-run-*`` aliases) resolves to the re-signed copy
of exactly the content it held before (same signed position, a new manifest signed by the new
primary), ``audit`` exits 0 and a reader with its own ledger (marks from before) accepts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dagster import AssetIn, AssetKey, SourceAsset, asset, materialize
from dagster_wandb_secure.artifacts.history import signed_manifest_of
from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.keys import KeyStore
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from dagster_wandb_secure.io_manager import WandbArtifactsIOManager
from dagster_wandb_secure.stores.local import LocalArtifactStore

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "key-management.md"
SCRIPT = Path(sys.executable).parent / "dagster-wandb-secure"
E, P = "team", "proj"


def doc_commands(section: str) -> list[str]:
    """The ``dagster-wandb-secure`` lines of the ``sh`` blocks under ``## <section>``."""
    text = DOC.read_text()
    start = text.index(f"\n## {section}")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", body, flags=re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("dagster-wandb-secure "):
                lines.append(line)
    assert lines, f"no commands under {section!r}"
    return lines


def _iom(root: Path, keys: str, **kw: Any) -> WandbArtifactsIOManager:
    return WandbArtifactsIOManager(
        key_store=str(root / keys), store="local", local_store_dir=str(root / "STORE"),
        base_dir=str(root / f"base-{keys}"), entity=E, project=P, **kw,
    )


def _write(root: Path, value: int, aliases: list[str] | None = None) -> None:
    meta = {"wandb_artifact_configuration": {"aliases": aliases}} if aliases else None

    @asset(name="model", io_manager_key="m", metadata=meta)
    def model() -> dict[str, int]:
        return {"value": value}

    assert materialize([model], resources={"m": _iom(root, "writer-keys")}).success


def _read(root: Path, alias: str) -> Any:
    seen: dict[str, Any] = {}
    conf = {"wandb_artifact_configuration": {"alias": alias}}

    @asset(ins={"up": AssetIn(key=AssetKey("model"), input_manager_key="m", metadata=conf)})
    def reader(up: Any) -> None:
        seen["value"] = up

    result = materialize([SourceAsset(key=AssetKey("model"), io_manager_key="m"), reader],
                         resources={"m": _iom(root, "reader-keys")}, selection=[reader],
                         raise_on_error=False)
    assert result.success, f"the reader refused alias {alias!r}"
    return seen["value"]


def _aliases(root: Path) -> dict[str, tuple[Position, str]]:
    """alias -> (signed position, signing key id) of the version it resolves to."""
    store, ks = LocalArtifactStore(root / "STORE"), KeyStore.open(root / "writer-keys")
    out = {}
    for av in store.list_versions(name="model"):
        vm = signed_manifest_of(store, ks, av)
        for alias in av.aliases:
            out[alias] = (vm.position if vm else None, vm.header.kid if vm else None)
    ks.close()
    return out


def _cli(root: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"),
           "PATH": f"{SCRIPT.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(SCRIPT), *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def _kids(root: Path) -> tuple[set[str], str]:
    ks = KeyStore.open(root / "writer-keys")
    try:
        return {k.kid for k in ks.records()}, ks.primary().kid
    finally:
        ks.close()


def _check_audit(root: Path, section: str, *, old_keys: set[str | None]) -> None:
    """A plain ``audit`` exits 0: every aliased version is ``valid``; what is not is an
    un-aliased original signed by the ended key, ``superseded`` by a valid re-signed copy that
    holds its signed position."""
    done = _cli(root, ["audit", "-k", "writer-keys", "--store-dir", "STORE", "--json"])
    report = json.loads(done.stdout)
    assert done.returncode == 0, (section, report["verdict"], [
        (r["version"], r["status"], r["aliases"], r["reason"]) for r in report["versions"]])
    store, ks = LocalArtifactStore(root / "STORE"), KeyStore.open(root / "writer-keys")
    try:
        positions, stored = {}, {}
        for av in store.list_versions(name="model"):
            vm = signed_manifest_of(store, ks, av)
            positions[av.version_label] = vm.position if vm else None
            stored[av.version_label] = hashlib.sha256(
                store.file_path(av, MANIFEST_NAME).read_bytes()).hexdigest()
    finally:
        ks.close()
    valid = {r["version"]: r for r in report["versions"] if r["status"] == "valid"}
    held = {positions[v] for v in valid}
    superseded = [r for r in report["versions"] if r["status"] != "valid"]
    assert superseded, f"{section}: resign left no original behind?"
    for row in superseded:
        where = f"{section}: {row['name']}:{row['version']} {row['status']} {row['reason']}"
        assert row["status"] == "superseded", where
        assert not row["aliases"] and row["key_id"] in old_keys, where
        copy = row["reason"].split("re-signed as ")[1].split()[0]
        # the copy re-signs this very manifest, or (a re-signed original) the same original
        assert copy in valid and valid[copy]["resigns"] is not None, where
        first = section.startswith("Staged")  # before any re-sign, originals are first-hand
        assert not first or valid[copy]["resigns"] == stored[row["version"]], where
        # its content lives on in a valid re-signed copy (same signed position)
        assert positions.get(row["version"]) in held or positions.get(row["version"]) is None, where


def run_procedure(root: Path, section: str, old_name: str) -> None:
    before, old = _kids(root)
    for line in doc_commands(section):
        words = shlex.split(line, comments=True)[1:]
        if "NEW" in words or "NEW.pub.pem" in words:
            (new,) = _kids(root)[0] - before
        else:
            new = "NEW"
        subst = {"NEW": new, "NEW.pub.pem": f"{new}.pub.pem", old_name: old,
                 f"{old_name}.pub.pem": f"{old}.pub.pem", "STORE": str(root / "STORE")}
        words = [subst.get(w, w) for w in words]
        done = _cli(root, words)
        if words[0] != "audit":  # an audit line is the doc's CI gate: its exit code is the report
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    ks = KeyStore.open(tmp_path / "writer-keys")
    kid = ks.generate("ed25519")
    ks.close()
    assert _cli(tmp_path, ["keys", "export-public", kid, "-k", "writer-keys", "-o",
                           "first.pub.pem"]).returncode == 0
    assert _cli(tmp_path, ["keys", "import-public", "first.pub.pem", "-k",
                           "reader-keys"]).returncode == 0
    return tmp_path


def test_rotation_and_incident_procedures_keep_every_alias_on_its_content(root: Path) -> None:
    _write(root, 1)
    _write(root, 2, aliases=["production"])
    _write(root, 3)
    values = {"latest": {"value": 3}, "production": {"value": 2}}
    assert {a: _read(root, a) for a in values} == values  # the reader's marks
    ended: set[str | None] = set()  # keys the procedures so far retired or revoked
    for section, old_name in (("Staged rotation", "OLD"), ("Responding to a leaked key", "LEAKED")):
        held = _aliases(root)
        assert {"latest", "production"} <= set(held)
        assert any(a.startswith("dagster-run-") for a in held)
        run_procedure(root, section, old_name)
        now = _aliases(root)
        _, primary = _kids(root)
        for alias, (position, _kid) in held.items():
            assert now[alias][0] == position, f"{section}: {alias} moved off its content"
            assert now[alias][1] == primary, f"{section}: {alias} not on the re-signed copy"
        ended |= {k for _, k in held.values()}
        _check_audit(root, section, old_keys=ended)
        assert {a: _read(root, a) for a in values} == values, section
