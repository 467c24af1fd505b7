"""Red team 7: the slot-by-slot reader template (no per-template regex) must admit exactly what
the strict path (``canonical.decode`` + ``check_schema``) admits for the same bytes, with the
same fields. Differential over mutated headers of a shape whose template is known."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_wandb_secure.core import canonical, header_template
from dagster_wandb_secure.core.envelope import seal, unseal, verify_bytes
from dagster_wandb_secure.core.envelope_format import parse_time
from dagster_wandb_secure.core.errors import SecureArtifactError
from dagster_wandb_secure.core.keys import KeyStore
from kit.strict_header import strict_fields

CTX = {"artifact": "red7_asset", "type": "dataset"}


def _fast(header: bytes) -> dict[str, Any] | None:
    """The fast path as its callers use it: the match, then the date parsed per header."""
    fields = header_template.decode_known(header)
    if fields is None:
        return None
    try:
        parse_time(fields["signed_at"])
    except ValueError:
        return None  # the callers fall back to (or run) the strict schema check
    return fields


@pytest.fixture
def learned(key_store: KeyStore) -> bytes:
    header_template.clear()
    data = seal({"rows": 3}, key_store=key_store, context=CTX, record=False)
    assert unseal(data, key_store=key_store, expected_context=CTX) == {"rows": 3}
    header = verify_bytes(data, key_store=key_store)[0].header_bytes
    assert header_template.decode_known(header) is not None  # the template is known
    return header


_TOKENS = [
    b"0", b"00", b"01", b"-0", b"1e3", b"1.0", b" ", b"\t", b"\n", b"\x00", b'"', b"\\",
    b"\\u0030", b"\\ud800", b"\xed\xa0\x80", b"\xef\xbc\x91", b"\xd9\xa3", b"a", b"A", b"f",
    b"g", b"9" * 25, b",", b":", b"}", b"{", b'"payload_length":', b',"x":1', b"Z", b"T",
    b"2000-01-02T03:04:05.000006Z", b"9999-99-99T99:99:99.999999Z", b"\xff",
]


def _mutate(header: bytes, ops: list[tuple[int, int, int, int]]) -> bytes:
    out = bytearray(header)
    for kind, at, size, token in ops:
        at = at % (len(out) + 1)
        tok = _TOKENS[token % len(_TOKENS)]
        if kind == 0:
            out[at:at] = tok
        elif kind == 1:
            del out[at : at + 1 + size % 4]
        elif kind == 2:
            out[at : at + 1 + size % 4] = tok
        else:  # duplicate a slice (duplicate keys / repeated slots)
            piece = bytes(out[at : at + 1 + size * 3])
            out[at:at] = piece
    return bytes(out)


def _focus(header: bytes) -> list[int]:
    """Positions of the slots (most mutations land there)."""
    spots = [header.find(b'"payload_'), header.find(b'"payload_length"'),
             header.find(b'"signed_at"'), len(header) - 1]
    return [s for s in spots if s >= 0]


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(0, 2000), st.integers(0, 40), st.integers(0, 100)
        ),
        min_size=1,
        max_size=3,
    ),
    near=st.integers(0, 3),
    offset=st.integers(-4, 90),
)
def test_fast_path_equals_strict_path(
    learned: bytes, ops: list[tuple[int, int, int, int]], near: int, offset: int
) -> None:
    spots = _focus(learned)
    base = spots[near % len(spots)] + offset
    ops = [(k, base + (a % 8) if i == 0 else a, s, t) for i, (k, a, s, t) in enumerate(ops)]
    header = _mutate(learned, ops)
    fast = _fast(header)
    strict = strict_fields(header)
    if fast is not None:
        assert strict is not None, header
        assert fast == strict
        assert {k: type(v) for k, v in fast.items()} == {k: type(v) for k, v in strict.items()}


def test_slot_values_at_their_bounds(learned: bytes) -> None:
    fields = canonical.decode(learned)
    digest_field = next(k for k in fields if k.startswith("payload_") and k != "payload_length")
    cases = []
    for length in (0, 1, 10**19, 10**20 - 1, 10**20, 2**64):
        cases.append({**fields, "payload_length": length})
    for digest in ("0" * 64, "f" * 64, "F" * 64, "0" * 63, "0" * 65):
        cases.append({**fields, digest_field: digest})
    for ts in ("2000-13-02T03:04:05.000006Z", "2000-02-30T03:04:05.000006Z",
               "0000-01-01T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z"):
        cases.append({**fields, "signed_at": ts})
    for case in cases:
        header = canonical.encode_shaped(case)
        fast = _fast(header)
        strict = strict_fields(header)
        if fast is not None:
            assert strict is not None, header
            assert fast == strict


_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True) | st.sampled_from(
    ["payload_x", "payload_length", "signed_at", "payload_digest", "artifact", "role"]
)
_VALUES = st.none() | st.text(max_size=40) | st.sampled_from(
    ['",\"payload_length\":1', "?dws-slot-digest?", "?dws-slot-length?", "\\", "\x00",
     "\u2028", "1e3", "-0", "00", ',"payload_', "}", "\ud800"]
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    context=st.dictionaries(_KEYS, _VALUES, max_size=5),
    ops=st.lists(
        st.tuples(
            st.integers(0, 3), st.integers(0, 2000), st.integers(0, 40), st.integers(0, 100)
        ),
        min_size=0,
        max_size=3,
    ),
)
def test_any_context_shape_fast_equals_strict(
    key_store: KeyStore, context: dict[str, Any], ops: list[tuple[int, int, int, int]]
) -> None:
    header_template.clear()
    try:
        data = seal({"rows": 3}, key_store=key_store, context=context, record=False)
    except (SecureArtifactError, ValueError):
        return  # a context the writer refuses
    assert unseal(data, key_store=key_store, expected_context=context) == {"rows": 3}
    header = verify_bytes(data, key_store=key_store)[0].header_bytes
    for candidate in (header, _mutate(header, ops) if ops else header):
        fast = _fast(candidate)
        strict = strict_fields(candidate)
        if candidate == header:
            assert strict is not None
        if fast is not None:
            assert strict is not None, candidate
            assert fast == strict
