"""The pickle family (pickle, dill, cloudpickle) and its payload layouts, ``inband`` and ``oob-v1``.

All three write a pickle stream with their own Pickler and read it back with an Unpickler over the
verified payload (``pickle.Unpickler``; ``dill.Unpickler(ignore=False)`` for dill). Parameters:
``protocol`` (an int from 2 to ``pickle.HIGHEST_PROTOCOL``, default the highest) for all three;
dill also takes ``byref`` and ``recurse`` (booleans, default false, passed explicitly so that
``dill.settings`` cannot change the output). joblib is pickle-family for policy purposes but has
its own file format (``joblib_format.py``).

Payload layouts
---------------
``signed_extra["framing"]`` names the layout; it is signed with the envelope header together with
the rest of ``signed_extra``: ``{"framing": "inband", "protocol": P, "module_version": ...}`` or
``{"framing": "oob-v1", "protocol": P, "buffers": N, "module_version": ...}``.

``"inband"``: the payload is exactly one pickle stream; nothing may follow its STOP opcode.
Written when the protocol is below 5.

``"oob-v1"``: written for every protocol-5 dump, even one with no out-of-band buffer (N = 0).
Large buffers (numpy arrays, ``PickleBuffer``) are kept out of the pickle stream and stored after
it, aligned, so that ``load`` can hand slices of the verified payload straight back to the
unpickler and numpy rebuilds the arrays without copying. All integers are unsigned big-endian::

    offset            size      field
    0                 4         N: number of out-of-band buffers, 0 <= N <= 1_000_000
    4                 8*N       L_1 .. L_N: byte length of each buffer
    4+8N              8         M: byte length of the in-band pickle stream
    12+8N             M         the in-band pickle stream (protocol 5); ends with STOP
    then, for i = 1 .. N:
                      P_i       zero bytes of padding, P_i = (-pos) mod 64, where pos is the
                                offset of the padding from the start of the payload
                      L_i       buffer i (the i-th NEXT_BUFFER of the stream)

So buffer 1's padding starts at pos = 12+8N+M, every buffer starts at an offset that is a
multiple of 64, and each padding starts right after the previous buffer. The payload ends exactly
after buffer N (no trailing padding). Example: N = 1, L_1 = 65536, M = 100: header 20 bytes,
stream at 20..119, 8 zero bytes, buffer at 128..65663, total 65664 bytes.

Writing: the pickler's ``buffer_callback`` receives each ``PickleBuffer`` in stream order. A
buffer whose ``raw()`` view fails (not contiguous) or is below 64 KiB (``OOB_MIN_BUFFER_BYTES``),
or arrives once ``OOB_MAX_BUFFERS`` buffers are already out of band, is left in-band (the
callback returns true); otherwise it is appended to the out-of-band list (the callback returns
false) and referenced, not copied. dill reduces numpy arrays itself with a copy, so its Pickler
gets a ``reducer_override`` that hands plain ``numpy.ndarray`` objects without object dtype back
to numpy's protocol-5 reduction.

Reading, before any unpickling, ``load`` refuses (``MalformedEnvelopeError``) a framing other than
the two above; for ``oob-v1`` signed parameters without an int ``protocol >= 5`` and an int
``buffers`` in 0..1_000_000; and a payload shorter than 12 bytes, whose N exceeds the bound or
differs from ``signed_extra["buffers"]``, whose lengths do not add up exactly to its size, or
whose padding is not zero. It then unpickles the stream with the buffers as an iterator and, after
``load()`` returns, refuses the result unless the stream consumed exactly M bytes (``inband``:
the whole payload) and all N buffers. If the payload view handed to ``load`` is writable, the
buffers are writable and so are the arrays rebuilt from them (unless they were read-only when
dumped).
"""

from __future__ import annotations

import io
import pickle
import platform
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from ._base import Serializer, _boolean, _protocol, _Validator
from ._buffers import Buffer, _BufferReader, _ChunkCollector
from .zip_checks import ZipLimits

FRAMING_INBAND = "inband"
FRAMING_OOB = "oob-v1"
OOB_MAX_BUFFERS = 1_000_000
OOB_MIN_BUFFER_BYTES = 64 * 1024
OOB_ALIGNMENT = 64
_ZERO_PAD = bytes(OOB_ALIGNMENT)
SMALL_STREAM_BYTES = 64 * 1024  # in-band streams up to this size are unpickled from a copy

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _pickle_body(
    pickler_factory: Callable[..., Any], obj: Any, protocol: int, oob: bool
) -> tuple[list[Buffer], dict[str, Any]]:
    """Pickle ``obj`` with ``pickler_factory(file, protocol, buffer_callback=...)``."""
    collector = _ChunkCollector()
    if not oob or protocol < 5:
        pickler_factory(collector, protocol, None).dump(obj)
        return collector.finish(), {"framing": FRAMING_INBAND, "protocol": protocol}

    buffers: list[memoryview] = []

    def keep_out_of_band(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:
            return True  # not contiguous: let the pickler decide (it refuses or copies)
        if raw.nbytes < OOB_MIN_BUFFER_BYTES or len(buffers) >= OOB_MAX_BUFFERS:
            return True  # in-band
        buffers.append(raw)
        return False  # out-of-band

    pickler_factory(collector, protocol, keep_out_of_band).dump(obj)
    inband = collector.finish()
    head = bytearray(_U32.pack(len(buffers)))
    for buf in buffers:
        head += _U64.pack(len(buf))
    head += _U64.pack(collector.size)
    chunks: list[Buffer] = [bytes(head), *inband]
    pos = len(head) + collector.size
    for buf in buffers:
        pad = -pos % OOB_ALIGNMENT
        if pad:
            chunks.append(_ZERO_PAD[:pad])
        chunks.append(buf)
        pos += pad + len(buf)
    extra = {"framing": FRAMING_OOB, "protocol": protocol, "buffers": len(buffers)}
    return chunks, extra


def parse_oob_framing(
    view: memoryview, expected_buffers: int
) -> tuple[memoryview, list[memoryview]]:
    """Split an ``oob-v1`` payload into (in-band stream, buffers) without copying.

    Raises ValueError naming the inconsistency; callers turn it into MalformedEnvelopeError."""
    total = len(view)
    if total < _U32.size + _U64.size:
        raise ValueError(f"payload of {total} bytes is shorter than the framing header")
    (count,) = _U32.unpack_from(view, 0)
    if count > OOB_MAX_BUFFERS:
        raise ValueError(f"framing declares {count} buffers, more than {OOB_MAX_BUFFERS}")
    if count != expected_buffers:
        raise ValueError(f"framing declares {count} buffers, the signed header {expected_buffers}")
    head = _U32.size + _U64.size * (count + 1)
    if head > total:
        raise ValueError(f"framing header of {head} bytes exceeds the payload ({total} bytes)")
    lengths = struct.unpack_from(f">{count}Q", view, _U32.size) if count else ()
    (inband_len,) = _U64.unpack_from(view, head - _U64.size)
    pos = head + inband_len
    if pos > total:
        raise ValueError(f"in-band stream of {inband_len} bytes runs past the payload end")
    inband = view[head:pos]
    buffers: list[memoryview] = []
    for index, length in enumerate(lengths, 1):
        pad = -pos % OOB_ALIGNMENT
        end = pos + pad + length
        if end > total:
            raise ValueError(f"buffer {index} of {length} bytes runs past the payload end")
        if pad and any(view[pos : pos + pad]):
            raise ValueError(f"padding before buffer {index} is not zero")
        buffers.append(view[pos + pad : end])
        pos = end
    if pos != total:
        raise ValueError(f"{total - pos} unexpected bytes after the last buffer")
    return inband, buffers


class _PickleFamily(Serializer):
    pickle_family = True
    supports_oob: ClassVar[bool] = True
    parameter_specs: ClassVar[dict[str, tuple[_Validator, Any]]] = {"protocol": (_protocol, None)}

    def _pickler(self, params: dict[str, Any]) -> Callable[..., Any]:
        pickler_cls = self.module.Pickler  # pickle.Pickler, cloudpickle.Pickler

        def factory(file: Any, protocol: int, callback: Any) -> Any:
            return pickler_cls(file, protocol=protocol, buffer_callback=callback)

        return factory

    def _unpickler(self, file: Any, buffers: Any) -> Any:
        return pickle.Unpickler(file, buffers=buffers)

    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]:
        factory = self._pickler(params)
        return _pickle_body(factory, obj, params["protocol"], self.supports_oob)

    def _dump_hint(self) -> str:
        return (
            "make the object picklable, or use the 'dill' or 'cloudpickle' serialization module "
            "for lambdas, closures and interactively defined classes"
        )

    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any:
        framing = extra.get("framing")
        if framing == FRAMING_OOB:
            protocol = extra.get("protocol")
            expected = extra.get("buffers")
            if (
                type(protocol) is not int
                or protocol < 5
                or type(expected) is not int
                or not 0 <= expected <= OOB_MAX_BUFFERS
            ):
                raise self._malformed(
                    f"serializer_params of framing {FRAMING_OOB} need protocol >= 5 and a buffer "
                    f"count, got protocol={protocol!r} buffers={expected!r}",
                    artifact,
                    key_id,
                )
            try:
                inband, buffers = parse_oob_framing(view, expected)
            except ValueError as err:
                raise self._malformed(f"framing {FRAMING_OOB}: {err}", artifact, key_id) from None
        elif framing == FRAMING_INBAND:
            inband, buffers = view, []
        else:
            raise self._malformed(f"unknown framing {framing!r}", artifact, key_id)

        # A small stream is read from a private copy in a C file object (no Python call per
        # read); a large one through the zero-copy reader over the verified payload.
        reader: Any = io.BytesIO(inband) if len(inband) <= SMALL_STREAM_BYTES else _BufferReader(inband)
        handed = iter(buffers)
        used = 0

        def counted() -> Iterator[memoryview]:
            nonlocal used
            for buf in handed:
                used += 1
                yield buf

        obj = self._unpickler(reader, counted() if buffers else handed).load()
        if reader.tell() != len(inband):
            raise self._malformed(
                f"{len(inband) - reader.tell()} bytes follow the pickle stream's STOP opcode",
                artifact,
                key_id,
            )
        if used != len(buffers):
            raise self._malformed(
                f"the pickle stream used {used} of {len(buffers)} out-of-band buffers",
                artifact,
                key_id,
            )
        return obj


_PICKLE_VERSION = f"python-{platform.python_version()}-protocol-{pickle.HIGHEST_PROTOCOL}"


class PickleSerializer(_PickleFamily):
    name = "pickle"
    file_suffix = "pickle"
    import_name = "pickle"

    def module_version(self) -> str:
        return _PICKLE_VERSION  # fixed for the life of the process (read per seal: twice)


class CloudpickleSerializer(_PickleFamily):
    name = "cloudpickle"
    file_suffix = "cloudpickle"
    import_name = "cloudpickle"
    pip_package = "cloudpickle"


class DillSerializer(_PickleFamily):
    """dill's Pickler accepts ``buffer_callback`` (it passes keywords on to the stock Python
    pickler), but dill reduces numpy arrays itself with a copy of their bytes. A subclass with a
    ``reducer_override`` hands plain ``numpy.ndarray`` objects back to numpy's protocol-5
    reduction, so arrays travel out of band for dill too."""

    name = "dill"
    file_suffix = "dill"
    import_name = "dill"
    pip_package = "dill"
    parameter_specs: ClassVar[dict[str, tuple[_Validator, Any]]] = {
        "protocol": (_protocol, None),
        "byref": (_boolean, False),
        "recurse": (_boolean, False),
    }

    def __init__(self) -> None:
        super().__init__()
        base = self.module.Pickler

        class _OutOfBandDillPickler(base):  # type: ignore[misc, valid-type]
            def reducer_override(self, obj: Any) -> Any:
                numpy = sys.modules.get("numpy")
                if (
                    numpy is not None
                    and type(obj) is numpy.ndarray
                    and not obj.dtype.hasobject
                    and self.proto >= 5
                ):
                    return obj.__reduce_ex__(self.proto)
                return NotImplemented

        self._pickler_cls = _OutOfBandDillPickler

    def _pickler(self, params: dict[str, Any]) -> Callable[..., Any]:
        pickler_cls = self._pickler_cls
        byref, recurse = params["byref"], params["recurse"]

        def factory(file: Any, protocol: int, callback: Any) -> Any:
            # Explicit settings so dill's process-global ``dill.settings`` cannot change output.
            return pickler_cls(
                file,
                protocol,
                byref=byref,
                recurse=recurse,
                fmode=0,
                buffer_callback=callback,
            )

        return factory

    def _unpickler(self, file: Any, buffers: Any) -> Any:
        return self.module.Unpickler(file, ignore=False, buffers=buffers)
