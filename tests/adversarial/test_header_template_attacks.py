"""Red-team tests for the precompiled header templates (``core/header_template.py``): no header
bytes the strict path (``canonical.decode`` + ``check_schema``) refuses are admitted by a
template match, a match decodes to exactly what the strict path decodes, and a template made
for one key, context or serializer shape is never matched (reader) nor rendered (writer) for
another. These pin what the review found sound; they are differential, so a later change to
either path that lets the two disagree fails here."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagster_wandb_secure.core import canonical, header_template
from dagster_wandb_secure.core.envelope_format import check_schema
from dagster_wandb_secure.core.errors import MalformedEnvelopeError
from kit.strict_header import strict_fields

BASE: dict[str, Any] = {
    "format": 1,
    "alg": "ed25519",
    "kid": "k-0123456789abcdef",
    "digest_alg": "blake3",
    "payload_blake3": "ab" * 32,
    "payload_length": 1234,
    "serializer": "pickle",
    "serializer_version": "1",
    "serializer_params": {"protocol": 5, "framing": "oob-v1", "flag": True},
    "context": {"artifact": "small", "partition": None, "type": "dataset"},
    "signed_at": "2026-01-02T03:04:05.000006Z",
}


def _learn(fields: dict[str, Any]) -> bytes:
    header = canonical.encode_shaped(fields)
    assert strict_fields(header) == fields
    header_template.remember_reader(fields, "payload_blake3", header)
    assert header_template.decode_known(header) == fields
    return header


def _schema(fields: dict[str, Any]) -> str:
    try:
        check_schema(fields, None)
    except MalformedEnvelopeError as exc:
        return str(exc)
    return "ok"


def _same_as_strict(header: bytes) -> None:
    """A match decodes to exactly ``canonical.decode``'s fields, and the schema check the
    callers run next (``_read_prefix`` -> ``check_schema``; ``_verify_templated`` parses
    ``signed_at`` and falls back on an invalid date) decides them with the same message."""
    known = header_template.decode_known(header)
    if known is not None:
        decoded = canonical.decode(header)
        assert decoded == known, header
        assert _schema(known) == _schema(decoded)


SLOT_EDITS = [
    # payload_length: signs, zeros, exponents, fractions, lengths at and over 20 digits,
    # Unicode digits (raw and escaped), whitespace
    *(
        (b'"payload_length":1234', b'"payload_length":' + v)
        for v in (
            b"-1", b"-0", b"01234", b"0", b"1e3", b"1234.0", b"+1234", b" 1234", b"1234 ",
            b"9" * 20, b"9" * 21, b"1" + b"0" * 19, b"1" + b"0" * 20, "١٢".encode(),
            b'"1234"', b"true", b"null", b"0x10", b"\\u0031",
        )
    ),
    # the digest: case, escapes, length
    *(
        (b'"payload_blake3":"' + b"ab" * 32 + b'"', b'"payload_blake3":"' + v + b'"')
        for v in (
            b"AB" * 32, b"ab" * 31, b"ab" * 33, b"\\u0061" + b"b" + b"ab" * 31,
            b"ab" * 31 + b"a\xc3\xa9", b"ab" * 31 + b"a\n",
        )
    ),
    # signed_at: Unicode digits, escapes, invalid dates, other shapes
    *(
        (b'"signed_at":"2026-01-02T03:04:05.000006Z"', b'"signed_at":"' + v + b'"')
        for v in (
            "٢026-01-02T03:04:05.000006Z".encode(), b"\\u0032026-01-02T03:04:05.000006Z",
            b"2026-02-30T03:04:05.000006Z", b"2026-13-02T03:04:05.000006Z",
            b"2026-01-02T03:04:05.000006z", b"2026-01-02 03:04:05.000006Z",
            b"2026-01-02T03:04:05.00006Z", b"2026-01-02T03:04:05.000006Z\\n",
            b"2026-01-02T24:04:05.000006Z",
        )
    ),
    # duplicate keys, a second slot, trailing bytes, a trailing newline ($ vs \Z)
    (b'"payload_length":1234', b'"payload_length":1234,"payload_length":1234'),
    (b'"payload_length":1234', b'"payload_length":1,"payload_length":1234'),
    (b'"signed_at"', b'"signed_at":"2026-01-02T03:04:05.000006Z","signed_at"'),
]


@pytest.mark.parametrize(("old", "new"), SLOT_EDITS)
def test_no_slot_value_the_strict_path_refuses_is_matched(old: bytes, new: bytes) -> None:
    header_template.clear()
    header = _learn(dict(BASE))
    assert old in header
    edited = header.replace(old, new, 1)
    _same_as_strict(edited)
    known = header_template.decode_known(edited)
    if strict_fields(edited) is None and known is not None:
        assert _schema(known) != "ok"  # only an invalid date: refused by the schema, as before


@pytest.mark.parametrize("tail", [b"\n", b"\r\n", b" ", b"\x00", b"}", b",", b"\n\n"])
def test_trailing_or_leading_bytes_are_not_matched(tail: bytes) -> None:
    header_template.clear()
    header = _learn(dict(BASE))
    for edited in (header + tail, tail + header, header[:-1] + tail + b"}"):
        assert header_template.decode_known(edited) is None
        assert strict_fields(edited) is None


@pytest.mark.parametrize(
    "context",
    [
        # a context value holding the template's own literal text, or its slot placeholders
        {"artifact": '","payload_length":1,"x":"'},
        {"artifact": ',"payload_blake3":"' + "0" * 64 + '"'},
        {"artifact": "?dws-slot-digest?"},
        {"artifact": "?dws-slot-length?", "type": "?dws-slot-signed-at?"},
        # a context key that begins like a slot (the reader's lookup key stops at it)
        {"artifact": "a", "payload_x": "1"},
        {"payload_length": "7"},
        # escapes: control characters, quotes, backslashes, non-ASCII, the line separators
        {"artifact": 'a"b\\c\n\t\x00\x7f\u2028\u2029é😀'},
    ],
)
def test_a_context_holding_slot_or_literal_text_matches_only_itself(
    context: dict[str, str | None],
) -> None:
    header_template.clear()
    fields = dict(BASE, context=context)
    header = canonical.encode_shaped(fields)
    if strict_fields(header) is None:
        pytest.skip("not a header the strict path admits")
    header_template.remember_reader(fields, "payload_blake3", header)
    _same_as_strict(header)
    for other in ({"artifact": "small"}, {k: (v or "") + "x" for k, v in context.items()}):
        header2 = canonical.encode_shaped(dict(BASE, context=other))
        assert header_template.decode_known(header2) in (None, strict_fields(header2))


def test_a_context_differing_only_in_escaping_is_not_matched() -> None:
    """The same context value written with a JSON escape (what ``json.loads`` reads as equal
    text) is not canonical: refused by the strict path, not matched by the template."""
    header_template.clear()
    header = _learn(dict(BASE, context={"artifact": "aé"}))
    for old, new in ((b'"a\xc3\xa9"', b'"a\\u00e9"'), (b'"a\xc3\xa9"', b'"\\u0061\xc3\xa9"')):
        edited = header.replace(old, new, 1)
        assert edited != header
        assert strict_fields(edited) is None and header_template.decode_known(edited) is None


@pytest.mark.parametrize(
    "change",
    [
        {"kid": "k-fedcba9876543210"},
        {"alg": "hmac-sha256"},
        {"serializer": "cloudpickle"},
        {"serializer_version": "2"},
        {"serializer_params": {"protocol": 4, "framing": "oob-v1", "flag": True}},
        {"serializer_params": {"protocol": 5, "framing": "oob-v1", "flag": 1}},
        {"serializer_params": {"protocol": 5, "framing": "oob-v1"}},
        {"context": {"artifact": "small", "partition": "2026-01-01", "type": "dataset"}},
        {"context": {"artifact": "small", "partition": "", "type": "dataset"}},
        {"context": {"artifact": "small", "type": "dataset"}},
        {"context": {"artifact": "smalL", "partition": None, "type": "dataset"}},
    ],
)
def test_a_template_never_serves_another_shape(change: dict[str, Any]) -> None:
    """Reader: the other shape's header is not matched by this shape's template. Writer: the
    template of one shape never renders another's header (every byte of the fixed fields comes
    from its own shape: key id, algorithm, serializer and parameters, context)."""
    header_template.clear()
    _learn(dict(BASE))
    other = dict(BASE, **change)
    other_header = canonical.encode_shaped(other)
    assert header_template.decode_known(other_header) is None
    for fields in (dict(BASE), other, dict(BASE)):
        slotless = {k: v for k, v in fields.items()}
        template = header_template.writer_template(slotless, "payload_blake3")
        assert template is not None
        rendered = template.render(
            fields["payload_blake3"], fields["payload_length"], fields["signed_at"]
        )
        assert rendered == canonical.encode_shaped(fields)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pos=st.integers(min_value=0, max_value=10_000),
    cut=st.integers(min_value=0, max_value=3),
    insert=st.binary(max_size=4) | st.sampled_from([b"0", b"-", b'\\"', b"\\u00", b"\n", b","]),
)
def test_any_splice_is_matched_only_as_the_strict_path_reads_it(
    pos: int, cut: int, insert: bytes
) -> None:
    header_template.clear()
    header = _learn(dict(BASE))
    pos %= len(header) + 1
    _same_as_strict(header[:pos] + insert + header[pos + cut :])


# --- the header that made a reader template must not share the template's dicts ---------------


@pytest.mark.parametrize("cold", ["bytes", "file"])
def test_mutating_the_first_header_read_cannot_change_what_a_template_decodes(
    tmp_path: Any, cold: str
) -> None:
    """The first read of a shape takes the strict path and makes the reader template from its
    decoded fields. Before the fix the template kept *those* ``context`` and
    ``serializer_params`` dicts, which the returned ``EnvelopeHeader`` also hands out: code that
    changed ``header.context`` of that first read rewrote what every later header of the shape
    decodes to, so an envelope signed for artifact "small" was accepted as artifact "other"."""
    from dagster_wandb_secure.core.envelope import seal, seal_to, unseal, verify_bytes, verify_file
    from dagster_wandb_secure.core.errors import ContextMismatchError
    from dagster_wandb_secure.core.keys import KeyStore

    ks = KeyStore.open(tmp_path / "keys")
    ks.generate("ed25519")
    ctx = {"artifact": "small", "type": "dataset"}
    data = seal({"a": 1}, key_store=ks, context=ctx, record=False)
    header_template.clear()
    if cold == "bytes":
        first, _ = verify_bytes(data, key_store=ks)  # strict path: makes the template
    else:
        seal_to(tmp_path / "obj", {"a": 1}, key_store=ks, context=ctx, record=False)
        first, _ = verify_file(tmp_path / "obj", key_store=ks)
    assert header_template.reader_template(first.header_bytes) is not None
    first.context["artifact"] = "other"  # type: ignore[index]
    first.serializer_params["framing"] = "inband"  # type: ignore[index]
    with pytest.raises(ContextMismatchError):
        unseal(data, key_store=ks, expected_context={"artifact": "other"})
    assert unseal(data, key_store=ks, expected_context=ctx) == {"a": 1}
    again, _ = verify_bytes(data, key_store=ks)
    assert dict(again.context) == ctx
    assert again.serializer_params == canonical.decode(again.header_bytes)["serializer_params"]
