"""Seal and unseal: the public API of the signed envelope (format in ``core/envelope_format.py``).

``seal``/``seal_to`` sign a serialized object into an envelope; ``unseal``/``unseal_from``
verify one (signature, context, exact length and digest) before a byte is deserialized;
``verify_*`` verify without deserializing; ``read_header_unverified`` is for ``inspect``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import canonical
from ._envelope_read import (
    _deserialize,
    _MemorySource,
    _read_prefix,
    _verify_source,
    verify_in_memory,
)
from .algorithms import SIGNATURE_SIZES
from .digests import DEFAULT_DIGEST, Digest, get_digest
from .envelope_format import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE,
    PREAMBLE_SIZE,
    TAG,
    Context,
    EnvelopeHeader,
    check_context,
    default_policy,
    format_time,
    header_from_fields,
    is_envelope,
    parse_time,
)
from .errors import (
    MalformedEnvelopeError,
    ResourceLimitError,
    SecureArtifactError,
)
from .fsutil import atomic_output, open_no_follow
from .header_template import writer_template
from .policy import Policy
from .serializers import get_serializer

if TYPE_CHECKING:
    from .keys import KeyStore

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "PREAMBLE",
    "PREAMBLE_SIZE",
    "SIGNATURE_SIZES",
    "TAG",
    "Context",
    "EnvelopeHeader",
    "deserialize",
    "format_time",
    "is_envelope",
    "parse_time",
    "read_bounded_envelope",
    "read_header_unverified",
    "record_header",
    "seal",
    "seal_serialized_to",
    "seal_to",
    "seal_with_header",
    "unseal",
    "unseal_from",
    "verify_bytes",
    "verify_file",
    "verify_path",
]

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
    digest_alg: str = DEFAULT_DIGEST,
) -> bytes:
    """Serialize ``obj`` and return the complete signed envelope as bytes."""
    sealed = _prepare(obj, key_store, serializer, context, parameters, key_id, policy, digest_alg)
    head = sealed.finish(_hash_chunks(sealed.digest, sealed.chunks, sealed.length))
    out = b"".join([head, *sealed.chunks])
    _record(sealed, key_store, record, run_id)  # no EnvelopeHeader: the caller gets bytes only
    return out


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
    digest_alg: str = DEFAULT_DIGEST,
) -> tuple[bytes, EnvelopeHeader]:
    """Like ``seal``, also returning the signed header (with its ledger row id when recorded)."""
    sealed = _prepare(obj, key_store, serializer, context, parameters, key_id, policy, digest_alg)
    return _join_sealed(sealed, key_store, record, run_id)


def _join_sealed(
    sealed: _Sealed, key_store: KeyStore, record: bool, run_id: str | None
) -> tuple[bytes, EnvelopeHeader]:
    head = sealed.finish(_hash_chunks(sealed.digest, sealed.chunks, sealed.length))
    out = b"".join([head, *sealed.chunks])
    return out, sealed.header(_record(sealed, key_store, record, run_id))


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
    digest_alg: str = DEFAULT_DIGEST,
) -> EnvelopeHeader:
    """Serialize ``obj`` into a signed envelope written to a path or a binary file.

    A path is replaced atomically (temporary file + rename); ``durable=True`` also fsyncs. The
    payload is hashed in a worker thread while it is written, and never copied as a whole.
    ``digest_alg`` names the payload digest (``core/digests.py``; "sha256" for FIPS)."""
    sealed = _prepare(obj, key_store, serializer, context, parameters, key_id, policy, digest_alg)
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
    return sealed.header(_record(sealed, key_store, record, run_id))


class _Sealed:
    """A payload ready to be written: chunks, the signer, and the header minus its digest.

    ``finish`` renders the header through the precompiled template of its shape (key,
    serializer, parameters, context: ``header_template.py``, the bytes ``canonical.encode_shaped``
    gives, without a JSON pass), or encodes it once when the shape has none. Every field is built
    here from checked parts, and the serializer's parameters pass ``canonical.check_shape``; the
    ledger row and the returned ``EnvelopeHeader`` reuse those fields and ``signed_at``."""

    def __init__(
        self,
        chunks: list[memoryview],
        fields: dict[str, Any],
        signer: Any,
        digest: Digest,
        signed_at: datetime,
    ) -> None:
        self.chunks = chunks
        self.digest = digest
        self.length = sum(c.nbytes for c in chunks)
        self.fields = fields
        self.signer = signer
        self.signed_at = signed_at
        self.sig_size = SIGNATURE_SIZES[signer.alg]
        self.final: dict[str, Any] | None = None  # the signed fields, once finished
        self._header_bytes_done: bytes = b""
        self._prefix_size: int | None = None

    @property
    def prefix_size(self) -> int:
        """Bytes before the payload; the digest is always 64 hex digits, so a placeholder gives
        the exact size. Computed only when needed (streamed writes), saving an encode per seal."""
        if self._prefix_size is None:
            probe = self._encode(self._fields_with("0" * 64))
            self._prefix_size = PREAMBLE_SIZE + len(probe) + self.sig_size
        return self._prefix_size

    def _fields_with(self, digest: str) -> dict[str, Any]:
        fields = dict(self.fields, payload_length=self.length)
        fields[self.digest.header_field] = digest
        return fields

    def _encode(self, fields: dict[str, Any]) -> bytes:
        template = writer_template(fields, self.digest.header_field)
        if template is None:
            return canonical.encode_shaped(fields)
        return template.render(
            fields[self.digest.header_field], fields["payload_length"], fields["signed_at"]
        )

    def finish(self, digest: str) -> bytes:
        fields = self._fields_with(digest)
        header_bytes = self._encode(fields)
        preamble = PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(header_bytes), self.sig_size)
        signature = self.signer.sign(TAG + preamble + header_bytes)
        if len(signature) != self.sig_size:  # pragma: no cover - a key store bug
            raise SecureArtifactError("signer returned a signature of unexpected size")
        self.final, self._header_bytes_done = fields, header_bytes
        out = preamble + header_bytes + signature
        assert self._prefix_size is None or len(out) == self._prefix_size
        return out

    def header(self, ledger_row: int | None) -> EnvelopeHeader:
        """The signed header (after ``finish``), with its ledger row id when recorded."""
        assert self.final is not None
        return header_from_fields(
            self.final,
            self._header_bytes_done,
            PREAMBLE_SIZE + len(self._header_bytes_done) + self.sig_size,
            verified=True,
            signed_at=self.signed_at,
            ledger_row=ledger_row,
        )


def _prepare(
    obj: Any,
    key_store: KeyStore,
    serializer: str,
    context: Context | None,
    parameters: Mapping[str, Any] | None,
    key_id: str | None,
    policy: Policy | None,
    digest_alg: str = DEFAULT_DIGEST,
) -> _Sealed:
    policy = policy or default_policy()
    ctx = check_context(dict(context or {}))
    artifact = ctx.get("artifact")
    ser = get_serializer(serializer)
    policy.check_serializer(ser.name, artifact=artifact)
    params = ser.validate_parameters(parameters)
    signer = key_store.signer(key_id)
    policy.check_algorithm(signer.alg, artifact=artifact, key_id=signer.kid)
    digest = _digest_for(digest_alg, policy, artifact, signer.kid)
    raw_chunks, extra = ser.dump_validated(obj, params)
    return _assemble(
        raw_chunks, ser.name, ser.module_version(), extra, ctx, signer, policy, digest
    )


def _digest_for(name: str, policy: Policy, artifact: str | None, kid: str) -> Digest:
    """The registry entry for ``name``; a writer also refuses what its own policy refuses."""
    try:
        digest = get_digest(name)
    except ValueError as exc:
        raise MalformedEnvelopeError(str(exc), artifact=artifact, key_id=kid) from None
    policy.check_digest(digest.name, artifact=artifact, key_id=kid)
    return digest


def _assemble(
    raw_chunks: Sequence[Any],
    serializer: str,
    serializer_version: str,
    serializer_params: Mapping[str, Any],
    ctx: dict[str, str | None],
    signer: Any,
    policy: Policy,
    digest: Digest,
) -> _Sealed:
    chunks = [c if isinstance(c, memoryview) else memoryview(c) for c in raw_chunks]
    chunks = [c.cast("B") if c.format != "B" or c.ndim != 1 else c for c in chunks]
    params = dict(serializer_params)
    canonical.check_shape(params)  # the one header part not built from checked types here
    signed_at = datetime.now(UTC)
    fields = {
        "format": FORMAT_VERSION,
        "alg": signer.alg,
        "kid": signer.kid,
        "digest_alg": digest.name,
        "serializer": serializer,
        "serializer_version": serializer_version,
        "serializer_params": params,
        "context": ctx,
        "signed_at": format_time(signed_at),
    }
    sealed = _Sealed(chunks, fields, signer, digest, signed_at)
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
    digest_alg: str = DEFAULT_DIGEST,
) -> EnvelopeHeader:
    """Seal bytes that are already serialized (never deserialized here) into an envelope.

    For migrations (``adopt``: statically scanned legacy payloads) and re-signing (``resign``:
    payloads verified under an older key). ``record`` defaults to False so the caller can record
    the ledger row with the right origin."""
    policy = policy or default_policy()
    ctx = check_context(dict(context or {}))
    get_serializer(serializer)  # an unknown name is a SerializationError naming it
    policy.check_serializer(serializer, artifact=ctx.get("artifact"))
    signer = key_store.signer(key_id)
    policy.check_algorithm(signer.alg, artifact=ctx.get("artifact"), key_id=signer.kid)
    digest = _digest_for(digest_alg, policy, ctx.get("artifact"), signer.kid)
    sealed = _assemble(
        [payload], serializer, serializer_version, serializer_params, ctx, signer, policy, digest
    )
    return _write_target(target, sealed, key_store, record, run_id, durable)


def _hash_chunks(digest: Digest, chunks: list[memoryview], length: int) -> str:
    hasher = digest.new(length)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def _write_sealed(fh: BinaryIO, sealed: _Sealed) -> None:
    """Write prefix + payload. With a seekable file, hashing overlaps the payload writes."""
    large = sealed.length >= (4 << 20)
    seekable = _seekable(fh)
    if large and seekable:
        start = fh.tell()
        fh.seek(start + sealed.prefix_size)
        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(_hash_chunks, sealed.digest, sealed.chunks, sealed.length)
            for chunk in sealed.chunks:
                fh.write(chunk)
            digest = future.result()
        end = fh.tell()
        fh.seek(start)
        fh.write(sealed.finish(digest))
        fh.seek(end)
    else:
        fh.write(sealed.finish(_hash_chunks(sealed.digest, sealed.chunks, sealed.length)))
        for chunk in sealed.chunks:
            fh.write(chunk)


def _seekable(fh: BinaryIO) -> bool:
    try:
        return bool(fh.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _record(sealed: _Sealed, key_store: KeyStore, record: bool, run_id: str | None) -> int | None:
    """The ledger row of a finished seal, from the fields just signed (no header round trip)."""
    fields = sealed.final
    if not record or fields is None:
        return None
    return key_store.ledger.record_signature(
        key_id=fields["kid"],
        alg=fields["alg"],
        digest=fields[sealed.digest.header_field],
        length=fields["payload_length"],
        context=fields["context"],
        serializer=fields["serializer"],
        signed_at=fields["signed_at"],
        run_id=run_id,
        origin="signed",
    )


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
        digest=header.payload_digest,
        length=header.payload_length,
        context=dict(header.context),
        serializer=header.serializer,
        signed_at=format_time(header.signed_at),
        run_id=run_id,
        origin=origin,
    )


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
    return verify_in_memory(
        data,
        key_store=key_store,
        expected_context=expected_context,
        expected_serializer=expected_serializer,
        policy=policy,
    )


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
        _, header_bytes, signature, fields, _size = _read_prefix(src, default_policy(), None)
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


