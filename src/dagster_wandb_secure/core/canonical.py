"""Canonical JSON: the one encoding the envelope header and manifests are signed in.

Encoding: ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`` encoded as UTF-8. Values are limited to objects with string keys, arrays,
strings, integers (no floats), booleans and null.

Decoding is strict, and a decoded document must re-encode to exactly the same bytes, so there is
one and only one byte string for every header: no whitespace, no escapes that could be written
another way, no key order games, no duplicate keys, no floats, no NaN, no invalid UTF-8, no
integers of absurd length, no nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 16
MAX_INT_DIGITS = 20


class CanonicalJSONError(ValueError):
    """The bytes are not canonical JSON of the allowed shape (the message says why)."""


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically. Raises CanonicalJSONError for unsupported values.

    Fast path: encode with the C encoder, parse the text back strictly with the C decoder and
    compare; only a value that does not survive the round trip (a float, a non-string key, a
    tuple...) is walked in Python to accept it (tuples) or say precisely what is wrong."""
    data = encode_shaped(value)  # the one encoding; then the strict round trip checks shape
    try:
        back = json.loads(
            data,
            parse_float=_reject_float,
            parse_int=_bounded_int,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError):  # CanonicalJSONError is a ValueError
        back = _NOT_EQUAL
    if back is _NOT_EQUAL or back != value:
        _check_shape(value, 0)
    return data


_NOT_EQUAL = object()


def encode_shaped(value: Any) -> bytes:
    """Encode a value whose shape is already known to be allowed, in ONE pass (no round trip).

    For values this library builds from checked parts (an envelope header: fixed keys, checked
    strings, its own integers, and parameters passed through ``check_shape``) and for values
    ``decode`` just parsed strictly. A float slipping through would be encoded, so any part the
    caller did not build itself goes through ``check_shape`` first; what json cannot encode (a
    lone surrogate, NaN, an unknown type) is still a CanonicalJSONError. The depth rule is
    checked on the bytes, as ``decode`` checks it (brackets inside strings count), so nothing is
    written that a reader refuses."""
    try:
        text = json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        data = text.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
        _check_shape(value, 0)
        raise CanonicalJSONError("value cannot be encoded as JSON") from None
    _check_depth_bytes(data)
    return data


def check_shape(value: Any) -> None:
    """CanonicalJSONError unless ``value`` has the allowed shape (module docstring).

    A flat object (string keys; string, integer, boolean or null values: what serializers sign
    as their parameters) is checked in one loop; anything else by the recursive walk, which also
    says what is wrong."""
    if type(value) is dict:
        for key, item in value.items():
            kind = type(item)
            if type(key) is not str or not _utf8_ok(key) or not (
                item is None
                or kind is bool
                or (kind is int and _INT_MIN < item < _INT_LIMIT)
                or (kind is str and _utf8_ok(item))
            ):
                break
        else:
            return
    _check_shape(value, 0)


# integers of at most MAX_INT_DIGITS characters, a minus sign included (what decode's parser
# admits: a writer must never sign an integer its readers refuse)
_INT_LIMIT = 10**MAX_INT_DIGITS
_INT_MIN = -(10 ** (MAX_INT_DIGITS - 1))


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode(data: bytes | memoryview, *, max_bytes: int = 65536) -> Any:
    """Decode canonical JSON strictly; the result re-encodes to the same bytes."""
    raw = bytes(data)
    if len(raw) > max_bytes:
        raise CanonicalJSONError(f"document is {len(raw)} bytes, over the {max_bytes}-byte cap")
    _check_depth_bytes(raw)
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise CanonicalJSONError(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=reject_duplicate_keys,
            parse_float=_reject_float,
            parse_int=_bounded_int,
            parse_constant=_reject_constant,
        )
    except CanonicalJSONError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CanonicalJSONError(f"not valid JSON: {exc}") from None
    try:
        # the strict parse above admits only the allowed shape (no floats, no constants, bounded
        # integers, depth checked on the bytes): one encode, no second parse, decides
        again = encode_shaped(value)
    except CanonicalJSONError as exc:
        raise CanonicalJSONError(f"not of the allowed shape: {exc}") from None
    if again != raw:
        raise CanonicalJSONError(
            "not in canonical form (key order, whitespace or escaping differs)"
        )
    return value


def _check_depth_bytes(raw: bytes) -> None:
    """Reject deep nesting before the JSON parser recurses (brackets inside strings count too,
    which only makes the check stricter)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return  # cannot be deeper than the number of openers; skips the byte loop
    depth = 0
    for byte in raw:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_DEPTH:
                raise CanonicalJSONError(f"nested deeper than {MAX_DEPTH} levels")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A ``json.loads`` ``object_pairs_hook`` that refuses an object naming a key twice
    (``CanonicalJSONError``, a ``ValueError``)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CanonicalJSONError(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


def _reject_float(text: str) -> Any:
    raise CanonicalJSONError("floating-point numbers are not allowed")


def _reject_constant(text: str) -> Any:
    raise CanonicalJSONError(f"{text} is not allowed")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise CanonicalJSONError(f"integer with {len(text)} digits is too long")
    return int(text)


def _check_shape(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CanonicalJSONError(f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise CanonicalJSONError("string is not valid Unicode (lone surrogate)") from None
        return
    if isinstance(value, int):
        if not _INT_MIN < value < _INT_LIMIT:  # as _bounded_int reads it: sign included
            raise CanonicalJSONError(f"integer is longer than {MAX_INT_DIGITS} characters")
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_shape(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJSONError(f"object key {key!r} is not a string")
            _check_shape(key, depth + 1)
            _check_shape(item, depth + 1)
        return
    raise CanonicalJSONError(f"values of type {type(value).__name__} are not allowed")
