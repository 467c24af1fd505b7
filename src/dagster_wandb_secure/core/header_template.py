"""Precompiled envelope headers: the canonical header bytes of one (key, serializer, context)
shape with its three per-object values - payload digest, payload length, ``signed_at`` - left
as slots. The format does not change: a template renders exactly the bytes
``canonical.encode_shaped`` gives for the same fields, and it matches exactly those bytes.

A writer renders a header by joining the template's fixed byte segments with the three values
(no JSON pass per seal). A reader matches a header against a template segment by segment (the
fixed segments byte for byte, and each slot by its strict form, one module-level compiled
pattern per slot kind: 64 lowercase hex digits, a canonical non-negative integer of at most 20
digits, a ``signed_at`` of ASCII digits; the whole header consumed), instead of a strict JSON
parse plus a re-encode. No regular expression is compiled per template: the shapes include the
artifact's context, so a process meets one or two new shapes per asset, and compiling one
pattern per shape cost ~0.25 ms each. What a match admits is
exactly what ``canonical.decode`` + ``check_schema`` admit with the same result, because

- a reader template is made only from a header that passed the full strict path (``decode``:
  canonical, ``check_schema``: exact keys and types) *and* whose signature verified, so its
  fixed fields are known good, and its slots are checked here as the schema checks them
  (``signed_at`` is still parsed per header; an invalid date falls back to the full path);
- a template is only a parser and an encoder. It holds no key, no trust decision and no key
  store state: every check that depends on the key store, the policy or the reader's
  expectations runs on every unseal after the match (``core/_envelope_read.py``).

Anything that does not match is read by the full path, which decides (and names the reason)
exactly as before. SECURITY.md, "Caches on the hot path"."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from . import canonical

__all__ = [
    "HeaderTemplate",
    "decode_known",
    "reader_template",
    "remember_reader",
    "writer_template",
]

# Placeholders for the slots while a template is built: json.dumps writes them verbatim (no
# character needs escaping), and a template is refused unless each occurs exactly once.
_SLOT_DIGEST = "?dws-slot-digest?"
_SLOT_LENGTH = "?dws-slot-length?"
_SLOT_SIGNED = "?dws-slot-signed-at?"
# Per cache; a full cache forgets its oldest template. The shapes include the artifact's context:
# a run of N assets needs ~2N writer and ~2N reader templates (payload and manifest), so this
# must exceed what one run meets, or every run rebuilds them all (256, emptied when full, did for
# 200 assets). A template holds ~2-3 KB (its fields and segments).
MAX_TEMPLATES = 4096

# The slots as a reader matches them, at a position (bytes patterns: [0-9] is ASCII only,
# unlike str's \d). ``length`` is followed by a fixed segment that does not start with a digit
# (checked when a template is built), so its longest match is its only possible one.
_SLOT_RE = {
    "digest": re.compile(rb'"([0-9a-f]{64})"'),
    "length": re.compile(rb"(0|[1-9][0-9]{0,19})"),
    "signed_at": re.compile(
        rb'"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)"'
    ),
}
_DIGITS = frozenset(b"0123456789")


class HeaderTemplate:
    """The canonical encoding of one header shape, with the digest, length and signed_at slots
    (module docstring). ``fields`` are the fixed fields (read-only by convention: never hand
    them out, copy)."""

    __slots__ = ("fields", "digest_field", "_segments", "_order", "_steps", "lookup")

    def __init__(self, fields: Mapping[str, Any], digest_field: str) -> None:
        """``fields``: a complete header minus the three slots. Raises ValueError when the
        shape cannot be templated (a placeholder text inside a fixed field)."""
        probe = dict(fields)
        probe[digest_field] = _SLOT_DIGEST
        probe["payload_length"] = _SLOT_LENGTH
        probe["signed_at"] = _SLOT_SIGNED
        data = canonical.encode_shaped(probe)
        found = []
        for name, slot in (
            ("digest", _SLOT_DIGEST),
            ("length", _SLOT_LENGTH),
            ("signed_at", _SLOT_SIGNED),
        ):
            token = b'"' + slot.encode("utf-8") + b'"'
            if data.count(slot.encode("utf-8")) != 1:
                raise ValueError("a fixed header field contains a template placeholder")
            found.append((data.index(token), name, token))
        found.sort()
        segments: list[bytes] = []
        pos = 0
        for at, _name, token in found:
            segments.append(data[pos:at])
            pos = at + len(token)
        segments.append(data[pos:])
        # its own copies of the (flat) context and parameters: the caller's dicts are handed out
        # (the EnvelopeHeader of the read that made a reader template), and a change to them
        # must never change what this template decodes for every later header of its shape
        self.fields = {k: dict(v) if type(v) is dict else v for k, v in fields.items()}
        self.digest_field = digest_field
        self._segments = segments
        self._order = tuple(name for _at, name, _token in found)
        self.lookup = _reader_key(segments[0])  # what _reader_key finds in its headers
        for name, segment in zip(self._order, segments[1:], strict=True):
            if name == "length" and segment[:1] and segment[0] in _DIGITS:
                raise ValueError("a digit follows the length slot")  # pragma: no cover - JSON
        self._steps = tuple(
            (_SLOT_RE[name].match, segment)
            for name, segment in zip(self._order, segments[1:], strict=True)
        )
        # the template encodes as the canonical encoder does (checked once, on sample values)
        sample = {"digest": "0" * 64, "length": 1234, "signed_at": "2000-01-02T03:04:05.000006Z"}
        full = dict(fields)
        full[digest_field] = sample["digest"]
        full["payload_length"] = sample["length"]
        full["signed_at"] = sample["signed_at"]
        rendered = self.render(sample["digest"], sample["length"], sample["signed_at"])
        if rendered != canonical.encode_shaped(full) or self.match(rendered) is None:
            raise ValueError("the header template does not encode canonically")  # pragma: no cover

    def render(self, digest: str, length: int, signed_at: str) -> bytes:
        """The header bytes with these values: equal to ``canonical.encode_shaped`` of the full
        fields. ``digest`` is 64 lowercase hex, ``signed_at`` from ``format_time`` (neither needs
        a JSON escape), ``length`` a non-negative int."""
        values = {
            "digest": b'"' + digest.encode("ascii") + b'"',
            "length": str(length).encode("ascii"),
            "signed_at": b'"' + signed_at.encode("ascii") + b'"',
        }
        s0, s1, s2, s3 = self._segments
        first, second, third = self._order
        return b"".join((s0, values[first], s1, values[second], s2, values[third], s3))

    def match(self, header: bytes) -> tuple[str, int, str] | None:
        """``(digest, length, signed_at)`` when ``header`` is exactly this template with valid
        slot values, else None."""
        first = self._segments[0]
        if not header.startswith(first):
            return None
        pos = len(first)
        groups = []
        for slot_match, segment in self._steps:
            found = slot_match(header, pos)
            if found is None:
                return None
            pos = found.end()
            if not header.startswith(segment, pos):
                return None
            groups.append(found.group(1))
            pos += len(segment)
        if pos != len(header):
            return None
        values = dict(zip(self._order, groups, strict=True))
        return (
            values["digest"].decode("ascii"),
            int(values["length"]),
            values["signed_at"].decode("ascii"),
        )


def _shape_key(fields: Mapping[str, Any], digest_field: str) -> tuple[Any, ...] | None:
    """A hashable key that determines the encoded bytes of the fixed fields, or None (nested
    parameters: no template). Types are part of the key (``True == 1`` in Python, not in JSON)."""
    params = fields["serializer_params"]
    context = fields["context"]
    try:
        key = (
            fields["format"],
            fields["alg"],
            fields["kid"],
            fields["digest_alg"],
            digest_field,
            fields["serializer"],
            fields["serializer_version"],
            tuple(params.items()),
            tuple(map(type, params.values())),
            tuple(context.items()),
            tuple(map(type, context.values())),
        )
        hash(key)
    except TypeError:
        return None
    return key


class _Cache:
    """A bounded map (thread-safe for the writes; reads are single dict lookups)."""

    def __init__(self) -> None:
        self._map: dict[Any, HeaderTemplate] = {}
        self._mutex = threading.Lock()

    def get(self, key: Any) -> HeaderTemplate | None:
        return self._map.get(key)

    def put(self, key: Any, template: HeaderTemplate) -> None:
        with self._mutex:
            self._map.pop(key, None)
            while len(self._map) >= MAX_TEMPLATES:
                del self._map[next(iter(self._map))]  # the oldest (dicts keep insertion order)
            self._map[key] = template

    def clear(self) -> None:
        with self._mutex:
            self._map.clear()


_WRITER = _Cache()
_READER = _Cache()  # keyed by the template's first fixed segment


def writer_template(fields: Mapping[str, Any], digest_field: str) -> HeaderTemplate | None:
    """The template for a header a writer built from checked parts (``envelope._assemble``);
    None when the shape has no template (the writer then encodes the header itself)."""
    key = _shape_key(fields, digest_field)
    if key is None:
        return None
    template = _WRITER.get(key)
    if template is None:
        try:
            template = HeaderTemplate(
                {k: v for k, v in fields.items() if k not in ("payload_length", "signed_at")},
                digest_field,
            )
        except (ValueError, canonical.CanonicalJSONError):
            return None
        _WRITER.put(key, template)
    return template


def _reader_key(header: bytes) -> bytes | None:
    """The bytes before the first ``,"payload_`` (the first slot's key in every header, unless a
    context key starts with ``payload_``), as a lookup key. Only a lookup: a wrong guess finds no
    template, or one that does not match."""
    end = header.find(b',"payload_')
    return header[:end] if end > 0 else None


def reader_template(header: bytes) -> HeaderTemplate | None:
    """The reader template ``header`` may match (the caller still calls ``match``)."""
    key = _reader_key(header)
    return _READER.get(key) if key is not None else None


def decode_known(header: bytes) -> dict[str, Any] | None:
    """What ``canonical.decode(header)`` returns (a new, complete copy), when ``header`` matches
    the reader template of its shape; None otherwise (the caller decodes it strictly)."""
    if type(header) is not bytes:
        return None
    template = reader_template(header)
    slots = template.match(header) if template is not None else None
    if slots is None:
        return None
    assert template is not None
    fields = {k: dict(v) if type(v) is dict else v for k, v in template.fields.items()}
    fields[template.digest_field], fields["payload_length"], fields["signed_at"] = slots
    return fields


def remember_reader(fields: Mapping[str, Any], digest_field: str, header: bytes) -> None:
    """Make a reader template from a header that passed the full strict path and whose
    signature verified (``fields``: what ``canonical.decode`` returned for ``header``), unless
    its template is known already. Flat shapes only (a template's fields are copied per header
    with ``dict()``, a complete copy only when no value is a list or an object)."""
    key = _reader_key(header)
    known = _READER.get(key) if key is not None else None
    if known is not None and known.match(header) is not None:
        return
    if key is None or _shape_key(fields, digest_field) is None:
        return
    slots = (digest_field, "payload_length", "signed_at")
    try:
        template = HeaderTemplate({k: v for k, v in fields.items() if k not in slots}, digest_field)
    except (ValueError, canonical.CanonicalJSONError):
        return
    if template.lookup != key or template.match(header) is None:
        return  # pragma: no cover - a decoded header always re-renders through its template
    _READER.put(key, template)


def clear() -> None:
    """Forget every template (tests)."""
    _WRITER.clear()
    _READER.clear()
