"""Several machines, one PostgreSQL ledger: separate key-store folders (readers hold public keys
only), separate processes, one shared artifact store (a local folder, or the W&B store offline
with its local mirror). Marks and seen manifests are shared, so a
reader in a fresh process with a fresh key store refuses a rollback or a replay another reader
(or the writer) has seen; sequences are allocated by the ledger, so writer machines never reuse
one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster_wandb_secure
from dagster_wandb_secure.artifacts.history import signed_manifest_of
from dagster_wandb_secure.core.keys import KeyStore
from kit.dagster_runs import ENTITY, PROJECT, attacker_publish, store_of, version_files

TESTS = Path(__file__).resolve().parents[1]
SRC = Path(dagster_wandb_secure.__file__).resolve().parents[1]


def start_machine(role: str, **cfg: Any) -> subprocess.Popen[str]:
    """One "machine": its own process, with only what ``cfg`` names."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(SRC)])}
    return subprocess.Popen(
        [sys.executable, "-m", "kit.machine", role, json.dumps(cfg, default=str)],
        env=env,
        cwd=cfg["base"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def machine(role: str, **cfg: Any) -> dict[str, Any]:
    return result_of(start_machine(role, **cfg))


def reader_keys(folder: Path, writer: KeyStore) -> Path:
    ks = KeyStore.open(folder)
    ks.import_public(writer.export_public(writer.primary().kid))
    assert not any(r.has_private for r in ks.records())
    return folder


def test_rollback_seen_anywhere_is_refused_everywhere(tmp_path: Path, pg_url: str) -> None:
    store = tmp_path / "shared-store"
    writer = KeyStore.open(tmp_path / "writer-keys")
    writer.generate("ed25519")

    def on(name: str) -> dict[str, Any]:
        base = tmp_path / name
        base.mkdir()
        return {"store": store, "base": base, "ledger": pg_url}

    assert machine("write", keys=writer.path, values=[0, 1], **on("writer")) == {"ok": True}
    # a reader that demands the writer's ledger record sees v1
    first = machine(
        "read", keys=reader_keys(tmp_path / "r1-keys", writer), require_ledger_record=True,
        **on("reader-1"),
    )
    assert first == {"ok": True, "value": {"value": 1}}
    # the registry writer moves latest back to v0
    store_of(store).move_alias(ENTITY, PROJECT, "model", "latest", "v0")
    second = machine("read", keys=reader_keys(tmp_path / "r2-keys", writer), **on("reader-2"))
    assert not second["ok"] and "RollbackError" in second["error"], second
    # with their own SQLite ledgers, the same fresh reader would have accepted v0
    alone = machine(
        "read", keys=reader_keys(tmp_path / "r3-keys", writer), **{**on("reader-3"), "ledger": None}
    )
    assert alone == {"ok": True, "value": {"value": 0}}


def test_old_version_replayed_under_a_new_number_is_refused_by_a_fresh_reader(
    tmp_path: Path, pg_url: str
) -> None:
    """No reader has read anything yet: the writer's own records in the shared ledger are
    enough for a reader in a fresh process, with a fresh key store, to refuse v0's signed
    manifest re-published as v2."""
    store = tmp_path / "shared-store"
    writer = KeyStore.open(tmp_path / "writer-keys")
    writer.generate("ed25519")
    base = {"store": store, "base": tmp_path}
    assert machine("write", keys=writer.path, values=[0, 1], ledger=pg_url, **base) == {"ok": True}
    replayed = attacker_publish(store, "model", version_files(store, "model", "v0"))
    assert replayed.version_label == "v2"
    fresh = machine("read", keys=reader_keys(tmp_path / "r1-keys", writer), ledger=pg_url, **base)
    assert not fresh["ok"] and "RollbackError" in fresh["error"], fresh
    assert "model:v2" in fresh["error"] and "first seen as v0" in fresh["error"], fresh
    # a fresh reader with only its own (empty) ledger has nothing to compare with
    alone = machine("read", keys=reader_keys(tmp_path / "r2-keys", writer), ledger=None, **base)
    assert alone == {"ok": True, "value": {"value": 0}}


def test_two_writer_machines_never_allocate_the_same_sequence(
    tmp_path: Path, pg_url: str
) -> None:
    """Two writer pods with key stores of their own (each its own signing key; neither holds
    the other's public key, so neither can verify the other's versions in the store), one store
    and the shared ledger, publishing at the same time. The ledger allocates: every version gets
    its own signed sequence, in publish order, and a fresh reader trusting both accepts latest.
    (With a ledger per pod both would start again at sequence 1.)"""
    store = tmp_path / "shared-store"
    writers = [KeyStore.open(tmp_path / f"writer-{n}-keys") for n in (1, 2)]
    for ks in writers:
        ks.generate("ed25519")
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = []
    for n, ks in enumerate(writers, start=1):
        base = tmp_path / f"writer-{n}"
        base.mkdir()
        values = [n * 100 + i for i in range(3)]
        procs.append(
            start_machine(
                "write", keys=ks.path, values=values, store=store, base=base, ledger=pg_url,
                barrier=barrier, parties=2,
            )
        )
    assert [result_of(p) for p in procs] == [{"ok": True}, {"ok": True}]
    reader = KeyStore.open(reader_keys(tmp_path / "reader-keys", writers[0]))
    reader.import_public(writers[1].export_public(writers[1].primary().kid))
    local = store_of(store)
    versions = sorted(
        local.list_versions(entity=ENTITY, project=PROJECT, name="model"), key=lambda v: v.version
    )
    sequences = []
    for av in versions:
        vm = signed_manifest_of(local, reader, av)
        assert vm is not None and vm.position is not None, av.version_label
        sequences.append(vm.position.sequence)
    assert sequences == list(range(1, 7)), sequences  # distinct, and in publish order
    fresh = machine("read", keys=reader.path, store=store, base=tmp_path, ledger=pg_url)
    assert fresh["ok"], fresh
    assert fresh["value"]["value"] in (102, 202)


def test_signed_offline_but_never_recorded_is_refused(tmp_path: Path, pg_url: str) -> None:
    """``require_ledger_record``: a copy of the writer's key signs v1 offline (its own SQLite
    ledger); readers that require the record refuse it, readers that do not accept it."""
    store = tmp_path / "shared-store"
    writer = KeyStore.open(tmp_path / "writer-keys")
    writer.generate("ed25519")
    base = {"store": store, "base": tmp_path}
    assert machine("write", keys=writer.path, values=[0], ledger=pg_url, **base) == {"ok": True}
    stolen = tmp_path / "stolen-keys"
    shutil.copytree(writer.path, stolen, ignore=shutil.ignore_patterns("ledger.sqlite3*"))
    assert machine("write", keys=stolen, values=[666], ledger=None, **base) == {"ok": True}
    keys = reader_keys(tmp_path / "reader-keys", writer)
    strict = machine("read", keys=keys, ledger=pg_url, require_ledger_record=True, **base)
    assert not strict["ok"] and "LedgerRecordMissingError" in strict["error"], strict
    lax = machine("read", keys=keys, ledger=pg_url, **base)
    assert lax == {"ok": True, "value": {"value": 666}}  # why require_ledger_record exists


def test_unreachable_ledger_fails_the_step_before_compute(
    tmp_path: Path, make_io_manager: Any, key_store: Any, marker: Path
) -> None:
    from dagster import DagsterResourceFunctionError, asset, materialize
    from dagster_wandb_secure.core.ledger_api import LedgerUnavailableError

    @asset(io_manager_key="m")
    def model() -> int:
        marker.write_text("computed")
        return 1

    url = f"postgresql://writer:pw-never-shown@/db?host={tmp_path}/gone&connect_timeout=1"
    iom = make_io_manager(ledger=url)
    try:
        result = materialize([model], resources={"m": iom}, raise_on_error=False)
        assert not result.success
        messages = []
        for event in result.all_events:
            err = getattr(event.event_specific_data, "error", None)
            while err is not None:
                messages.append(f"{err.cls_name}: {err.message}")
                err = err.cause or err.context
        text = "\n".join(messages)
    except DagsterResourceFunctionError as exc:  # resource setup failures may be raised
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, LedgerUnavailableError):
            cause = cause.__cause__ or cause.__context__
        assert cause is not None
        text = str(cause)
    assert not marker.exists()  # the asset's compute never ran
    assert "LedgerUnavailableError" in text and f"{tmp_path}/gone" in text
    assert "pw-never-shown" not in text


def test_asset_check_uses_its_own_ledger_option(
    key_store: Any, make_io_manager: Any, pg_url: str, monkeypatch: Any
) -> None:
    """The writer recorded into its SQLite ledger only; a check pointed at the (empty) shared
    ledger, for an IO manager that requires the ledger's record, fails; the default passes."""
    from dagster import AssetSelection, EnvVar, asset, materialize
    from dagster_wandb_secure import build_signature_asset_checks

    @asset(io_manager_key="m")
    def model() -> int:
        return 1

    assert materialize([model], resources={"m": make_io_manager()}).success
    strict = make_io_manager(require_ledger_record=True)

    def run(checks: list[Any]) -> Any:
        result = materialize(
            [model, *checks], resources={"m": strict}, selection=AssetSelection.all_asset_checks()
        )
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation

    assert run(build_signature_asset_checks([model], io_manager_key="m")).passed
    monkeypatch.setenv("DWS_TEST_LEDGER", pg_url)
    shared = build_signature_asset_checks(
        [model], io_manager_key="m", ledger=EnvVar("DWS_TEST_LEDGER")
    )
    evaluation = run(shared)
    assert not evaluation.passed
    assert evaluation.metadata["error"].value == "LedgerRecordMissingError"


def test_ledger_settings_are_validated_and_never_shown() -> None:
    import pytest

    from dagster_wandb_secure.artifacts.config import (
        WandbArtifactsIOManagerError,
        validate_settings,
    )
    from dagster_wandb_secure.io_manager import _LEGACY_SCHEMA

    settings = validate_settings({"ledger": "postgresql://w:pw-secret@db:5432/dagster"})
    assert settings.ledger and "pw-secret" not in repr(settings)
    for bad in ("mysql://w:pw-secret@db/x", "postgresql://w:pw-secret@db/x?pool_max=0", 5):
        with pytest.raises(WandbArtifactsIOManagerError) as info:
            validate_settings({"ledger": bad})
        assert "pw-secret" not in str(info.value)
    with pytest.raises(WandbArtifactsIOManagerError):
        validate_settings({"require_ledger_record": "yes"})
    assert {"ledger", "require_ledger_record"} <= set(_LEGACY_SCHEMA)


def test_wandb_offline_mirror_rollback_and_unrecorded_version(
    tmp_path: Path, pg_url: str
) -> None:
    """The multi-machine scenario over the W&B store offline (wandb's offline run plus its local
    mirror, shared by every machine) and one PostgreSQL ledger: a fresh reader sees v1; latest
    moved back is refused by another fresh reader and flagged by `audit` from a third folder;
    with ``require_ledger_record``, a version signed offline with a copy of the writer's key but
    never recorded in the shared ledger is refused."""
    from typer.testing import CliRunner

    from dagster_wandb_secure.cli import app

    mirror = tmp_path / "wandb-mirror"
    writer = KeyStore.open(tmp_path / "writer-keys")
    writer.generate("ed25519")

    def on(name: str, **cfg: Any) -> dict[str, Any]:
        base = tmp_path / name
        base.mkdir()
        return {"kind": "wandb", "store": mirror, "base": base, "ledger": pg_url, **cfg}

    assert machine("write", keys=writer.path, values=[0, 1], **on("writer")) == {"ok": True}
    # the versions went through the offline store: wandb's offline run and the mirror
    assert list((tmp_path / "writer" / "wandb").glob("offline-run-*"))
    assert (mirror / "artifacts" / ENTITY / PROJECT).is_dir()
    first = machine("read", keys=reader_keys(tmp_path / "r1-keys", writer), **on("reader-1"))
    assert first == {"ok": True, "value": {"value": 1}}
    store_of(mirror).move_alias(ENTITY, PROJECT, "model", "latest", "v0")  # registry writer
    stolen = tmp_path / "stolen-keys"
    shutil.copytree(writer.path, stolen, ignore=shutil.ignore_patterns("ledger.sqlite3*"))
    # the rollback reader runs while the auditor audits (both only read)
    second = start_machine("read", keys=reader_keys(tmp_path / "r2-keys", writer), **on("reader-2"))
    auditor = tmp_path / "auditor"
    keys = reader_keys(auditor / "keys", writer)
    out = CliRunner().invoke(
        app,
        ["audit", "-k", str(keys), "--ledger", pg_url, "--store", "wandb", "--store-dir",
         str(mirror), "--entity", ENTITY, "--project", PROJECT, "--json", "--no-progress"],
        catch_exceptions=False,
    )
    assert out.exit_code != 0, out.output
    assert "rolled-back" in out.output, out.output
    read = result_of(second)
    assert not read["ok"] and "RollbackError" in read["error"], read

    store_of(mirror).move_alias(ENTITY, PROJECT, "model", "latest", "v1")
    assert machine("write", keys=stolen, values=[666], **on("thief", ledger=None)) == {"ok": True}
    strict = machine(
        "read", keys=reader_keys(tmp_path / "r3-keys", writer), require_ledger_record=True,
        **on("reader-3"),
    )
    assert not strict["ok"] and "LedgerRecordMissingError" in strict["error"], strict
