"""The attacks that need a store (SECURITY.md, attack catalogue items 8, 9, 10, 11, 21, 22, 23),
through real Dagster runs.

The attacker is a registry writer: it can publish versions, move aliases and change files in the
local store's folder, but holds no signing key. Each attack must fail the reading step with a
typed error naming artifact, version and reason, and nothing from the payload may run (a marker
file that a malicious pickle would create stays absent)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from dagster import AssetIn, StaticPartitionsDefinition, asset, materialize
from dagster_wandb_secure.core.manifest import MANIFEST_NAME
from kit import payloads
from kit.dagster_runs import (
    ENTITY,
    PROJECT,
    attacker_publish,
    failure_text,
    store_of,
    version_files,
    writable,
)


@asset(io_manager_key="m")
def victim() -> dict[str, Any]:
    return {"safe": True}


@asset(io_manager_key="m")
def other() -> dict[str, Any]:
    return {"other": True}


def read_result(make_io_manager: Any, source: Any = victim, **read_config: Any) -> Any:
    meta = {"wandb_artifact_configuration": read_config} if read_config else None
    seen: dict[str, Any] = {}

    @asset(ins={"value": AssetIn(key=source.key, input_manager_key="m", metadata=meta)})
    def reader(value: Any) -> None:
        seen["value"] = value

    result = materialize(
        [source.to_source_asset(), reader],
        resources={"m": make_io_manager()},
        selection=[reader],
        raise_on_error=False,
    )
    result.seen = seen  # type: ignore[attr-defined]
    return result


def write(make_io_manager: Any, *assets: Any) -> None:
    assert materialize(list(assets), resources={"m": make_io_manager()}).success


# --- 8: envelope stripped ----------------------------------------------------------------------


def test_attack_08_raw_pickle_published_as_legacy_version(
    key_store: Any, make_io_manager: Any, store_dir: Path, tmp_path: Path, marker: Path
) -> None:
    write(make_io_manager, victim)
    evil = tmp_path / "output.pickle"
    evil.write_bytes(payloads.reduce_os_system(marker))
    attacker_publish(store_dir, "victim", {"output.pickle": evil})
    result = read_result(make_io_manager)
    assert not result.success
    text = failure_text(result)
    assert "UnsignedPayloadError" in text and "adopt" in text and "victim:v1" in text
    assert not marker.exists()


def test_attack_08_envelope_replaced_by_raw_pickle_under_signed_manifest(
    key_store: Any, make_io_manager: Any, store_dir: Path, tmp_path: Path, marker: Path
) -> None:
    write(make_io_manager, victim)
    files = version_files(store_dir, "victim")
    evil = tmp_path / "output.pickle"
    evil.write_bytes(payloads.reduce_os_system(marker))
    files["output.pickle"] = evil
    attacker_publish(store_dir, "victim", files)
    result = read_result(make_io_manager)
    assert not result.success
    assert "victim" in failure_text(result)
    assert not marker.exists()


# --- 9: replay under another name or partition ---------------------------------------------------


def test_attack_09_envelope_of_a_replayed_as_b(
    key_store: Any, make_io_manager: Any, store_dir: Path
) -> None:
    write(make_io_manager, victim, other)
    attacker_publish(store_dir, "victim", version_files(store_dir, "other"))
    result = read_result(make_io_manager)
    assert not result.success
    text = failure_text(result)
    assert "ContextMismatchError" in text and "victim" in text


def test_attack_09_partition_replay(key_store: Any, make_io_manager: Any, store_dir: Path) -> None:
    parts = StaticPartitionsDefinition(["a", "b"])

    @asset(partitions_def=parts, io_manager_key="m")
    def split(context) -> str:
        return f"data-{context.partition_key}"

    iom = make_io_manager()
    for pk in ("a", "b"):
        assert materialize([split], partition_key=pk, resources={"m": iom}).success
    attacker_publish(store_dir, "split.b", version_files(store_dir, "split.a"))
    result = read_result(make_io_manager, split)
    assert not result.success
    text = failure_text(result)
    assert "ContextMismatchError" in text and "split.b" in text


def test_attack_09_serializer_renamed(
    key_store: Any, make_io_manager: Any, store_dir: Path
) -> None:
    write(make_io_manager, victim)
    files = version_files(store_dir, "victim")
    files["output.dill"] = files.pop("output.pickle")
    attacker_publish(store_dir, "victim", files)
    result = read_result(make_io_manager)
    assert not result.success
    assert "TamperedPayloadError" in failure_text(result)


# --- 10: rollback ---------------------------------------------------------------------------------


def test_attack_10_latest_moved_back(key_store: Any, make_io_manager: Any, store_dir: Path) -> None:
    write(make_io_manager, victim)
    write(make_io_manager, victim)
    ok = read_result(make_io_manager)
    assert ok.success
    store_of(store_dir).move_alias(ENTITY, PROJECT, "victim", "latest", "v0")
    result = read_result(make_io_manager)
    assert not result.success
    text = failure_text(result)
    assert "RollbackError" in text and "victim:v0" in text
    # an explicit version is still readable: the operator meant it
    assert read_result(make_io_manager, version="v0").success


# --- 11: mix-and-match --------------------------------------------------------------------------


def test_attack_11_envelope_swapped_between_versions(
    key_store: Any, make_io_manager: Any, store_dir: Path
) -> None:
    counter = {"n": 0}

    @asset(name="victim", io_manager_key="m")
    def changing() -> int:
        counter["n"] += 1
        return counter["n"]

    write(make_io_manager, changing)
    write(make_io_manager, changing)
    old = version_files(store_dir, "victim", "v0")
    new = version_files(store_dir, "victim", "v1")
    mixed = {"output.pickle": old["output.pickle"], MANIFEST_NAME: new[MANIFEST_NAME]}
    attacker_publish(store_dir, "victim", mixed)
    result = read_result(make_io_manager, changing)
    assert not result.success
    assert "mix-and-match" in failure_text(result)


def test_attack_11_manifest_swapped_between_artifacts(
    key_store: Any, make_io_manager: Any, store_dir: Path
) -> None:
    write(make_io_manager, victim, other)
    mine = version_files(store_dir, "victim")
    theirs = version_files(store_dir, "other")
    attacker_publish(
        store_dir,
        "victim",
        {"output.pickle": mine["output.pickle"], MANIFEST_NAME: theirs[MANIFEST_NAME]},
    )
    result = read_result(make_io_manager)
    assert not result.success
    assert "ContextMismatchError" in failure_text(result)


# --- 21: symlinks and swaps -----------------------------------------------------------------------


def test_attack_21_payload_is_a_symlink(
    key_store: Any, make_io_manager: Any, store_dir: Path, tmp_path: Path, marker: Path
) -> None:
    write(make_io_manager, victim)
    payload = writable(version_files(store_dir, "victim")["output.pickle"])
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(payloads.reduce_os_system(marker))
    payload.unlink()
    payload.symlink_to(evil)
    result = read_result(make_io_manager)
    assert not result.success
    assert "UnsafePathError" in failure_text(result)
    assert not marker.exists()


def test_attack_21_file_swapped_after_the_manifest_check(
    key_store: Any,
    make_io_manager: Any,
    store_dir: Path,
    tmp_path: Path,
    marker: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cache tamperer swaps the payload between the manifest check and the load."""
    from dagster_wandb_secure.core import manifest

    write(make_io_manager, victim)
    payload = version_files(store_dir, "victim")["output.pickle"]
    evil = payloads.reduce_os_system(marker)
    real_verify = manifest.verify_manifest

    def verify_then_swap(*args: Any, **kwargs: Any) -> Any:
        verified = real_verify(*args, **kwargs)
        target = writable(payload)
        size = target.stat().st_size
        target.write_bytes(evil.ljust(size, b"\n")[:size] if len(evil) <= size else evil)
        return verified

    monkeypatch.setattr(manifest, "verify_manifest", verify_then_swap)
    result = read_result(make_io_manager)
    assert not result.success
    assert "victim" in failure_text(result)
    assert not marker.exists()


def test_attack_21_get_path_file_swapped_after_check(
    key_store: Any,
    make_io_manager: Any,
    store_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagster_wandb_secure.core import manifest

    data = tmp_path / "data.txt"
    data.write_text("genuine")

    @asset(
        name="victim",
        io_manager_key="m",
        metadata={"wandb_artifact_configuration": {"add_files": [{"local_path": str(data)}]}},
    )
    def with_file() -> int:
        return 1

    write(make_io_manager, with_file)
    stored = version_files(store_dir, "victim")["data.txt"]
    real_verify = manifest.verify_manifest

    def verify_then_swap(*args: Any, **kwargs: Any) -> Any:
        verified = real_verify(*args, **kwargs)
        writable(stored).write_text("forged!")  # same size
        return verified

    monkeypatch.setattr(manifest, "verify_manifest", verify_then_swap)
    result = read_result(make_io_manager, with_file, get_path="data.txt")
    assert not result.success
    assert "TamperedPayloadError" in failure_text(result)


def test_attack_21_get_path_copy_is_private(
    key_store: Any, make_io_manager: Any, store_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.txt"
    data.write_text("genuine")

    @asset(
        name="victim",
        io_manager_key="m",
        metadata={"wandb_artifact_configuration": {"add_files": [{"local_path": str(data)}]}},
    )
    def with_file() -> int:
        return 1

    write(make_io_manager, with_file)
    result = read_result(make_io_manager, with_file, get_path="data.txt")
    assert result.success
    path = Path(result.seen["value"])
    assert path.read_text() == "genuine"
    assert store_dir not in path.parents
    # the folder holding it is private to this process
    assert (path.parent.stat().st_mode & 0o077) == 0


# --- 22: unsafe file names -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b", "a\x00b"])
def test_attack_22_unsafe_get_path(
    key_store: Any, make_io_manager: Any, bad: str
) -> None:
    write(make_io_manager, victim)
    result = read_result(make_io_manager, get_path=bad)
    assert not result.success
    text = failure_text(result)
    assert "UnsafePathError" in text and "artifact victim" in text


@pytest.mark.parametrize("bad", ["../x", "/abs", "a//b"])
def test_attack_22_unsafe_add_files_name(
    key_store: Any, make_io_manager: Any, tmp_path: Path, bad: str
) -> None:
    data = tmp_path / "d.txt"
    data.write_text("x")

    @asset(
        io_manager_key="m",
        metadata={
            "wandb_artifact_configuration": {
                "add_files": [{"local_path": str(data), "name": bad}]
            }
        },
    )
    def adds() -> int:
        return 1

    result = materialize([adds], resources={"m": make_io_manager()}, raise_on_error=False)
    assert not result.success
    assert "UnsafePathError" in failure_text(result)


def test_attack_22_add_dirs_symlink_escape(
    key_store: Any, make_io_manager: Any, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private key material")
    folder = tmp_path / "to_upload"
    folder.mkdir()
    (folder / "ok.txt").write_text("fine")
    (folder / "leak.txt").symlink_to(secret)

    @asset(
        io_manager_key="m",
        metadata={"wandb_artifact_configuration": {"add_dirs": [{"local_path": str(folder)}]}},
    )
    def dirs() -> int:
        return 1

    result = materialize([dirs], resources={"m": make_io_manager()}, raise_on_error=False)
    assert not result.success
    assert "UnsafePathError" in failure_text(result) and "symlink" in failure_text(result)


def test_attack_22_add_files_symlink(key_store: Any, make_io_manager: Any, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    link = tmp_path / "innocent.txt"
    link.symlink_to(secret)

    @asset(
        io_manager_key="m",
        metadata={"wandb_artifact_configuration": {"add_files": [{"local_path": str(link)}]}},
    )
    def files() -> int:
        return 1

    result = materialize([files], resources={"m": make_io_manager()}, raise_on_error=False)
    assert not result.success
    assert "UnsafePathError" in failure_text(result)


def test_attack_22_non_utf8_file_planted_in_version(
    key_store: Any, make_io_manager: Any, store_dir: Path
) -> None:
    write(make_io_manager, victim)
    folder = version_files(store_dir, "victim")["output.pickle"].parent
    os.chmod(folder, 0o700)
    with open(os.path.join(os.fsencode(folder), b"bad\xffname"), "wb") as fh:
        fh.write(b"x")
    result = read_result(make_io_manager)
    assert not result.success
    assert "victim" in failure_text(result)


# --- 23: extra unsigned file, empty artifact -----------------------------------------------------


def test_attack_23_extra_unsigned_file(
    key_store: Any, make_io_manager: Any, store_dir: Path, tmp_path: Path
) -> None:
    write(make_io_manager, victim)
    files = version_files(store_dir, "victim")
    extra = tmp_path / "extra.py"
    extra.write_text("import os")
    files["extra.py"] = extra
    attacker_publish(store_dir, "victim", files)
    result = read_result(make_io_manager)
    assert not result.success
    text = failure_text(result)
    assert "TamperedPayloadError" in text and "not covered" in text


def test_attack_23_extra_file_planted_in_existing_version(
    key_store: Any, make_io_manager: Any, store_dir: Path
) -> None:
    write(make_io_manager, victim)
    folder = version_files(store_dir, "victim")["output.pickle"].parent
    os.chmod(folder, 0o700)
    (folder / "planted.txt").write_text("surprise")
    result = read_result(make_io_manager)
    assert not result.success
    assert "not covered" in failure_text(result)


def test_attack_23_empty_artifact(
    key_store: Any, make_io_manager: Any, store_dir: Path, tmp_path: Path
) -> None:
    write(make_io_manager, victim)
    files = version_files(store_dir, "victim")
    only_manifest = tmp_path / "m"
    shutil.copyfile(files[MANIFEST_NAME], only_manifest)
    attacker_publish(store_dir, "victim", {MANIFEST_NAME: only_manifest})
    result = read_result(make_io_manager)
    assert not result.success
    assert "TamperedPayloadError" in failure_text(result)


def test_step_failure_names_artifact_version_key_and_reason(
    key_store: Any, make_io_manager: Any, store_dir: Path
) -> None:
    write(make_io_manager, victim)
    payload = writable(version_files(store_dir, "victim")["output.pickle"])
    data = bytearray(payload.read_bytes())
    data[-1] ^= 0xFF
    payload.write_bytes(bytes(data))
    result = read_result(make_io_manager)
    assert not result.success
    text = failure_text(result)
    kid = key_store.primary().kid
    assert "victim:v0" in text and kid in text and "What to do" in text
