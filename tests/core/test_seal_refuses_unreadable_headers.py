"""A writer never signs a header its readers refuse. Seal encodes its header in one pass
(``canonical.encode_shaped``); that pass must apply the reader's byte-level depth rule (every
``[``/``{`` counts, inside strings too) and ``check_shape`` the reader's integer rule (at most
``MAX_INT_DIGITS`` characters, the minus sign included). Before, such headers were sealed,
signed and recorded, and every reader then refused the envelope."""

from __future__ import annotations

import io
from typing import Any

import pytest

from dagster_wandb_secure.core import canonical
from dagster_wandb_secure.core.envelope import seal_serialized_to, verify_bytes
from dagster_wandb_secure.core.keys import KeyStore

UNREADABLE = [
    {"descr": "[" * (canonical.MAX_DEPTH + 1)},  # brackets in a string count for readers
    {"nested": [[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]},  # 17 levels inside the header: 19
    {"n": -(10**canonical.MAX_INT_DIGITS - 1)},  # 20 digits and a sign: 21 characters
]


@pytest.mark.parametrize("params", UNREADABLE, ids=["bracket-string", "nested", "negative-int"])
def test_seal_refuses_a_header_readers_refuse(key_store: KeyStore, params: dict[str, Any]) -> None:
    with pytest.raises(canonical.CanonicalJSONError):
        seal_serialized_to(
            io.BytesIO(),
            b"payload",
            key_store=key_store,
            serializer="pickle",
            serializer_version="1",
            serializer_params=params,
        )


@pytest.mark.parametrize(
    "params",
    [{"n": -(10 ** (canonical.MAX_INT_DIGITS - 1) - 1)}, {"n": 10**canonical.MAX_INT_DIGITS - 1}],
    ids=["negative-19-digits", "positive-20-digits"],
)
def test_the_longest_integers_readers_take_still_seal(
    key_store: KeyStore, params: dict[str, Any]
) -> None:
    buf = io.BytesIO()
    seal_serialized_to(
        buf,
        b"payload",
        key_store=key_store,
        serializer="pickle",
        serializer_version="1",
        serializer_params=params,
    )
    header, _ = verify_bytes(buf.getvalue(), key_store=key_store)
    assert header.serializer_params == params


@pytest.mark.parametrize("value", [-(10**19), -(10**20 - 1), 10**20, -(10**25)])
def test_encode_check_shape_and_decode_agree_on_integers(value: int) -> None:
    """The fast loop, the walk and ``encode`` refuse exactly what ``decode`` refuses."""
    text = str(value).encode()
    with pytest.raises(canonical.CanonicalJSONError):
        canonical.decode(text)
    for check in (canonical.check_shape, canonical.encode):
        with pytest.raises(canonical.CanonicalJSONError):
            check({"n": value})
