"""Red team 7: a whole-content read no longer has ``verify_manifest`` check the payload
envelope's signature on the store's bytes; ``verify_version`` verifies it once in private
memory. Every tampered payload (bytes replaced, an envelope of another artifact or of the same
artifact signed by the same key, truncated, wrong role) must still fail with a typed error
before anything is deserialized or recorded, at rest and when swapped after the manifest
check, for the whole content, a ``get`` and a ``get_path`` read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagster import asset
from dagster_wandb_secure.artifacts import verification
from dagster_wandb_secure.core import envelope
from dagster_wandb_secure.core import manifest as core_manifest
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.counting import count_calls
from kit.dagster_runs import failure_text, version_files, writable
from kit.payloads import TouchOnLoad

PAYLOAD = "output.pickle"


@asset(name="victim", io_manager_key="m")
def victim() -> dict[str, Any]:
    return {"safe": "x" * 400}


def _read(make_io_manager: Any, **read_config: Any) -> Any:
    from kit.dagster_runs import read_via

    return read_via(make_io_manager(), victim, **read_config)


def _evil_envelope(key_store: Any, marker: Path, context: dict[str, Any], size: int,
                   header: dict[str, Any]) -> bytes:
    """An envelope signed by the reader's own key whose payload runs ``touch marker``, padded to
    ``size`` bytes (the manifest's size check must not be what catches it)."""
    for pad in range(0, 2000):
        evil = TouchOnLoad(Path(f"{marker}" + " " * pad))
        data = envelope.seal(
            evil,
            key_store=key_store,
            serializer=header["serializer"],
            context=context,
            record=False,
            digest_alg=header["digest_alg"],
        )
        if len(data) == size:
            return data
    raise AssertionError("could not pad the evil envelope to the victim's size")


def _tampered(kind: str, path: Path, key_store: Any, marker: Path) -> bytes:
    data = path.read_bytes()
    header = envelope.read_header_unverified(path)["header"]
    ctx = dict(header["context"])
    if kind == "payload_bytes":  # the signed header kept, the payload replaced by a pickle
        evil = pickle_bytes(marker)
        offset = len(data) - header["payload_length"]
        body = evil.ljust(header["payload_length"], b".")[: header["payload_length"]]
        assert len(evil) <= header["payload_length"]
        return data[:offset] + body
    if kind == "other_artifact":
        ctx["artifact"] = "someone_else"
        return _evil_envelope(key_store, marker, ctx, len(data), header)
    if kind == "same_artifact_other_object":  # what a later version of the same asset holds
        return _evil_envelope(key_store, marker, ctx, len(data), header)
    if kind == "role_manifest":
        ctx["role"] = "manifest"
        return _evil_envelope(key_store, marker, ctx, len(data), header)
    if kind == "truncated":
        return data[:-1]
    if kind == "signature_flip":  # the last signature byte (just before the payload)
        at = len(data) - header["payload_length"] - 1
        return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
    if kind == "header_edit":  # the signed context edited in place (same length)
        edited = data.replace(b'"artifact":"victim"', b'"artifact":"victiN"', 1)
        assert edited != data
        return edited
    raise AssertionError(kind)


def _publish_and_tamper(
    make_io_manager: Any, store_dir: Path, key_store: Any, marker: Path, kind: str
) -> tuple[Path, bytes]:
    """Publish ``victim``; its payload's path and the ``kind`` of tampered bytes for it."""
    from dagster import materialize

    assert materialize([victim], resources={"m": make_io_manager()}).success
    path = version_files(store_dir, "victim")[PAYLOAD]
    return path, _tampered(kind, path, key_store, marker)


def pickle_bytes(marker: Path) -> bytes:
    from kit.payloads import reduce_os_system

    return reduce_os_system(marker)


EXPECTED = {
    "payload_bytes": "TamperedPayloadError",
    "other_artifact": "ContextMismatchError",
    "same_artifact_other_object": "mix-and-match",
    "role_manifest": "ContextMismatchError",
    "truncated": "payload truncated",
    "signature_flip": "signature does not match",
    "header_edit": "signature does not match",
}
REST_EXPECTED = {"truncated": "the manifest signed"}  # the size check catches it at rest
KINDS = list(EXPECTED)
READS: list[dict[str, Any]] = [{}, {"get": "pickle"}]


@pytest.mark.parametrize("when", ["at_rest", "after_the_manifest_check"])
@pytest.mark.parametrize("read_config", READS, ids=["whole", "get"])
@pytest.mark.parametrize("kind", KINDS)
def test_red7_tampered_payload_runs_nothing(
    key_store: Any, make_io_manager: Any, store_dir: Path, marker: Path,
    monkeypatch: pytest.MonkeyPatch, kind: str, read_config: dict[str, Any], when: str,
) -> None:
    path, bad = _publish_and_tamper(make_io_manager, store_dir, key_store, marker, kind)
    if when == "at_rest":
        writable(path).write_bytes(bad)
    else:
        real = core_manifest.verify_manifest

        def verify_then_swap(*args: Any, **kwargs: Any) -> Any:
            out = real(*args, **kwargs)
            writable(path).write_bytes(bad)
            return out

        monkeypatch.setattr(core_manifest, "verify_manifest", verify_then_swap)
    uses = count_calls(monkeypatch, LocalArtifactStore, "record_use")
    marks = count_calls(monkeypatch, verification, "check_alias_history")
    result = _read(make_io_manager, **read_config)
    assert not result.success
    text = failure_text(result)
    assert "victim" in text, text
    wanted = REST_EXPECTED.get(kind, EXPECTED[kind]) if when == "at_rest" else EXPECTED[kind]
    assert wanted in text, text
    assert not marker.exists()
    if not read_config:
        assert uses == [] and marks == []  # refused before the marks and the use record


@pytest.mark.parametrize("kind", KINDS)
def test_red7_get_path_copy_of_a_tampered_payload_is_refused(
    key_store: Any, make_io_manager: Any, store_dir: Path, marker: Path, kind: str
) -> None:
    from dagster import materialize

    assert materialize([victim], resources={"m": make_io_manager()}).success
    path = version_files(store_dir, "victim")[PAYLOAD]
    writable(path).write_bytes(_tampered(kind, path, key_store, marker))
    result = _read(make_io_manager, get_path=PAYLOAD)
    assert not result.success
    assert not marker.exists()


def test_red7_untampered_reads_still_work(
    key_store: Any, make_io_manager: Any, store_dir: Path
) -> None:
    from dagster import materialize

    assert materialize([victim], resources={"m": make_io_manager()}).success
    for cfg in READS:
        result = _read(make_io_manager, **cfg)
        assert result.success and result.seen["value"] == {"safe": "x" * 400}


@pytest.mark.parametrize(
    "read_config", [*READS, {"get_path": PAYLOAD}], ids=["whole", "get", "get_path"]
)
def test_red7_payload_removed_after_the_manifest_check_is_a_typed_error(
    key_store: Any, make_io_manager: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch,
    read_config: dict[str, Any],
) -> None:
    """The store removes the payload between the manifest check and the one read of it: a
    typed error naming the version (was: a bare FileNotFoundError out of ``open_no_follow``)."""
    from dagster import materialize

    assert materialize([victim], resources={"m": make_io_manager()}).success
    path = version_files(store_dir, "victim")[PAYLOAD]
    real = core_manifest.verify_manifest

    def verify_then_remove(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        writable(path).unlink()
        return out

    monkeypatch.setattr(core_manifest, "verify_manifest", verify_then_remove)
    result = _read(make_io_manager, **read_config)
    assert not result.success
    text = failure_text(result)
    assert "TamperedPayloadError" in text and "victim:v0" in text, text
    assert "could not be read after the manifest check" in text, text


def test_red7_plain_file_removed_before_its_private_copy_is_a_typed_error(tmp_path: Path) -> None:
    from dagster_wandb_secure.artifacts.private_copies import copy_verified
    from dagster_wandb_secure.core.errors import TamperedPayloadError

    target = tmp_path / "private" / "data.csv"
    with pytest.raises(TamperedPayloadError, match="could not be read after the manifest check"):
        copy_verified(tmp_path / "gone.csv", target, "0" * 64, artifact="victim", key_id=None)
    assert not target.exists()
