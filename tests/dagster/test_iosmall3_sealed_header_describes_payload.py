"""The manifest describes a payload from the header ``seal_to`` signed in memory, not from the
staged file read back (issue 16, small assets): no second open and header parse per publish,
and the manifest names what was signed even if the staged file was swapped in between."""

from __future__ import annotations

from typing import Any

import pytest

from dagster import AssetIn, asset, materialize
from dagster_wandb_secure.artifacts import publishing
from dagster_wandb_secure.core import manifest as core_manifest
from kit.counting import count_calls
from kit.fan_in import fan_in_assets


def test_a_sealed_payload_is_not_read_back_to_describe_it(
    key_store: Any, make_io_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    described = count_calls(monkeypatch, publishing, "describe_file")
    headers_read = count_calls(monkeypatch, core_manifest, "read_header_unverified")
    assert materialize(fan_in_assets(3), resources={"io_manager": make_io_manager()}).success
    # 4 publishes, each one payload envelope and nothing else: nothing described from disk
    assert described == []
    assert headers_read == []


def test_the_manifest_names_the_sealed_payload_not_a_file_swapped_in_staging(
    key_store: Any, make_io_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another validly signed envelope of the same size put in place of the staged payload
    after it was sealed: the manifest still names the sealed one, so the read refuses the
    swapped file (read back, the manifest would have named and blessed the swapped one)."""
    from dagster_wandb_secure.core.errors import TamperedPayloadError

    @asset(name="swapped")
    def swapped() -> dict[str, int]:
        return {"i": 1}

    @asset(name="reader", ins={"swapped": AssetIn()})
    def reader(swapped: dict[str, int]) -> int:
        return swapped["i"]

    real_seal_to = publishing.seal_to

    def seal_then_swap(path: Any, obj: Any, **kw: Any) -> Any:
        header = real_seal_to(path, obj, **kw)
        if obj == {"i": 1}:
            other = path.with_name("other")
            real_seal_to(other, {"i": 2}, **kw)  # same key, context and size, other payload
            assert other.stat().st_size == path.stat().st_size
            other.chmod(path.stat().st_mode)
            other.replace(path)
        return header

    io = make_io_manager()
    monkeypatch.setattr(publishing, "seal_to", seal_then_swap)
    assert materialize([swapped], resources={"io_manager": io}).success
    monkeypatch.setattr(publishing, "seal_to", real_seal_to)
    with pytest.raises(TamperedPayloadError, match="not the one the manifest signed"):
        materialize([swapped, reader], resources={"io_manager": io}, selection=["reader"])
