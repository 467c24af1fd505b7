"""A whole-content read verifies its payload envelope once, in private memory, inside
``verify_version`` (issue 16, small assets): ``verify_manifest`` no longer checks the same
envelope's signature on the store's bytes first (that check protected no use: the store's file
can change after it). The one check still runs before any history mark, use record or log line,
and what user code gets is what that check verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dagster import AssetIn, asset, materialize
from dagster_wandb_secure.artifacts import verification
from dagster_wandb_secure.core import envelope
from dagster_wandb_secure.core import manifest as core_manifest
from dagster_wandb_secure.core.errors import SecureArtifactError
from dagster_wandb_secure.stores.local import LocalArtifactStore
from kit.counting import count_calls
from kit.fan_in import fan_in_assets


def _pair() -> list[Any]:
    @asset(name="produced")
    def produced() -> dict[str, int]:
        return {"i": 1}

    @asset(name="consumer", ins={"produced": AssetIn()})
    def consumer(produced: dict[str, int]) -> int:
        return produced["i"]

    return [produced, consumer]


def _payload(store_dir: Path, name: str) -> Path:
    found = [p for p in store_dir.rglob("output.*") if name in p.parts]
    assert len(found) == 1, found
    return found[0]


def test_each_read_checks_its_payload_envelope_once(
    key_store: Any, make_io_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = make_io_manager()
    assets = fan_in_assets(3)
    assert materialize(assets, resources={"io_manager": io}).success
    on_store = count_calls(monkeypatch, core_manifest, "verify_path")
    in_memory = count_calls(monkeypatch, envelope, "verify_file")
    consumer = [a.key.to_user_string() for a in assets][-1]
    assert materialize(assets, resources={"io_manager": io}, selection=[consumer]).success
    assert on_store == []  # was 3: each input's envelope checked on the store's bytes first
    assert len(in_memory) == 3


def test_a_tampered_payload_is_refused_before_the_history_marks_move(
    key_store: Any, make_io_manager: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = make_io_manager()
    assert materialize(_pair()[:1], resources={"io_manager": io}).success
    path = _payload(store_dir, "produced")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    marks = count_calls(monkeypatch, verification, "check_alias_history")
    uses = count_calls(monkeypatch, LocalArtifactStore, "record_use")
    with pytest.raises(SecureArtifactError):
        materialize(_pair(), resources={"io_manager": io}, selection=["consumer"])
    assert marks == [] and uses == []  # was 1 and 1: a payload byte is only caught by the hash


def test_what_user_code_gets_is_what_was_verified_in_memory(
    key_store: Any, make_io_manager: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stored payload swapped for another validly signed envelope (same key, context and
    size) after the check: the read hands out the verified value, not the swapped file's."""
    io = make_io_manager()
    assert materialize(_pair()[:1], resources={"io_manager": io}).success
    path = _payload(store_dir, "produced")
    other = path.with_name("other")
    real_check = verification.check_alias_history

    def check_then_swap(*args: Any, **kwargs: Any) -> Any:
        result = real_check(*args, **kwargs)
        header = envelope.read_header_unverified(path)["header"]
        envelope.seal_to(
            other,
            {"i": 7},
            key_store=key_store,
            serializer=header["serializer"],
            context=dict(header["context"]),
            record=False,
            digest_alg=header["digest_alg"],
        )
        assert other.stat().st_size == path.stat().st_size
        path.chmod(0o600)
        other.replace(path)
        return result

    seen: list[int] = []

    @asset(name="consumer", ins={"produced": AssetIn()})
    def consumer(produced: dict[str, int]) -> int:
        seen.append(produced["i"])
        return produced["i"]

    monkeypatch.setattr(verification, "check_alias_history", check_then_swap)
    result = materialize(
        [_pair()[0], consumer], resources={"io_manager": io}, selection=["consumer"]
    )
    assert result.success and seen == [1]  # was: the swapped file re-read (mix-and-match)
