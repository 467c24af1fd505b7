"""The signed envelope: a small, versioned container around one serialized payload.

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
("sha256"), ``payload_sha256`` (64 lowercase hex), ``payload_length``, ``serializer``,
``serializer_version``, ``serializer_params`` (object), ``context`` (object of string to string
or null), ``signed_at`` (``YYYY-MM-DDTHH:MM:SS.ffffffZ``).

Reading order (nothing from the payload is interpreted before step 6):
1. preamble: magic, version, flags, bounded lengths (no allocation before the caps are checked);
2. header: strict canonical JSON and exact schema; algorithm on the policy's allow-list;
3. signature: the key store checks key id, algorithm binding, status, expiry and the signature;
4. context: the reader's expected context (artifact, type, partition, asset key) and serializer;
5. payload: exact length (no truncation, nothing appended) and SHA-256 digest, compared in
   constant time, over bytes already held in memory;
6. only then are *exactly those bytes* handed to the deserializer, if policy allows it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import mmap
import os
import re
import struct
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import canonical
from .algorithms import SIGNATURE_SIZES
from .errors import (
    ContextMismatchError,
    MalformedEnvelopeError,
    ResourceLimitError,
    SecureArtifactError,
    TamperedPayloadError,
    UnsignedPayloadError,
)
from .fsutil import atomic_output, open_no_follow
from .policy import Policy
from .serializers import get_serializer

if TYPE_CHECKING:
    from .keys import KeyStore

MAGIC = b"\x89DWSENV\n"
FORMAT_VERSION = 1
TAG = b"dagster-wandb-secure/envelope/v1\x00"
PREAMBLE = struct.Struct(">8sBBIH")
PREAMBLE_SIZE = PREAMBLE.size  # 16
MAX_SIGNATURE_SIZE = 512
HEADER_KEYS = frozenset(
    {
        "format",
        "alg",
        "kid",
        "digest_alg",
        "payload_sha256",
        "payload_length",
        "serializer",
        "serializer_version",
        "serializer_params",
        "context",
        "signed_at",
    }
)
CONTEXT_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_CONTEXT_ENTRIES = 16
MAX_CONTEXT_VALUE = 1024
SIGNED_AT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
READ_CHUNK = 8 << 20
# Payloads from this size up are read into an anonymous mapping (no zero-fill pass in user space)
# and hashed in a worker thread while the next chunk is read.
LARGE_PAYLOAD = 4 << 20

Context = Mapping[str, str | None]


@dataclass(frozen=True)
class EnvelopeHeader:
    """A parsed header. ``verified`` says whether the signature over it was checked."""

    alg: str
    kid: str
    payload_sha256: str
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

    @property
    def artifact(self) -> str | None:
        return self.context.get("artifact")

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "alg": self.alg,
            "kid": self.kid,
            "digest_alg": "sha256",
            "payload_sha256": self.payload_sha256,
            "payload_length": self.payload_length,
            "serializer": self.serializer,
            "serializer_version": self.serializer_version,
            "serializer_params": dict(self.serializer_params),
            "context": dict(self.context),
            "signed_at": format_time(self.signed_at),
        }


def format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    if SIGNED_AT_RE.fullmatch(text):
        try:  # same value as strptime for this exact shape, about 10x faster
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError:
            pass  # strptime below decides (and raises) exactly as before
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@functools.cache
def _default_policy() -> Policy:
    """``Policy.default()`` built once (a frozen dataclass with immutable fields)."""
    return Policy.default()


def is_envelope(prefix: bytes | memoryview) -> bool:
    """True when ``prefix`` starts with the envelope magic (says nothing about validity)."""
    return bytes(prefix[: len(MAGIC)]) == MAGIC


# --------------------------------------------------------------------------------------------
# writing


def seal(
    obj: Any,
    *,
    key_store: KeyStore,
    serializer: str = "pickle",
    context: Context | None = None,
    parameters: Mapping[str, Any] | None = None,
    key_id: str | None = None,
    policy: Policy | None = None,
    record: bool = True,
    run_id: str | None = None,
) -> bytes:
    """Serialize ``obj`` and return the complete signed envelope as bytes."""
    sealed = _prepare(obj, key_store, serializer, context, parameters, key_id, policy)
    return _join_sealed(sealed, key_store, record, run_id)[0]


def seal_with_header(
    obj: Any,
    *,
    key_store: KeyStore,
    serializer: str = "pickle",
    context: Context | None = None,
    parameters: Mapping[str, Any] | None = None,
    key_id: str | None = None,
    policy: Policy | None = None,
    record: bool = True,
    run_id: str | None = None,
) -> tuple[bytes, EnvelopeHeader]:
    """Like ``seal``, also returning the signed header (with its ledger row id when recorded)."""
    sealed = _prepare(obj, key_store, serializer, context, parameters, key_id, policy)
    return _join_sealed(sealed, key_store, record, run_id)


def _join_sealed(
    sealed: _Sealed, key_store: KeyStore, record: bool, run_id: str | None
) -> tuple[bytes, EnvelopeHeader]:
    head = sealed.finish(_hash_chunks(sealed.chunks))
    out = b"".join([head, *sealed.chunks])
    row = _record(sealed, key_store, record, run_id)
    assert sealed.header is not None
    return out, _with_row(sealed.header, row)


def seal_to(
    target: str | Path | BinaryIO,
    obj: Any,
    *,
    key_store: KeyStore,
    serializer: str = "pickle",
    context: Context | None = None,
    parameters: Mapping[str, Any] | None = None,
    key_id: str | None = None,
    policy: Policy | None = None,
    record: bool = True,
    run_id: str | None = None,
    durable: bool = False,
) -> EnvelopeHeader:
    """Serialize ``obj`` into a signed envelope written to a path or a binary file.

    A path is replaced atomically (temporary file + rename); ``durable=True`` also fsyncs. The
    payload is hashed in a worker thread while it is written, and never copied as a whole."""
    sealed = _prepare(obj, key_store, serializer, context, parameters, key_id, policy)
    return _write_target(target, sealed, key_store, record, run_id, durable)


def _write_target(
    target: str | Path | BinaryIO,
    sealed: _Sealed,
    key_store: KeyStore,
    record: bool,
    run_id: str | None,
    durable: bool,
) -> EnvelopeHeader:
    if isinstance(target, str | Path):
        with atomic_output(target, durable=durable) as fh:
            _write_sealed(fh, sealed)
    else:
        _write_sealed(target, sealed)
    assert sealed.header is not None
    row = _record(sealed, key_store, record, run_id)
    return _with_row(sealed.header, row)


class _Sealed:
    """A payload ready to be written: chunks, the signer, and the header minus its digest."""

    def __init__(self, chunks: list[memoryview], fields: dict[str, Any], signer: Any) -> None:
        self.chunks = chunks
        self.length = sum(c.nbytes for c in chunks)
        self.fields = fields
        self.signer = signer
        self.sig_size = SIGNATURE_SIZES[signer.alg]
        self.header: EnvelopeHeader | None = None
        self._prefix_size: int | None = None

    @property
    def prefix_size(self) -> int:
        """Bytes before the payload; the digest is always 64 hex digits, so a placeholder gives
        the exact size. Computed only when needed (streamed writes), saving an encode per seal."""
        if self._prefix_size is None:
            probe = self._header_bytes("0" * 64)
            self._prefix_size = PREAMBLE_SIZE + len(probe) + self.sig_size
        return self._prefix_size

    def _header_bytes(self, digest: str) -> bytes:
        fields = dict(self.fields, payload_sha256=digest, payload_length=self.length)
        return canonical.encode(fields)

    def finish(self, digest: str) -> bytes:
        header_bytes = self._header_bytes(digest)
        preamble = PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(header_bytes), self.sig_size)
        signature = self.signer.sign(TAG + preamble + header_bytes)
        if len(signature) != self.sig_size:  # pragma: no cover - a key store bug
            raise SecureArtifactError("signer returned a signature of unexpected size")
        self.header = _header_from_fields(
            dict(self.fields, payload_sha256=digest, payload_length=self.length),
            header_bytes,
            PREAMBLE_SIZE + len(header_bytes) + self.sig_size,
            verified=True,
        )
        out = preamble + header_bytes + signature
        assert self._prefix_size is None or len(out) == self._prefix_size
        return out


def _prepare(
    obj: Any,
    key_store: KeyStore,
    serializer: str,
    context: Context | None,
    parameters: Mapping[str, Any] | None,
    key_id: str | None,
    policy: Policy | None,
) -> _Sealed:
    policy = policy or _default_policy()
    ctx = _check_context(dict(context or {}))
    artifact = ctx.get("artifact")
    ser = get_serializer(serializer)
    policy.check_serializer(ser.name, artifact=artifact)
    params = ser.validate_parameters(parameters)
    signer = key_store.signer(key_id)
    policy.check_algorithm(signer.alg, artifact=artifact, key_id=signer.kid)
    raw_chunks, extra = ser.dump(obj, params)
    return _assemble(raw_chunks, ser.name, ser.module_version(), extra, ctx, signer, policy)


def _assemble(
    raw_chunks: Sequence[Any],
    serializer: str,
    serializer_version: str,
    serializer_params: Mapping[str, Any],
    ctx: dict[str, str | None],
    signer: Any,
    policy: Policy,
) -> _Sealed:
    chunks = [c if isinstance(c, memoryview) else memoryview(c) for c in raw_chunks]
    chunks = [c.cast("B") if c.format != "B" or c.ndim != 1 else c for c in chunks]
    fields = {
        "format": FORMAT_VERSION,
        "alg": signer.alg,
        "kid": signer.kid,
        "digest_alg": "sha256",
        "serializer": serializer,
        "serializer_version": serializer_version,
        "serializer_params": dict(serializer_params),
        "context": ctx,
        "signed_at": format_time(datetime.now(UTC)),
    }
    sealed = _Sealed(chunks, fields, signer)
    policy.check_payload_size(sealed.length, artifact=ctx.get("artifact"), key_id=signer.kid)
    return sealed


def seal_serialized_to(
    target: str | Path | BinaryIO,
    payload: bytes | memoryview,
    *,
    key_store: KeyStore,
    serializer: str,
    serializer_version: str,
    serializer_params: Mapping[str, Any],
    context: Context | None = None,
    key_id: str | None = None,
    policy: Policy | None = None,
    record: bool = False,
    run_id: str | None = None,
    durable: bool = False,
) -> EnvelopeHeader:
    """Seal bytes that are already serialized (never deserialized here) into an envelope.

    For migrations (``adopt``: statically scanned legacy payloads) and re-signing (``resign``:
    payloads verified under an older key). ``record`` defaults to False so the caller can record
    the ledger row with the right origin."""
    policy = policy or _default_policy()
    ctx = _check_context(dict(context or {}))
    get_serializer(serializer)  # an unknown name is a SerializationError naming it
    policy.check_serializer(serializer, artifact=ctx.get("artifact"))
    signer = key_store.signer(key_id)
    policy.check_algorithm(signer.alg, artifact=ctx.get("artifact"), key_id=signer.kid)
    sealed = _assemble(
        [payload], serializer, serializer_version, serializer_params, ctx, signer, policy
    )
    return _write_target(target, sealed, key_store, record, run_id, durable)


def _hash_chunks(chunks: list[memoryview]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _write_sealed(fh: BinaryIO, sealed: _Sealed) -> None:
    """Write prefix + payload. With a seekable file, hashing overlaps the payload writes."""
    large = sealed.length >= (4 << 20)
    seekable = _seekable(fh)
    if large and seekable:
        start = fh.tell()
        fh.seek(start + sealed.prefix_size)
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(_hash_chunks, sealed.chunks)
            for chunk in sealed.chunks:
                fh.write(chunk)
            digest = future.result()
        end = fh.tell()
        fh.seek(start)
        fh.write(sealed.finish(digest))
        fh.seek(end)
    else:
        fh.write(sealed.finish(_hash_chunks(sealed.chunks)))
        for chunk in sealed.chunks:
            fh.write(chunk)


def _seekable(fh: BinaryIO) -> bool:
    try:
        return bool(fh.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _record(sealed: _Sealed, key_store: KeyStore, record: bool, run_id: str | None) -> int | None:
    if not record or sealed.header is None:
        return None
    return record_header(key_store, sealed.header, run_id=run_id)


def record_header(
    key_store: KeyStore,
    header: EnvelopeHeader,
    *,
    run_id: str | None = None,
    origin: str = "signed",
) -> int:
    """Record a signed header in the key store's ledger; returns the row id."""
    return key_store.ledger.record_signature(
        key_id=header.kid,
        alg=header.alg,
        digest=header.payload_sha256,
        length=header.payload_length,
        context=dict(header.context),
        serializer=header.serializer,
        signed_at=format_time(header.signed_at),
        run_id=run_id,
        origin=origin,
    )


def _with_row(header: EnvelopeHeader, row: int | None) -> EnvelopeHeader:
    return header if row is None else replace(header, ledger_row=row)


# --------------------------------------------------------------------------------------------
# reading


def unseal(
    data: bytes | bytearray | memoryview,
    *,
    key_store: KeyStore,
    expected_context: Context | None = None,
    expected_serializer: str | None = None,
    policy: Policy | None = None,
) -> Any:
    """Verify an envelope held in memory and deserialize exactly the verified bytes.

    A mutable buffer is copied first, so nobody can change it between check and load."""
    if not isinstance(data, bytes):
        view = memoryview(data)
        data = view.tobytes() if not view.readonly else data
    header, payload = verify_bytes(
        data,
        key_store=key_store,
        expected_context=expected_context,
        expected_serializer=expected_serializer,
        policy=policy,
    )
    return _deserialize(header, payload, policy)


def unseal_from(
    source: str | Path | BinaryIO,
    *,
    key_store: KeyStore,
    expected_context: Context | None = None,
    expected_serializer: str | None = None,
    policy: Policy | None = None,
) -> Any:
    """Verify an envelope from a path (symlinks refused) or binary file, then deserialize.

    The payload is read once into private memory, hashed there, and exactly those bytes are
    deserialized: swapping the file after the check changes nothing."""
    header, payload = verify_file(
        source,
        key_store=key_store,
        expected_context=expected_context,
        expected_serializer=expected_serializer,
        policy=policy,
    )
    return _deserialize(header, payload, policy)


def verify_file(
    source: str | Path | BinaryIO,
    *,
    key_store: KeyStore,
    expected_context: Context | None = None,
    expected_serializer: str | None = None,
    policy: Policy | None = None,
) -> tuple[EnvelopeHeader, memoryview]:
    """Verify an envelope file and return its header and the verified payload, read once into
    private memory. Pass both to ``deserialize`` after any further check of the header (for
    example against a signed manifest): nothing is interpreted before that."""
    header, payload = _verify_source(
        source,
        key_store=key_store,
        expected_context=expected_context,
        expected_serializer=expected_serializer,
        policy=policy,
        load_payload=True,
    )
    assert payload is not None
    return header, payload


def deserialize(header: EnvelopeHeader, payload: memoryview, policy: Policy | None = None) -> Any:
    """Deserialize a payload that ``verify_file``/``verify_bytes`` verified (and only such)."""
    if not header.verified:
        raise MalformedEnvelopeError(
            "refusing to deserialize a payload whose header was not verified",
            artifact=header.artifact,
            key_id=header.kid,
        )
    return _deserialize(header, payload, policy)


def verify_bytes(
    data: bytes | memoryview,
    *,
    key_store: KeyStore,
    expected_context: Context | None = None,
    expected_serializer: str | None = None,
    policy: Policy | None = None,
) -> tuple[EnvelopeHeader, memoryview]:
    """Verify without deserializing; returns the verified header and a view of the payload."""
    return _verify_source(
        _MemorySource(memoryview(data)),
        key_store=key_store,
        expected_context=expected_context,
        expected_serializer=expected_serializer,
        policy=policy,
        load_payload=True,
    )  # type: ignore[return-value]


def verify_path(
    source: str | Path | BinaryIO,
    *,
    key_store: KeyStore,
    expected_context: Context | None = None,
    expected_serializer: str | None = None,
    policy: Policy | None = None,
    deep: bool = True,
) -> EnvelopeHeader:
    """Verify an envelope file without deserializing it (for audits and the `verify` command).

    ``deep=False`` checks the signed header, the key and the exact file size but does not hash
    the payload; ``deep=True`` also streams the payload through SHA-256 in bounded memory."""
    header, _ = _verify_source(
        source,
        key_store=key_store,
        expected_context=expected_context,
        expected_serializer=expected_serializer,
        policy=policy,
        load_payload=False,
        hash_payload=deep,
    )
    return header


def read_header_unverified(source: str | Path | bytes | BinaryIO) -> dict[str, Any]:
    """Parse and return a header WITHOUT checking its signature (for `inspect`). Untrusted."""
    if isinstance(source, bytes):
        src: Any = _MemorySource(memoryview(source))
    elif isinstance(source, str | Path):
        src = open_no_follow(source)
    else:
        src = source
    try:
        _, header_bytes, signature, fields, _size = _read_prefix(src, _default_policy(), None)
    finally:
        if isinstance(source, str | Path):
            src.close()
    return {
        "verified": False,
        "format": fields.get("format"),
        "header": fields,
        "header_length": len(header_bytes),
        "signature_length": len(signature),
    }


def read_bounded_envelope(path: str | Path, policy: Policy, *, max_bytes: int | None = None) -> bytes:
    """The bytes of the envelope file ``path`` (for ``verify_bytes``), read in bounded memory.

    The preamble is checked first (magic, version, header and signature lengths within the
    policy), then only the header and signature it announces are read, then only the payload
    length the (still unverified) header claims, plus one byte so trailing data is seen. An
    envelope claiming more than ``policy.max_manifest_bytes`` (or ``max_bytes``) in all is a
    ResourceLimitError before its payload is read. Nothing here is trusted: the caller verifies
    the returned bytes."""
    cap = policy.max_manifest_bytes if max_bytes is None else min(max_bytes, policy.max_manifest_bytes)
    with open_no_follow(path) as src:
        preamble, header_bytes, signature, fields, size = _read_prefix(src, policy, None)
        claimed = fields.get("payload_length")
        if type(claimed) is not int or claimed < 0:
            raise MalformedEnvelopeError("header has no valid payload_length")
        total = len(preamble) + len(header_bytes) + len(signature) + claimed
        if total > cap:
            raise ResourceLimitError(f"envelope claims {total} bytes, over the cap of {cap}")
        rest = claimed + 1 if size is None else min(claimed + 1, size - (total - claimed))
        payload = src.read(max(rest, 0))
    return b"".join((preamble, header_bytes, signature, payload))


class _MemorySource:
    """A minimal read-only file over a memoryview that hands out slices, not copies."""

    def __init__(self, view: memoryview) -> None:
        self.view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        self.pos = 0

    def read_view(self, n: int) -> memoryview:
        out = self.view[self.pos : self.pos + n]
        self.pos += out.nbytes
        return out

    def read(self, n: int) -> bytes:
        return self.read_view(n).tobytes()

    def size(self) -> int:
        return self.view.nbytes

    def close(self) -> None:  # pragma: no cover - nothing to release
        pass


def _artifact_label(expected: Context | None, fields: Mapping[str, Any] | None) -> str | None:
    if expected and expected.get("artifact"):
        return str(expected["artifact"])
    if fields and isinstance(fields.get("context"), dict):
        claimed = fields["context"].get("artifact")
        if isinstance(claimed, str):
            return f"{claimed[:128]} (claimed, unverified)"
    return None


def _source_size(src: Any) -> int | None:
    if isinstance(src, _MemorySource):
        return src.size()
    try:
        return os.fstat(src.fileno()).st_size - src.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _read_exact(src: Any, n: int) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise MalformedEnvelopeError(f"envelope truncated: wanted {n} bytes, found {len(data)}")
    return data


def _read_prefix(
    src: Any, policy: Policy, expected: Context | None
) -> tuple[bytes, bytes, bytes, dict[str, Any], int | None]:
    """Read and check the preamble and header (not the signature's validity)."""
    size = _source_size(src)
    first = src.read(PREAMBLE_SIZE)
    label = _artifact_label(expected, None)
    if not first or not is_envelope(first):
        if first[: len(MAGIC)] and MAGIC.startswith(bytes(first[: len(MAGIC)])) and len(first) < 8:
            raise MalformedEnvelopeError("envelope truncated inside the magic", artifact=label)
        kind = _guess_kind(bytes(first))
        raise UnsignedPayloadError(
            f"payload is not a signed envelope ({kind})",
            artifact=label,
        )
    if len(first) < PREAMBLE_SIZE:
        raise MalformedEnvelopeError("envelope truncated inside the preamble", artifact=label)
    _magic, version, flags, header_len, sig_len = PREAMBLE.unpack(bytes(first))
    if version != FORMAT_VERSION:
        raise MalformedEnvelopeError(
            f"unknown envelope format version {version} (this library reads {FORMAT_VERSION})",
            artifact=label,
            hint="upgrade dagster-wandb-secure, or re-materialize the asset",
        )
    if flags != 0:
        raise MalformedEnvelopeError(f"unknown flags 0x{flags:02x} in the preamble", artifact=label)
    if header_len == 0 or header_len > policy.max_header_bytes:
        raise ResourceLimitError(
            f"header length {header_len} is outside 1..{policy.max_header_bytes}", artifact=label
        )
    if sig_len == 0 or sig_len > MAX_SIGNATURE_SIZE:
        raise MalformedEnvelopeError(f"signature length {sig_len} is not plausible", artifact=label)
    if size is not None and size < PREAMBLE_SIZE + header_len + sig_len:
        raise MalformedEnvelopeError(
            f"envelope truncated: {size} bytes cannot hold a {header_len}-byte header and a "
            f"{sig_len}-byte signature",
            artifact=label,
        )
    header_bytes = _read_exact(src, header_len)
    signature = _read_exact(src, sig_len)
    try:
        fields = canonical.decode(header_bytes, max_bytes=policy.max_header_bytes)
    except canonical.CanonicalJSONError as exc:
        raise MalformedEnvelopeError(f"header rejected: {exc}", artifact=label) from None
    if not isinstance(fields, dict):
        raise MalformedEnvelopeError("header is not a JSON object", artifact=label)
    return bytes(first), header_bytes, signature, fields, size


def _guess_kind(prefix: bytes) -> str:
    if prefix[:1] == b"\x80":
        return "it looks like a raw pickle stream; legacy unsigned pickles are never loaded"
    if prefix[:4] == b"PK\x03\x04":
        return "it looks like a zip file (joblib/skops?) that was not sealed"
    if not prefix:
        return "the file is empty"
    return "unknown content"


def _check_context(ctx: dict[str, Any]) -> dict[str, str | None]:
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


def _header_from_fields(
    fields: dict[str, Any],
    header_bytes: bytes,
    payload_offset: int,
    *,
    verified: bool,
    signed_at: datetime | None = None,
) -> EnvelopeHeader:
    return EnvelopeHeader(
        alg=fields["alg"],
        kid=fields["kid"],
        payload_sha256=fields["payload_sha256"],
        payload_length=fields["payload_length"],
        serializer=fields["serializer"],
        serializer_version=fields["serializer_version"],
        serializer_params=fields["serializer_params"],
        context=fields["context"],
        signed_at=signed_at if signed_at is not None else parse_time(fields["signed_at"]),
        header_bytes=header_bytes,
        payload_offset=payload_offset,
        verified=verified,
    )


def _check_schema(fields: dict[str, Any], label: str | None) -> datetime:
    """Check the header's exact schema; returns the parsed ``signed_at``."""
    keys = set(fields)
    if keys != HEADER_KEYS:
        unknown = sorted(keys - HEADER_KEYS)[:5]
        missing = sorted(HEADER_KEYS - keys)[:5]
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
    if fields["digest_alg"] != "sha256":
        raise bad(f"digest algorithm {fields['digest_alg'][:40]!r} is not allowed (only sha256)")
    if not HEX64_RE.fullmatch(
        fields["payload_sha256"] if isinstance(fields["payload_sha256"], str) else ""
    ):
        raise bad("payload_sha256 must be 64 lowercase hex digits")
    length = fields["payload_length"]
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise bad("payload_length must be a non-negative integer")
    if not isinstance(fields["serializer_params"], dict):
        raise bad("serializer_params must be an object")
    if not isinstance(fields["context"], dict):
        raise bad("context must be an object")
    try:
        _check_context(fields["context"])
    except MalformedEnvelopeError as exc:
        raise bad(exc.reason) from None
    if not SIGNED_AT_RE.fullmatch(fields["signed_at"]):
        raise bad("signed_at is not in the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        return parse_time(fields["signed_at"])
    except ValueError:
        raise bad("signed_at is not a valid date") from None


def _verify_source(
    source: str | Path | BinaryIO | _MemorySource,
    *,
    key_store: KeyStore,
    expected_context: Context | None,
    expected_serializer: str | None,
    policy: Policy | None,
    load_payload: bool,
    hash_payload: bool = True,
) -> tuple[EnvelopeHeader, memoryview | None]:
    policy = policy or _default_policy()
    owned = isinstance(source, str | Path)
    src: Any = open_no_follow(source) if owned else source
    try:
        return _verify_open(
            src,
            key_store,
            expected_context,
            expected_serializer,
            policy,
            load_payload,
            hash_payload,
        )
    except SecureArtifactError:
        raise
    except OSError as exc:
        raise MalformedEnvelopeError(
            f"could not read the envelope: {exc.strerror or exc}",
            artifact=_artifact_label(expected_context, None),
        ) from exc
    finally:
        if owned:
            src.close()


def _verify_open(
    src: Any,
    key_store: KeyStore,
    expected: Context | None,
    expected_serializer: str | None,
    policy: Policy,
    load_payload: bool,
    hash_payload: bool,
) -> tuple[EnvelopeHeader, memoryview | None]:
    preamble, header_bytes, signature, fields, size = _read_prefix(src, policy, expected)
    label = _artifact_label(expected, fields)
    signed_at = _check_schema(fields, label)
    kid, alg = fields["kid"], fields["alg"]
    policy.check_algorithm(alg, artifact=label, key_id=kid[:80])
    if SIGNATURE_SIZES.get(alg) != len(signature):
        raise TamperedPayloadError(
            f"signature is {len(signature)} bytes, {alg} signatures are {SIGNATURE_SIZES[alg]}",
            artifact=label,
            key_id=kid[:80],
        )
    key_store.verify(
        kid=kid,
        alg=alg,
        message=TAG + preamble + header_bytes,
        signature=signature,
        signed_at=signed_at,
        artifact=label,
    )
    # From here on the header is authentic.
    header = _header_from_fields(
        fields,
        header_bytes,
        PREAMBLE_SIZE + len(header_bytes) + len(signature),
        verified=True,
        signed_at=signed_at,
    )
    _check_expected(header, expected, expected_serializer, label)
    policy.check_serializer(header.serializer, artifact=label, key_id=kid)
    length = header.payload_length
    policy.check_payload_size(length, artifact=label, key_id=kid)
    if size is not None:
        remaining = size - header.payload_offset
        if remaining < length:
            raise TamperedPayloadError(
                f"payload truncated: header promises {length} bytes, {remaining} present",
                artifact=label,
                key_id=kid,
            )
        if remaining > length:
            raise TamperedPayloadError(
                f"{remaining - length} unexpected bytes after the payload",
                artifact=label,
                key_id=kid,
            )
    if not load_payload:
        if hash_payload:
            digest = _stream_digest(src, length, label, kid)
            _compare_digest(digest, header, label)
        return header, None
    payload, digest = _read_payload(src, length, label, kid)
    if size is None and src.read(1):
        raise TamperedPayloadError("unexpected bytes after the payload", artifact=label, key_id=kid)
    _compare_digest(digest, header, label)
    return header, payload


def _check_expected(
    header: EnvelopeHeader,
    expected: Context | None,
    expected_serializer: str | None,
    label: str | None,
) -> None:
    for key, want in (expected or {}).items():
        have = header.context.get(key)
        if have != want:
            raise ContextMismatchError(
                f"envelope was signed for {key}={have!r}, but was read as {key}={want!r}",
                artifact=label,
                key_id=header.kid,
            )
    if expected_serializer is not None and header.serializer != expected_serializer:
        raise ContextMismatchError(
            f"envelope was signed for serializer {header.serializer!r}, but was read as "
            f"{expected_serializer!r}",
            artifact=label,
            key_id=header.kid,
        )


def _read_payload(src: Any, length: int, label: str | None, kid: str) -> tuple[memoryview, str]:
    """Read exactly ``length`` payload bytes into private memory; returns them and their SHA-256.

    A large payload is read in chunks into an anonymous mapping, and each chunk is hashed in a
    worker thread while the next one is read (``readinto`` and ``hashlib`` release the GIL). The
    digest is over the bytes in our own buffer, which are exactly the bytes later deserialized."""
    if isinstance(src, _MemorySource):
        view = src.read_view(length)
        _check_read_length(view.nbytes, length, label, kid)
        return view, hashlib.sha256(view).hexdigest()
    view = _private_buffer(length)
    digest = hashlib.sha256()
    got = 0
    if length < LARGE_PAYLOAD:
        while got < length:
            n = src.readinto(view[got : got + READ_CHUNK])
            if not n:
                break
            got += n
        _check_read_length(got, length, label, kid)
        digest.update(view)
        return view, digest.hexdigest()
    # One worker runs the updates in submission order; the reader never waits for it, so the
    # total is max(read, hash), not the sum of per-chunk maxima.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = []
        while got < length:
            n = src.readinto(view[got : got + READ_CHUNK])
            if not n:
                break
            pending.append(pool.submit(digest.update, view[got : got + n]))
            got += n
        for future in pending:
            future.result()
    _check_read_length(got, length, label, kid)
    return view, digest.hexdigest()


def _check_read_length(got: int, length: int, label: str | None, kid: str) -> None:
    if got != length:
        raise TamperedPayloadError(
            f"payload truncated: header promises {length} bytes, {got} present",
            artifact=label,
            key_id=kid,
        )


def _private_buffer(length: int) -> memoryview:
    """A writable buffer of ``length`` bytes that only this process can change.

    Large buffers are anonymous private mappings asking for transparent huge pages: the pages
    are then faulted in 2 MiB at a time by ``readinto`` itself (in the kernel, while the worker
    thread hashes the previous chunk). ``bytearray(n)`` would first zero-fill every 4 KiB page in
    user space, which on a 512 MiB payload costs more than reading it."""
    if length >= LARGE_PAYLOAD and hasattr(mmap, "MAP_ANONYMOUS"):
        flags = getattr(mmap, "MAP_PRIVATE", 0) | mmap.MAP_ANONYMOUS
        try:
            mapping = mmap.mmap(-1, length, flags=flags)
        except (OSError, ValueError, TypeError):
            pass  # fall back to ordinary memory
        else:
            if hasattr(mmap, "MADV_HUGEPAGE"):
                try:
                    mapping.madvise(mmap.MADV_HUGEPAGE)
                except OSError:
                    pass  # no transparent huge pages here: 4 KiB pages work too
            return memoryview(mapping)
    return memoryview(bytearray(length))


def _stream_digest(src: Any, length: int, label: str | None, kid: str) -> str:
    digest = hashlib.sha256()
    remaining = length
    if isinstance(src, _MemorySource):
        view = src.read_view(length)
        digest.update(view)
        remaining -= view.nbytes
    else:
        buf = bytearray(min(READ_CHUNK, max(length, 1)))
        mv = memoryview(buf)
        while remaining:
            n = src.readinto(mv[: min(remaining, len(buf))])
            if not n:
                break
            digest.update(mv[:n])
            remaining -= n
    if remaining:
        raise TamperedPayloadError(
            f"payload truncated: {remaining} of {length} bytes missing", artifact=label, key_id=kid
        )
    return digest.hexdigest()


def _compare_digest(actual: str, header: EnvelopeHeader, label: str | None) -> None:
    if not hmac.compare_digest(actual, header.payload_sha256):
        raise TamperedPayloadError(
            "payload SHA-256 does not match the signed digest", artifact=label, key_id=header.kid
        )


def _deserialize(header: EnvelopeHeader, payload: memoryview, policy: Policy | None) -> Any:
    ser = get_serializer(header.serializer)
    limits = (policy or _default_policy()).zip_limits
    try:
        return ser.load(
            payload,
            header.serializer_params,
            artifact=header.artifact,
            key_id=header.kid,
            zip_limits=limits,
        )
    except SecureArtifactError as exc:
        raise exc.with_location(artifact=header.artifact) from None
