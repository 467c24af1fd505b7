"""The envelope format: its constants, the header type and the header schema rules, in one place.

``core/envelope.py`` seals and unseals; this module is the format it reads and writes.

Layout (all integers big-endian; the byte-level spec with an example is in SECURITY.md)::

    offset  size  field
    0       8     magic            b"\\x89DWSENV\\n"
    8       1     format version   1
    9       1     flags            0 (any other value is rejected)
    10      4     header length H  1 .. policy.max_header_bytes (default 65536)
    14      2     signature length S (64 for ed25519, 32 for hmac-sha256)
    16      H     header           canonical JSON (see core/canonical.py), fields below
    16+H    S     signature        over TAG || bytes[0:16] || header
    16+H+S  L     payload          exactly header["payload_length"] bytes, then end of data

``TAG`` is the domain-separation string ``b"dagster-wandb-secure/envelope/v1\\x00"``. The header
is a JSON object with exactly these keys: ``format`` (1), ``alg``, ``kid``, ``digest_alg``
("sha256" or "blake3", see ``core/digests.py``), ``payload_<digest_alg>`` (the payload's digest,
64 lowercase hex: ``payload_sha256`` or ``payload_blake3``), ``payload_length``, ``serializer``,
``serializer_version``, ``serializer_params`` (object), ``context`` (object of string to string
or null), ``signed_at`` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``). ``digest_alg`` is signed with the
rest of the header, and a reader accepts only the algorithms on its policy's allow-list.

Reading order (nothing from the payload is interpreted before step 6):
1. preamble: magic, version, flags, bounded lengths (no allocation before the caps are checked);
2. header: strict canonical JSON and exact schema; algorithm on the policy's allow-list;
3. signature: the key store checks key id, algorithm binding, status, expiry and the signature;
4. context: the reader's expected context (artifact, type, partition, asset key) and serializer;
5. payload: exact length (no truncation, nothing appended) and digest (``digest_alg``), compared in
   constant time, over bytes already held in memory;
6. only then are *exactly those bytes* handed to the deserializer, if policy allows it.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .digests import DIGESTS, UnknownDigestError, get_digest
from .errors import (
    MalformedEnvelopeError,
)
from .policy import Policy

MAGIC = b"\x89DWSENV\n"
FORMAT_VERSION = 1
TAG = b"dagster-wandb-secure/envelope/v1\x00"
PREAMBLE = struct.Struct(">8sBBIH")
PREAMBLE_SIZE = PREAMBLE.size  # 16
MAX_SIGNATURE_SIZE = 512
# Every header key but the digest's, whose name depends on ``digest_alg`` (``payload_<alg>``).
BASE_HEADER_KEYS = frozenset(
    {
        "format",
        "alg",
        "kid",
        "digest_alg",
        "payload_length",
        "serializer",
        "serializer_version",
        "serializer_params",
        "context",
        "signed_at",
    }
)
HEADER_KEYS_BY_DIGEST = {
    name: BASE_HEADER_KEYS | {d.header_field} for name, d in DIGESTS.items()
}
HEADER_KEYS = HEADER_KEYS_BY_DIGEST["sha256"]  # the keys of a SHA-256 envelope
CONTEXT_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_CONTEXT_ENTRIES = 16
MAX_CONTEXT_VALUE = 1024
SIGNED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$", re.ASCII)  # ASCII digits only
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


Context = Mapping[str, str | None]


@dataclass(frozen=True)
class EnvelopeHeader:
    """A parsed header. ``verified`` says whether the signature over it was checked."""

    alg: str
    kid: str
    payload_digest: str  # hex, under ``digest_alg``
    payload_length: int
    serializer: str
    serializer_version: str
    serializer_params: Mapping[str, Any]
    context: Mapping[str, str | None]
    signed_at: datetime
    header_bytes: bytes = field(repr=False)
    payload_offset: int
    verified: bool = False
    ledger_row: int | None = None
    digest_alg: str = "sha256"

    @property
    def artifact(self) -> str | None:
        return self.context.get("artifact")

    @property
    def payload_sha256(self) -> str:
        """The signed payload digest (historical name: under ``digest_alg``, not always SHA-256).
        Compare it only with digests computed by ``digest_alg``."""
        return self.payload_digest

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "alg": self.alg,
            "kid": self.kid,
            "digest_alg": self.digest_alg,
            get_digest(self.digest_alg).header_field: self.payload_digest,
            "payload_length": self.payload_length,
            "serializer": self.serializer,
            "serializer_version": self.serializer_version,
            "serializer_params": dict(self.serializer_params),
            "context": dict(self.context),
            "signed_at": format_time(self.signed_at),
        }


# (year, month, day, hour, minute, second) -> "YYYY-MM-DDTHH:MM:SS" of the last second formatted:
# a process signing many objects formats the same second again and again (one tuple, replaced
# whole, so a reader never sees a key with another second's text)
_LAST_SECOND: tuple[tuple[int, ...], str] = ((), "")


def format_time(when: datetime) -> str:
    """``when`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (what ``strftime`` with that format
    gives). The whole seconds are formatted once per second (``_LAST_SECOND``), the microseconds
    per call: ``isoformat`` with a ``timespec`` costs ~1.5 us a call, twice per sealed object."""
    global _LAST_SECOND
    utc = when if when.tzinfo is UTC else when.astimezone(UTC)
    if utc.year < 1000:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    key = (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
    last = _LAST_SECOND
    if last[0] != key:
        last = (key, utc.replace(microsecond=0, tzinfo=None).isoformat())
        _LAST_SECOND = last
    return f"{last[1]}.{utc.microsecond:06d}Z"


def parse_time(text: str) -> datetime:
    if SIGNED_AT_RE.fullmatch(text):
        try:  # same value as strptime for this exact shape, about 10x faster
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError:
            pass  # strptime below decides (and raises) exactly as before
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@functools.cache
def default_policy() -> Policy:
    """``Policy.default()`` built once (a frozen dataclass with immutable fields)."""
    return Policy.default()


def is_envelope(prefix: bytes | memoryview) -> bool:
    """True when ``prefix`` starts with the envelope magic (says nothing about validity)."""
    return bytes(prefix[: len(MAGIC)]) == MAGIC


def check_context(ctx: dict[str, Any]) -> dict[str, str | None]:
    if len(ctx) > MAX_CONTEXT_ENTRIES:
        raise MalformedEnvelopeError(f"context has more than {MAX_CONTEXT_ENTRIES} entries")
    for key, value in ctx.items():
        if not isinstance(key, str) or not CONTEXT_KEY_RE.fullmatch(key):
            raise MalformedEnvelopeError(f"context key {str(key)[:40]!r} is not allowed")
        if value is not None and (not isinstance(value, str) or len(value) > MAX_CONTEXT_VALUE):
            raise MalformedEnvelopeError(
                f"context value for {key!r} must be a short string or null"
            )
    return ctx


def header_from_fields(
    fields: dict[str, Any],
    header_bytes: bytes,
    payload_offset: int,
    *,
    verified: bool,
    signed_at: datetime | None = None,
    ledger_row: int | None = None,
) -> EnvelopeHeader:
    digest = get_digest(fields["digest_alg"])
    return EnvelopeHeader(
        alg=fields["alg"],
        kid=fields["kid"],
        digest_alg=digest.name,
        payload_digest=fields[digest.header_field],
        payload_length=fields["payload_length"],
        serializer=fields["serializer"],
        serializer_version=fields["serializer_version"],
        serializer_params=fields["serializer_params"],
        context=fields["context"],
        signed_at=signed_at if signed_at is not None else parse_time(fields["signed_at"]),
        header_bytes=header_bytes,
        payload_offset=payload_offset,
        verified=verified,
        ledger_row=ledger_row,
    )


def check_schema(fields: dict[str, Any], label: str | None) -> datetime:
    """Check the header's exact schema; returns the parsed ``signed_at``."""
    keys = set(fields)
    alg = fields.get("digest_alg")
    if isinstance(alg, str) and alg not in DIGESTS:
        raise MalformedEnvelopeError(
            f"digest algorithm {alg[:40]!r} is unknown (known: {', '.join(sorted(DIGESTS))})",
            artifact=label,
        )
    wanted = HEADER_KEYS_BY_DIGEST[alg] if isinstance(alg, str) else HEADER_KEYS
    if keys != wanted:
        unknown = sorted(keys - wanted)[:5]
        missing = sorted(wanted - keys)[:5]
        raise MalformedEnvelopeError(
            f"header fields differ from format 1 (unknown: {unknown}, missing: {missing})",
            artifact=label,
        )
    kid = fields["kid"]

    def bad(reason: str) -> MalformedEnvelopeError:
        return MalformedEnvelopeError(
            reason, artifact=label, key_id=kid[:80] if isinstance(kid, str) else None
        )

    if fields["format"] != FORMAT_VERSION or isinstance(fields["format"], bool):
        raise bad(f"header format {fields['format']!r} differs from the preamble's version")
    for name in ("alg", "kid", "serializer", "serializer_version", "signed_at", "digest_alg"):
        if not isinstance(fields[name], str):
            raise bad(f"header field {name!r} must be a string")
    try:
        digest = get_digest(fields["digest_alg"])
    except UnknownDigestError as exc:
        raise bad(str(exc)) from None
    value = fields[digest.header_field]
    if not HEX64_RE.fullmatch(value if isinstance(value, str) else ""):
        raise bad(f"{digest.header_field} must be 64 lowercase hex digits")
    length = fields["payload_length"]
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise bad("payload_length must be a non-negative integer")
    if not isinstance(fields["serializer_params"], dict):
        raise bad("serializer_params must be an object")
    if not isinstance(fields["context"], dict):
        raise bad("context must be an object")
    try:
        check_context(fields["context"])
    except MalformedEnvelopeError as exc:
        raise bad(exc.reason) from None
    if not SIGNED_AT_RE.fullmatch(fields["signed_at"]):
        raise bad("signed_at is not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        return parse_time(fields["signed_at"])
    except ValueError:
        raise bad("signed_at is not a valid date") from None

