"""Operating defaults as a user meets them (issue 15): real ``dagster asset materialize``
processes and the ``dagster-wandb-secure`` console script, in a fresh working directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dagster_wandb_secure.core.keys import KeyStore

BIN = Path(sys.executable).parent
DEFS = textwrap.dedent(
    """
    from pathlib import Path

    from dagster import AssetIn, Definitions, asset
    from dagster_wandb_secure import WandbArtifactsIOManager

    MARKER = Path("compute-ran")

    @asset(io_manager_key="m", metadata={"wandb_artifact_configuration": {"type": "dataset"}})
    def written() -> list[int]:
        MARKER.write_text("ran")
        return [1, 2, 3]

    @asset(ins={"written": AssetIn(input_manager_key="m")})
    def consumer(written: list[int]) -> None:
        assert written == [1, 2, 3]
        Path("consumer-ran").write_text(repr(written))

    defs = Definitions(
        assets=[written, consumer],
        resources={"m": WandbArtifactsIOManager(store="local", key_store="keys")},
    )
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(DAGSTER_DISABLE_TELEMETRY="1", WANDB_MODE="offline", **extra)
    env.pop("DAGSTER_WANDB_SECURE_KEY_STORE", None)
    env.pop("DAGSTER_WANDB_SECURE_STORE_DIR", None)
    return env


def materialize(cwd: Path, select: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-f", "defs.py", "--select", select],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240, check=False,
    )


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = shutil.which("dagster-wandb-secure", path=str(BIN))
    assert script is not None, "the console script is not installed"
    return subprocess.run(
        [script, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "defs.py").write_text(DEFS)
    return tmp_path


def test_store_outlives_the_process_without_dagster_home(project: Path) -> None:
    KeyStore.open(project / "keys").generate("ed25519")
    first = materialize(project, "written")
    assert first.returncode == 0, first.stderr[-3000:]
    store = project / "wandb-secure" / "store"
    assert store.is_dir()  # ./wandb-secure/store, not Dagster's temporary instance folder
    assert f"local store at {store}" in first.stderr  # logged once per run
    second = materialize(project, "consumer")  # a new process, a new temporary instance
    assert second.returncode == 0, second.stderr[-3000:]
    assert (project / "consumer-ran").read_text() == "[1, 2, 3]"
    # and the CLI's default finds what the IO manager wrote
    audit = cli(project, "audit", "-k", "keys", "--format", "json")
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout)["summary"]["by_status"]["valid"] == 1


def test_missing_key_store_fails_before_compute_and_creates_nothing(project: Path) -> None:
    result = materialize(project, "written")
    assert result.returncode != 0
    assert not (project / "compute-ran").exists()  # the step failed before its compute
    assert not (project / "keys").exists()  # nothing created by the failing run
    assert "KeyStoreError" in result.stderr
    assert f"no key store at {project / 'keys'}" in result.stderr
    assert "dagster-wandb-secure keys init -k keys" in result.stderr


def test_unusable_primary_key_fails_before_compute(project: Path) -> None:
    ks = KeyStore.open(project / "keys")
    kid = ks.generate("ed25519")
    ks.revoke(kid, "test")
    ks2 = KeyStore.open(project / "keys")
    assert not any(r.status.value == "primary" for r in ks2.records())
    # no primary and none configured: a read-only job may run; configure the revoked key
    defs = (project / "defs.py").read_text().replace(
        'key_store="keys")', f'key_store="keys", signing_key="{kid}")'
    )
    (project / "defs.py").write_text(defs)
    result = materialize(project, "written")
    assert result.returncode != 0
    assert not (project / "compute-ran").exists()
    assert "NoSigningKeyError" in result.stderr
    assert "keys rotate -k keys" in result.stderr


def test_audit_and_read_commands_create_nothing(tmp_path: Path) -> None:
    no_keys = cli(tmp_path, "audit")
    assert no_keys.returncode == 3, no_keys.stderr
    assert "keys init -k keys" in no_keys.stderr and "Traceback" not in no_keys.stderr
    KeyStore.open(tmp_path / "keys").generate("ed25519")
    before = sorted(p.name for p in tmp_path.iterdir())
    no_store = cli(tmp_path, "audit", "-k", "keys")
    assert no_store.returncode == 3, no_store.stderr
    assert f"no local store at {tmp_path / 'wandb-secure' / 'store'}" in no_store.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing was created
    verify = cli(tmp_path, "verify", "-k", str(tmp_path / "elsewhere"), str(tmp_path / "keys"))
    assert verify.returncode == 3 and not (tmp_path / "elsewhere").exists()


def test_seed_flow_write_tamper_audit_fails_naming_the_version(project: Path) -> None:
    KeyStore.open(project / "keys").generate("ed25519")
    assert materialize(project, "written").returncode == 0
    store = project / "wandb-secure" / "store"
    [payload] = [p for p in store.rglob("output.pickle") if p.is_file()]
    payload.chmod(0o600)
    data = bytearray(payload.read_bytes())
    data[-1] ^= 0x01  # same size: only re-hashing finds it
    payload.write_bytes(bytes(data))

    deep = cli(project, "audit", "-k", "keys", "--store", "local", "--format", "json")
    assert deep.returncode == 1, deep.stdout
    doc = json.loads(deep.stdout)
    assert doc["ok"] is False and doc["mode"] == "deep" and doc["payloads_rehashed"] is True
    [entry] = doc["versions"]
    assert entry["status"] == "tampered"
    assert doc["needs_attention"] == ["local/uncategorized/written:v0"]

    fast = cli(project, "audit", "-k", "keys", "--fast", "--format", "json")
    fdoc = json.loads(fast.stdout)
    assert fdoc["versions"][0]["status"] == "signature-ok"  # never "valid" without hashing
    assert fdoc["payloads_rehashed"] is False and fdoc["verdict"].startswith(
        "0 of 1 version need attention; 1 signature-ok only"
    )
    assert fast.returncode == 0  # signature-ok is not a failure by default
    assert cli(project, "audit", "-k", "keys", "--fail-on", "none").returncode == 0
    widened = cli(project, "audit", "-k", "keys", "--fast", "--fail-on", "signature-ok")
    assert widened.returncode == 1

    table = cli(project, "audit", "-k", "keys")
    assert table.returncode == 1
    assert "written:v0" in table.stdout
    assert "entity: local   project: uncategorized" in table.stdout
    assert "reasons:" in table.stdout and "[1] written:v0:" in table.stdout
    assert table.stdout.rstrip().endswith("1 of 1 version needs attention")
    assert "written:v0 (tampered)" in table.stderr


def test_table_shows_full_key_ids_and_second_precision_dates(project: Path) -> None:
    kid = KeyStore.open(project / "keys").generate("ed25519")
    assert materialize(project, "written").returncode == 0
    table = cli(project, "audit", "-k", "keys")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    row = next(line for line in lines if "written:v0" in line)
    assert kid in row  # the whole key id, never truncated
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", row)
    assert "valid" in row and "(resigned)" not in row
    assert lines[-1] == "the 1 version is valid"


def test_cli_version_choices_and_help_on_every_option() -> None:
    version = cli(Path.cwd(), "--version")
    assert version.returncode == 0 and version.stdout.startswith("dagster-wandb-secure ")
    helptext = cli(Path.cwd(), "audit", "--help").stdout
    assert "[table|json|html|markdown]" in helptext.replace("<", "[").replace(">", "]")
    assert "local|wandb" in helptext
    bad = cli(Path.cwd(), "audit", "--store", "s3")
    assert bad.returncode == 2

    import typer.main

    from dagster_wandb_secure.cli import app

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        if name == "keys":
            continue  # the key-lifecycle commands are covered with their own changes
        for param in command.params:
            assert getattr(param, "help", None), f"{name} {param.name} has no help text"


def test_make_demo_installs_the_runtime_only_and_shows_pip_progress(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    repo = Path(__file__).resolve().parents[2]
    venv = f"VENV={tmp_path / 'venv'}"

    def plan(target: str) -> list[str]:
        out = subprocess.run(
            [make, "-n", "-B", "-C", str(repo), target, venv],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        return [line for line in out.splitlines() if "pip install" in line and "-e" in line]

    [demo] = plan("demo")
    assert "[test" not in demo and "--quiet" not in demo, demo
    [test] = plan("test")
    assert "[test" in test and "--quiet" not in test, test
