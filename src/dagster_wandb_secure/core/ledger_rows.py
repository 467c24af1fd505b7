"""Signature rows of the digest ledger: the one validation of a row's values before any backend
stores it (``Ledger._row_values`` is ``signature_row``; ``ledger_postgres`` uses it too), and
the small text helpers the ledgers share.

Values are checked for type and length here, on the way in; the common row - the one ``seal``
builds from the header it has just signed - takes a fast path with the same checks
(``_plain_row``), and any other row gets them one by one with a precise message."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .envelope_format import format_time
from .errors import KeyStoreError

ORIGINS = ("signed", "adopted", "resigned")
MAX_TEXT = 4096
MAX_CONTEXT_JSON = 65536
# SQLite's INTEGER range. A grouped row is inserted later (at the group's commit), so every value
# must be storable when it is queued: an int beyond this or a string that is not valid Unicode (a
# lone surrogate, which sqlite3 cannot encode) would fail the whole group there - other callers'
# rows included - after its own caller was handed a row id.
MAX_SQL_INT = (1 << 63) - 1

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_VERSION_RE = re.compile(r"v(0|[1-9][0-9]{0,17})")
_CONTEXT_COLUMNS = {
    "artifact": "artifact",
    "type": "artifact_type",
    "partition": "partition",
    "asset_key": "asset_key",
}


def parse_version(version: str) -> int:
    """``"v7"`` -> 7. Anything else is a ``KeyStoreError``."""
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise KeyStoreError(
            f"invalid artifact version {_short(version)} (want vN, e.g. v3)",
            version=version if isinstance(version, str) else None,
        )
    return int(version[1:])


def _short(value: object) -> str:
    if isinstance(value, str):
        text = ascii(value[:60])
        return text + (f"...({len(value)} chars)" if len(value) > 60 else "")
    return f"<{type(value).__name__}>"


def _short_int(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10**30 else f"an int of {value.bit_length()} bits"
    return _short(value)


def _text(value: object, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not value and not optional) or len(value) > MAX_TEXT:
        raise KeyStoreError(
            f"ledger field {what} must be a string of 1-{MAX_TEXT} characters, not {_short(value)}"
        )
    if not _storable(value):
        raise KeyStoreError(f"ledger field {what} is not valid Unicode (a lone surrogate)")
    return value


def _storable(text: str) -> bool:
    """Whether sqlite3 can store ``text`` (UTF-8 encodable: no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_row(
    key_id: object,
    alg: object,
    digest: object,
    length: object,
    context: object,
    serializer: object,
    signed_at: object,
    run_id: object,
    artifact_version: object,
    origin: object,
) -> tuple[Any, ...] | None:
    """The row values when every argument passes exactly the checks of ``_row_values``, else
    None (the caller then runs those checks for the precise error). No artifact version: a
    row being signed has none yet. The per-signer part (key id, algorithm, serializer, origin,
    context: the same for every object one asset's writer seals) is checked once and kept in
    ``_SIGNER_PARTS``; the per-object values (digest, length, signed_at, run id) every time."""
    if (
        artifact_version is not None
        or type(length) is not int
        or not 0 <= length <= MAX_SQL_INT
        or type(context) is not dict
        or len(context) > 16
        or type(digest) is not str
        or not _DIGEST_RE.fullmatch(digest)
        or type(signed_at) is not str
        or not 0 < len(signed_at) <= MAX_TEXT
        or not (signed_at.isascii() or _storable(signed_at))
    ):
        return None
    if run_id is not None and (
        type(run_id) is not str
        or not 0 < len(run_id) <= MAX_TEXT
        or not (run_id.isascii() or _storable(run_id))
    ):
        return None
    try:
        key = (key_id, alg, serializer, origin, *context.items())
        parts = _SIGNER_PARTS.get(key)
    except TypeError:  # an unhashable value: not a row of this shape
        return None
    if parts is None:
        parts = _signer_parts(key_id, alg, context, serializer, origin)
        if parts is None:
            return None
        if len(_SIGNER_PARTS) >= 256:
            _SIGNER_PARTS.clear()
        _SIGNER_PARTS[key] = parts
    head, middle, tail = parts
    return (*head, digest, length, *middle, signed_at, run_id, None, None, *tail, _now_text())


# (key_id, alg, serializer, origin, *context items) -> the checked column values around the
# per-object ones: (key_id, alg), (artifact, type, partition, asset_key, context_json,
# serializer), (origin,). Only exact str values (and None in the context) are ever stored, so a
# hit hands out these checked originals.
_SIGNER_PARTS: dict[tuple[Any, ...], tuple[tuple[Any, ...], ...]] = {}


def _signer_parts(
    key_id: object, alg: object, context: dict[Any, Any], serializer: object, origin: object
) -> tuple[tuple[Any, ...], ...] | None:
    if origin not in ORIGINS or type(origin) is not str:
        return None
    for value in (key_id, alg, serializer):
        if (
            type(value) is not str
            or not 0 < len(value) <= MAX_TEXT
            or not (value.isascii() or _storable(value))
        ):
            return None
    for name, value in context.items():
        if (
            type(name) is not str
            or not 0 < len(name) <= MAX_TEXT
            or not (name.isascii() or _storable(name))
        ):
            return None
        if value is not None and (
            type(value) is not str
            or len(value) > MAX_TEXT
            or not (value.isascii() or _storable(value))
        ):
            return None
    context_json = _context_json(context)
    if context_json is None:
        return None
    columns = _columns(
        key_id, alg, "", 0, context, context_json, serializer, "", None, None, None, origin,
    )
    # _columns order: key_id, alg, digest, length, 4 context columns, context_json, serializer,
    # signed_at, run_id, artifact_version, version_num, origin, recorded_at
    return (columns[0:2], columns[4:10], columns[14:15])


assert tuple(_CONTEXT_COLUMNS) == ("artifact", "type", "partition", "asset_key")


def _columns(
    key_id: Any,
    alg: Any,
    digest: Any,
    length: Any,
    context: Mapping[str, str | None],
    context_json: str,
    serializer: Any,
    signed_at: Any,
    run_id: Any,
    artifact_version: str | None,
    version_num: int | None,
    origin: Any,
) -> tuple[Any, ...]:
    """The ``signatures`` columns in ``Ledger._INSERT`` order (``recorded_at`` is now)."""
    get = context.get  # the four columns of _CONTEXT_COLUMNS, in its order
    return (
        key_id,
        alg,
        digest,
        length,
        get("artifact"),
        get("type"),
        get("partition"),
        get("asset_key"),
        context_json,
        serializer,
        signed_at,
        run_id,
        artifact_version,
        version_num,
        origin,
        _now_text(),
    )


_CONTEXT_JSON: dict[tuple[tuple[str, str | None], ...], str] = {}


def _context_json(context: dict[str, str | None]) -> str | None:
    """``context_json`` of a (checked) context, from a small memo: one process seals many
    objects under the same few contexts. The memo maps the context's items to exactly what
    ``json.dumps`` gives for them, so it changes no stored byte; None when over the cap."""
    key = tuple(context.items())
    text = _CONTEXT_JSON.get(key)
    if text is None:
        text = json.dumps(context, sort_keys=True, separators=(",", ":"))
        if len(text) > MAX_CONTEXT_JSON:
            return None
        if len(_CONTEXT_JSON) >= 256:
            _CONTEXT_JSON.clear()
        _CONTEXT_JSON[key] = text
    return text


def _now_text() -> str:
    """Now in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (``envelope_format.format_time``: the same
    text ``isoformat`` gives, at a fraction of its cost)."""
    return format_time(datetime.now(UTC))


def signature_row(
    *,
    key_id: str,
    alg: str,
    digest: str,
    length: int,
    context: Mapping[str, str | None],
    serializer: str,
    signed_at: str,
    run_id: str | None = None,
    artifact_version: str | None = None,
    origin: str = "signed",
) -> tuple[Any, ...]:
    """The validated column values of one signature row (the last one is ``recorded_at``).

    ``Ledger._row_values`` (other backends import that name) is this function. The common
    case - a row ``seal`` builds from a header it just signed - passes ``_plain_row``'s
    type and length checks; anything else gets every check with its precise message."""
    fast = _plain_row(
        key_id, alg, digest, length, context, serializer, signed_at, run_id,
        artifact_version, origin,
    )
    if fast is not None:
        return fast
    _text(key_id, "key_id")
    _text(alg, "alg")
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise KeyStoreError(
            f"ledger digest must be 64 lowercase hex digits (sha256), not {_short(digest)}"
        )
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= MAX_SQL_INT:
        raise KeyStoreError(
            f"ledger length must be an int from 0 to {MAX_SQL_INT}, not {_short_int(length)}"
        )
    if not isinstance(context, Mapping):
        raise KeyStoreError("ledger context must be a mapping of str to str or None")
    for name, value in context.items():
        _text(name, "context key")
        _text(value, f"context[{name!r}]", optional=True)
    context_json = json.dumps(dict(context), sort_keys=True, separators=(",", ":"))
    if len(context_json) > MAX_CONTEXT_JSON:
        raise KeyStoreError(f"ledger context is larger than {MAX_CONTEXT_JSON} characters")
    _text(serializer, "serializer")
    _text(signed_at, "signed_at")
    _text(run_id, "run_id", optional=True)
    version_num = None if artifact_version is None else parse_version(artifact_version)
    if origin not in ORIGINS:
        raise KeyStoreError(f"ledger origin must be one of {ORIGINS}, not {_short(origin)}")
    return _columns(
        key_id, alg, digest, length, context, context_json, serializer, signed_at, run_id,
        artifact_version, version_num, origin,
    )
