"""Reading an envelope: preamble, header, signature, context and payload checks, in that order.

The internals of ``unseal``/``verify_*`` in ``core/envelope.py``; the reading order is documented
in ``core/envelope_format.py``."""

from __future__ import annotations

import hmac
import io
import mmap
import os
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import canonical
from .algorithms import SIGNATURE_SIZES
from .digests import get_digest
from .errors import (
    ContextMismatchError,
    MalformedEnvelopeError,
    ResourceLimitError,
    SecureArtifactError,
    TamperedPayloadError,
    UnsignedPayloadError,
)
from .fsutil import open_no_follow
from .header_template import decode_known, reader_template, remember_reader
from .policy import Policy
from .serializers import get_serializer

if TYPE_CHECKING:
    from .keys import KeyStore

from .envelope_format import (
    FORMAT_VERSION,
    MAGIC,
    MAX_SIGNATURE_SIZE,
    PREAMBLE,
    PREAMBLE_SIZE,
    TAG,
    Context,
    EnvelopeHeader,
    check_schema,
    default_policy,
    header_from_fields,
    is_envelope,
    parse_time,
)

READ_CHUNK = 8 << 20
# Payloads from this size up are read into an anonymous mapping (no zero-fill pass in user space)
# and hashed in a worker thread while the next chunk is read.
LARGE_PAYLOAD = 4 << 20
# madvise(2) advice that makes a range's pages present for writing (Linux 5.14+; the value is
# Linux's, for Pythons whose mmap module predates the name); None elsewhere
MADV_POPULATE_WRITE: int | None = getattr(
    mmap, "MADV_POPULATE_WRITE", 23 if sys.platform.startswith("linux") else None
)


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
    known = decode_known(header_bytes)  # a shape verified before: the same fields, no JSON pass
    if known is not None:
        return bytes(first), header_bytes, signature, known, size
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
    policy = policy or default_policy()
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
    signed_at = check_schema(fields, label)
    kid = fields["kid"]
    _authenticate(
        key_store, policy, label, kid, fields["alg"], fields["digest_alg"],
        preamble, header_bytes, signature, signed_at,
    )
    # From here on the header is authentic.
    remember_reader(fields, get_digest(fields["digest_alg"]).header_field, header_bytes)
    header = header_from_fields(
        fields,
        header_bytes,
        PREAMBLE_SIZE + len(header_bytes) + len(signature),
        verified=True,
        signed_at=signed_at,
    )
    _check_read(header, expected, expected_serializer, policy, label)
    length = header.payload_length
    if size is not None:
        _check_remaining(size - header.payload_offset, length, label, kid)
    if not load_payload:
        if hash_payload:
            digest = _stream_digest(src, header.digest_alg, length, label, kid)
            _compare_digest(digest, header, label)
        return header, None
    payload, digest = _read_payload(src, header.digest_alg, length, label, kid)
    if size is None and src.read(1):
        raise TamperedPayloadError("unexpected bytes after the payload", artifact=label, key_id=kid)
    _compare_digest(digest, header, label)
    return header, payload


def _authenticate(
    key_store: KeyStore,
    policy: Policy,
    label: str | None,
    kid: str,
    alg: str,
    digest_alg: str,
    preamble: bytes,
    header_bytes: bytes,
    signature: bytes,
    signed_at: datetime,
) -> None:
    """Steps 3-5 of the reading order: algorithms allowed, signature size, then the key store's
    checks (key id, algorithm binding, key state and end date, freshness) and the signature."""
    policy.check_algorithm(alg, artifact=label, key_id=kid[:80])
    policy.check_digest(digest_alg, artifact=label, key_id=kid[:80])
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


def _check_read(
    header: EnvelopeHeader,
    expected: Context | None,
    expected_serializer: str | None,
    policy: Policy,
    label: str | None,
) -> None:
    """Steps 6-7: the reader's expected context and serializer, the serializer allow-list and
    the payload size cap (on an authentic header)."""
    _check_expected(header, expected, expected_serializer, label)
    policy.check_serializer(header.serializer, artifact=label, key_id=header.kid)
    policy.check_payload_size(header.payload_length, artifact=label, key_id=header.kid)


def _check_remaining(remaining: int, length: int, label: str | None, kid: str) -> None:
    """Step 8: exactly ``length`` payload bytes follow the signature."""
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


def verify_in_memory(
    data: bytes | memoryview,
    *,
    key_store: KeyStore,
    expected_context: Context | None,
    expected_serializer: str | None,
    policy: Policy | None,
) -> tuple[EnvelopeHeader, memoryview]:
    """Verify an envelope held in memory: the one path of ``verify_bytes``/``unseal``.

    A header of a shape already verified once is matched against its precompiled template
    (``header_template.py``: the strict parse and the schema's checks in one regular
    expression), and every other step runs exactly as in ``_verify_open``, in the same order and
    with the same functions; anything else (an unknown shape, a header the template does not
    match, a malformed preamble) takes the full path, which decides and names the reason."""
    policy = policy or default_policy()
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    fast = _verify_templated(view, key_store, expected_context, expected_serializer, policy)
    if fast is not None:
        return fast
    header, payload = _verify_source(
        _MemorySource(view),
        key_store=key_store,
        expected_context=expected_context,
        expected_serializer=expected_serializer,
        policy=policy,
        load_payload=True,
    )
    assert payload is not None
    return header, payload


def _verify_templated(
    view: memoryview,
    key_store: KeyStore,
    expected: Context | None,
    expected_serializer: str | None,
    policy: Policy,
) -> tuple[EnvelopeHeader, memoryview] | None:
    """``verify_in_memory`` for a header its template matches; None to take the full path.

    Steps 1-2 (preamble; strict header and exact schema) are the template match plus the
    preamble checks of ``_read_prefix``; None is returned only before step 3, so every refusal
    after that is raised here by the same checks as on the full path."""
    total = view.nbytes
    if total < PREAMBLE_SIZE:
        return None
    preamble = view[:PREAMBLE_SIZE].tobytes()
    magic, version, flags, header_len, sig_len = PREAMBLE.unpack(preamble)
    if (
        magic != MAGIC
        or version != FORMAT_VERSION
        or flags != 0
        or not 0 < header_len <= policy.max_header_bytes
        or not 0 < sig_len <= MAX_SIGNATURE_SIZE
    ):
        return None
    head_end = PREAMBLE_SIZE + header_len
    offset = head_end + sig_len
    if total < offset:
        return None
    header_bytes = view[PREAMBLE_SIZE:head_end].tobytes()
    template = reader_template(header_bytes)
    slots = template.match(header_bytes) if template is not None else None
    if slots is None:
        return None
    digest_hex, length, signed_text = slots
    try:
        signed_at = parse_time(signed_text)
    except ValueError:
        return None  # the full path names the invalid date
    fixed = template.fields  # the template's own: copied below, never handed out
    label = _artifact_label(expected, fixed)
    kid, digest_alg = fixed["kid"], fixed["digest_alg"]
    signature = view[head_end:offset].tobytes()
    _authenticate(
        key_store, policy, label, kid, fixed["alg"], digest_alg,
        preamble, header_bytes, signature, signed_at,
    )
    # From here on the header is authentic.
    header = EnvelopeHeader(
        alg=fixed["alg"],
        kid=kid,
        digest_alg=digest_alg,
        payload_digest=digest_hex,
        payload_length=length,
        serializer=fixed["serializer"],
        serializer_version=fixed["serializer_version"],
        serializer_params=dict(fixed["serializer_params"]),  # flat: a copy is a full copy
        context=dict(fixed["context"]),
        signed_at=signed_at,
        header_bytes=header_bytes,
        payload_offset=offset,
        verified=True,
    )
    _check_read(header, expected, expected_serializer, policy, label)
    _check_remaining(total - offset, length, label, kid)
    payload = view[offset:]
    hasher = get_digest(digest_alg).new(length)
    hasher.update(payload)
    _compare_digest(hasher.hexdigest(), header, label)
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


def _read_payload(
    src: Any, digest_alg: str, length: int, label: str | None, kid: str
) -> tuple[memoryview, str]:
    """Read exactly ``length`` payload bytes into private memory; returns them and their digest.

    A large payload is read in chunks into an anonymous mapping, and each chunk is hashed in a
    worker thread while the next one is read (``readinto`` and the hashers release the GIL). The
    digest is over the bytes in our own buffer, which are exactly the bytes later deserialized."""
    if isinstance(src, _MemorySource):
        view = src.read_view(length)
        _check_read_length(view.nbytes, length, label, kid)
        hasher = get_digest(digest_alg).new(view.nbytes)
        hasher.update(view)
        return view, hasher.hexdigest()
    view, populate = _private_buffer(length)
    digest = get_digest(digest_alg).new(length)
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
            populate(got + READ_CHUNK)
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


def _private_buffer(length: int) -> tuple[memoryview, Callable[[int], None]]:
    """A writable buffer of ``length`` bytes that only this process can change, and a function
    ``populate(end)`` that makes its pages up to ``end`` present before a read fills them.

    Large buffers are anonymous private mappings, where ``bytearray(n)`` would first zero-fill
    every page in user space, which on a 512 MiB payload costs more than reading it. The mapping
    is not advised ``MADV_HUGEPAGE``: it gets the same base pages as any ``malloc`` (what
    ``pickle.load`` reads into). Huge pages must come from free 2 MiB blocks, which a VM with free
    page reporting at that order (Firecracker with virtio-balloon, ``page_reporting_order=9``)
    has handed back to the host, so each one costs a host fault: 2-4x slower reads there
    (benchmarks/RESULTS.md, "IO manager, large, on a Firecracker VM"); with ``defrag=madvise``
    they may also stall in direct compaction.

    Pages are made present one read chunk at a time, just before the chunk is read
    (``MADV_POPULATE_WRITE``, Linux 5.14+): one kernel pass per chunk instead of a fault per
    4 KiB page inside ``readinto``, and, unlike populating the whole mapping up front
    (``MAP_POPULATE``, session 5), the worker thread hashes chunk i while chunk i+1 is being
    populated and read, so the hash no longer waits for the last page of the mapping. 512 MiB
    read + BLAKE3 into private memory, quiet VM: 0.20 s chunked, 0.25 s ``MAP_POPULATE``,
    0.23 s plain faults, 0.25 s ``readinto`` a new ``bytearray`` (benchmarks/RESULTS.md,
    "Reads: pages populated per chunk (session 6)"). Where the advice is unknown (older
    kernels, other systems) ``populate`` does nothing after its first refusal and ``readinto``
    faults the pages in itself."""
    if length >= LARGE_PAYLOAD and hasattr(mmap, "MAP_ANONYMOUS"):
        flags = getattr(mmap, "MAP_PRIVATE", 0) | mmap.MAP_ANONYMOUS
        try:
            mapping = mmap.mmap(-1, length, flags=flags)
        except (OSError, ValueError, TypeError):
            pass  # fall back to ordinary memory
        else:
            return memoryview(mapping), _Populator(mapping, length)
    return memoryview(bytearray(length)), _no_populate


def _no_populate(end: int) -> None:
    return None


class _Populator:
    """``populate(end)``: pages ``[done, min(end, length))`` of an anonymous mapping made
    present with ``MADV_POPULATE_WRITE`` (see ``_private_buffer``). ``done`` only grows and
    stays a multiple of the page size until the end of the mapping; a refused advice turns it
    off for good (the pages then fault in during the reads, as they would without it)."""

    __slots__ = ("_mapping", "_length", "_done")

    def __init__(self, mapping: mmap.mmap, length: int) -> None:
        self._mapping: mmap.mmap | None = mapping if MADV_POPULATE_WRITE is not None else None
        self._length = length
        self._done = 0

    def __call__(self, end: int) -> None:
        mapping = self._mapping
        end = min(end, self._length)
        if mapping is None or end <= self._done:
            return
        try:
            mapping.madvise(MADV_POPULATE_WRITE, self._done, end - self._done)
        except (OSError, ValueError, OverflowError):
            self._mapping = None
            return
        self._done = end if end == self._length else end - end % mmap.PAGESIZE


def _stream_digest(src: Any, digest_alg: str, length: int, label: str | None, kid: str) -> str:
    digest = get_digest(digest_alg).new(length)
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
    if not hmac.compare_digest(actual, header.payload_digest):
        raise TamperedPayloadError(
            f"payload {header.digest_alg} digest does not match the signed digest",
            artifact=label,
            key_id=header.kid,
        )


def _deserialize(header: EnvelopeHeader, payload: memoryview, policy: Policy | None) -> Any:
    ser = get_serializer(header.serializer)
    limits = (policy or default_policy()).zip_limits
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

