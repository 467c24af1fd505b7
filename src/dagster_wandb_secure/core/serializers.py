"""The serializer registry: pickle, dill, cloudpickle, joblib, skops, onnx and json.

The envelope (``core/envelope.py``) is the only caller that deserializes, and it calls ``load``
only on bytes whose signature, digest and length it has already verified. This module never
imports Dagster or W&B; optional libraries are imported when their serializer is first requested.

Contract (used by the envelope)::

    ser = get_serializer(name)              # SerializationError / SerializerUnavailableError
    params = ser.validate_parameters(user_params)        # normalized, JSON-able
    chunks, signed_extra = ser.dump(obj, params)         # payload == b"".join(chunks)
    obj = ser.load(payload_view, signed_extra)           # only on verified bytes

Every chunk returned by ``dump`` is ``bytes``, a ``bytearray`` or a one-dimensional, contiguous
``memoryview`` of format ``"B"``, so ``len(chunk)`` is its size in bytes. Chunks may *reference*
the object's own memory (zero copy): they must be consumed (hashed and written) before the
object is modified.

Pickle-family payload layouts
-----------------------------
``signed_extra["framing"]`` names the layout; it is signed with the envelope header.

``"inband"``: the payload is exactly one pickle stream; nothing may follow its STOP opcode.
Used for protocols below 5.

``"oob-v1"`` (protocol 5, out-of-band buffers): large buffers (numpy arrays, ``PickleBuffer``)
are kept out of the pickle stream and stored after it, aligned, so that ``load`` can hand
slices of the verified payload straight back to the unpickler and numpy rebuilds the arrays
without copying. All integers are unsigned big-endian::

    offset            size      field
    0                 4         N: number of out-of-band buffers, 0 <= N <= 1_000_000
    4                 8*N       L_1 .. L_N: byte length of each buffer
    4+8N              8         M: byte length of the in-band pickle stream
    12+8N             M         the in-band pickle stream (protocol 5); ends with STOP
    then, for i = 1 .. N:
                      P_i       zero bytes of padding, P_i = (-pos) mod 64, where pos is the
                                offset of the padding from the start of the payload
                      L_i       buffer i (the i-th NEXT_BUFFER of the stream)

The payload ends exactly after buffer N. ``load`` refuses, before any unpickling, a payload
whose lengths do not add up exactly to its size, whose N differs from
``signed_extra["buffers"]``, whose N exceeds the bound, or whose padding is not zero
(``MalformedEnvelopeError``). After unpickling it also checks that the stream consumed exactly M
bytes and all N buffers. Buffers below 64 KiB are written in-band. If the payload view handed
to ``load`` is writable, the buffers are writable and so are the arrays rebuilt from them
(unless they were read-only when dumped).

Other layouts: joblib's own file format (``joblib.dump`` to a file object); a skops zip;
an ONNX ``ModelProto`` in protobuf encoding; UTF-8 JSON with sorted keys and no whitespace.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import math
import pickle
import platform
import struct
import sys
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar, TypeAlias

from .errors import (
    MalformedEnvelopeError,
    ResourceLimitError,
    SecureArtifactError,
    SerializationError,
    SerializerNotAllowedError,
    SerializerUnavailableError,
)

Buffer: TypeAlias = bytes | bytearray | memoryview

SERIALIZERS: tuple[str, ...] = (
    "pickle",
    "dill",
    "cloudpickle",
    "joblib",
    "skops",
    "onnx",
    "json",
)
PICKLE_FAMILY: frozenset[str] = frozenset({"pickle", "dill", "cloudpickle", "joblib"})

FRAMING_INBAND = "inband"
FRAMING_OOB = "oob-v1"
OOB_MAX_BUFFERS = 1_000_000
OOB_MIN_BUFFER_BYTES = 64 * 1024
OOB_ALIGNMENT = 64
CHUNK_REFERENCE_MIN_BYTES = 64 * 1024
_ZERO_PAD = bytes(OOB_ALIGNMENT)

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

GiB = 1 << 30
_MAX_JSON_DEPTH = 128
_MAX_TRUSTED_TYPES = 10_000
_REASON_MAX = 400


@dataclass(frozen=True)
class ZipLimits:
    """Caps applied to a zip (skops) payload before anything inside it is read."""

    max_entries: int = 100_000
    max_uncompressed_bytes: int = 16 * GiB


DEFAULT_ZIP_LIMITS = ZipLimits()


# --------------------------------------------------------------------------------------------
# helpers


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."


def _byte_view(data: Any) -> memoryview:
    """A 1-D ``"B"`` view of any contiguous buffer, without copying."""
    if isinstance(data, pickle.PickleBuffer):
        return data.raw()
    view = memoryview(data)
    if view.ndim == 1 and view.format == "B":
        return view
    return pickle.PickleBuffer(view).raw()  # C- or Fortran-contiguous; BufferError otherwise


def _payload_view(payload: Buffer) -> memoryview:
    view = memoryview(payload)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


class _ChunkCollector:
    """A write-only binary file that keeps large writes by reference instead of copying them.

    Writes of at least ``CHUNK_REFERENCE_MIN_BYTES`` are kept as views over the caller's memory
    (the C pickler hands the bytes of a large ``bytes`` object or ``PickleBuffer`` straight to
    ``write``); smaller writes are coalesced into a bytearray. Only used with writers that never
    reuse a buffer after passing it to ``write`` (pickle, dill, cloudpickle, joblib)."""

    def __init__(self) -> None:
        self._chunks: list[Buffer] = []
        self._pending = bytearray()
        self._size = 0

    def write(self, data: Any) -> int:
        if type(data) is bytes and len(data) < CHUNK_REFERENCE_MIN_BYTES:
            self._pending += data
            self._size += len(data)
            return len(data)
        try:
            view = _byte_view(data)
        except BufferError:  # a non-contiguous buffer: copy it (rare)
            view = memoryview(memoryview(data).tobytes())
        n = len(view)
        if n >= CHUNK_REFERENCE_MIN_BYTES:
            self._flush_pending()
            self._chunks.append(view)
        else:
            self._pending += view
        self._size += n
        return n

    def _flush_pending(self) -> None:
        if self._pending:
            self._chunks.append(self._pending)
            self._pending = bytearray()

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        return None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    @property
    def size(self) -> int:
        return self._size

    def finish(self) -> list[Buffer]:
        self._flush_pending()
        chunks, self._chunks = self._chunks, []
        return chunks


class _BufferReader(io.BufferedIOBase):
    """A seekable, read-only binary file over a memoryview. It never copies the whole buffer:
    ``read`` copies only what is asked for and ``readinto`` copies straight into the caller's
    buffer."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _take(self, size: int | None) -> memoryview:
        size = len(self._view) if size is None or size < 0 else size
        end = min(len(self._view), self._pos + size)
        start = min(self._pos, end)
        self._pos = max(self._pos, end)
        return self._view[start:end]

    def read(self, size: int | None = -1) -> bytes:
        return bytes(self._take(size))

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        target = _byte_view(buffer)
        chunk = self._take(len(target))
        target[: len(chunk)] = chunk
        return len(chunk)

    def readinto1(self, buffer: Any) -> int:
        return self.readinto(buffer)

    def peek(self, size: int = 0) -> bytes:
        return bytes(self._view[self._pos : self._pos + max(size, 1)])

    def readline(self, size: int | None = -1) -> bytes:
        size = len(self._view) if size is None or size < 0 else size
        limit = min(len(self._view), self._pos + size)
        pos = self._pos
        while pos < limit:
            window = bytes(self._view[pos : min(limit, pos + 4096)])
            hit = window.find(b"\n")
            if hit >= 0:
                return bytes(self._take(pos + hit + 1 - self._pos))
            pos += len(window)
        return bytes(self._take(limit - self._pos))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            new = offset
        elif whence == io.SEEK_CUR:
            new = self._pos + offset
        elif whence == io.SEEK_END:
            new = len(self._view) + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if new < 0:
            raise ValueError("negative seek position")
        self._pos = new
        return new

    def tell(self) -> int:
        return self._pos


# --------------------------------------------------------------------------------------------
# parameter validation

_REFUSED_PARAMETERS: dict[str, str] = {
    "file": "the library chooses where the payload is written",
    "filename": "the library chooses where the payload is written",
    "fileobj": "the library chooses where the payload is written",
    "fix_imports": "Python 2 compatibility options are not supported",
    "encoding": "Python 2 compatibility options are not supported",
    "errors": "Python 2 compatibility options are not supported",
    "buffer_callback": "out-of-band buffers are managed by the library (framing oob-v1)",
    "buffers": "out-of-band buffers are managed by the library (framing oob-v1)",
    "fmode": "pickling open file handles is not supported",
    "ignore": "loader options cannot be set by the writer",
    "mmap_mode": "memory-mapped loading is not supported for signed payloads",
    "trusted": "skops trusted types are recorded automatically at dump time and signed",
    "persistent_id": "custom persistence hooks are not supported",
    "reducer_override": "custom reducers are not supported",
}

_Validator = Callable[[str, str, Any], Any]


def _param_error(ser: str, param: str, reason: str, artifact: str | None) -> SerializationError:
    return SerializationError(
        f"serializer {ser!r}: parameter {param!r} {reason}",
        artifact=artifact,
        hint="fix `serialization_module.parameters` in the output's wandb_artifact_configuration",
    )


def _protocol(ser: str, param: str, value: Any) -> int:
    if value is None:
        return pickle.HIGHEST_PROTOCOL
    if type(value) is not int or not 2 <= value <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"must be an int from 2 to {pickle.HIGHEST_PROTOCOL}, got {value!r}")
    return value


def _boolean(ser: str, param: str, value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"must be true or false, got {value!r}")
    return value


_JOBLIB_METHODS = ("zlib", "gzip", "bz2", "lzma", "xz")


def _joblib_methods() -> tuple[str, ...]:
    methods = _JOBLIB_METHODS
    if importlib.util.find_spec("lz4") is not None:
        methods = (*methods, "lz4")
    return methods


def _joblib_compress(ser: str, param: str, value: Any) -> Any:
    if value is None:
        return 0
    if type(value) is bool:
        return value
    if type(value) is int:
        if not 0 <= value <= 9:
            raise ValueError(f"must be a level from 0 to 9, got {value!r}")
        return value
    methods = _joblib_methods()
    if isinstance(value, str):
        if value not in methods:
            raise ValueError(f"unknown compression method {value!r}; known: {', '.join(methods)}")
        return value
    if isinstance(value, list | tuple) and len(value) == 2:
        method, level = value
        if not isinstance(method, str) or method not in methods:
            raise ValueError(f"unknown compression method {method!r}; known: {', '.join(methods)}")
        if type(level) is not int or not 0 <= level <= 9:
            raise ValueError(f"compression level must be an int from 0 to 9, got {level!r}")
        return [method, level]
    raise ValueError(
        "must be a level 0-9, true/false, a method name or [method, level], "
        f"got {type(value).__name__}"
    )


_ZIP_METHODS = {
    "stored": zipfile.ZIP_STORED,
    "deflated": zipfile.ZIP_DEFLATED,
    "bzip2": zipfile.ZIP_BZIP2,
    "lzma": zipfile.ZIP_LZMA,
}


def _zip_compression(ser: str, param: str, value: Any) -> int:
    if value is None:
        return zipfile.ZIP_STORED
    if isinstance(value, str) and value in _ZIP_METHODS:
        return _ZIP_METHODS[value]
    if type(value) is int and value in _ZIP_METHODS.values():
        return value
    raise ValueError(f"must be one of {', '.join(_ZIP_METHODS)} (or its zipfile constant)")


def _zip_level(ser: str, param: str, value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= 9:
        raise ValueError(f"must be an int from 0 to 9, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# the registry


class Serializer(ABC):
    """One serialization format. Instances are stateless; get them with ``get_serializer``."""

    name: ClassVar[str]
    pickle_family: ClassVar[bool] = False
    file_suffix: ClassVar[str]
    import_name: ClassVar[str | None] = None  # module imported on first use
    pip_package: ClassVar[str] = ""
    parameter_specs: ClassVar[dict[str, tuple[_Validator, Any]]] = {}  # name -> (check, default)

    def __init__(self) -> None:
        self._module: ModuleType | None = None
        if self.import_name is not None:
            self._module = importlib.import_module(self.import_name)

    @property
    def module(self) -> ModuleType:
        assert self._module is not None
        return self._module

    def module_version(self) -> str:
        return str(getattr(self.module, "__version__", "unknown"))

    # -- parameters --

    def validate_parameters(
        self, parameters: Mapping[str, Any] | None, *, artifact: str | None = None
    ) -> dict[str, Any]:
        """Check user parameters; returns every parameter with its effective value."""
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, Mapping):
            raise SerializationError(
                f"serializer {self.name!r}: parameters must be a mapping, "
                f"got {type(parameters).__name__}",
                artifact=artifact,
                hint="pass `parameters` as a dict, e.g. {'protocol': 5}",
            )
        out: dict[str, Any] = {}
        for key, value in parameters.items():
            if not isinstance(key, str):
                raise _param_error(self.name, repr(key), "is not a string", artifact)
            if key not in self.parameter_specs:
                if key in _REFUSED_PARAMETERS:
                    reason = f"is not accepted: {_REFUSED_PARAMETERS[key]}"
                else:
                    allowed = ", ".join(sorted(self.parameter_specs)) or "none"
                    reason = f"is unknown (allowed: {allowed})"
                raise _param_error(self.name, key, reason, artifact)
            check, _default = self.parameter_specs[key]
            try:
                out[key] = check(self.name, key, value)
            except ValueError as err:
                raise _param_error(self.name, key, str(err), artifact) from None
        for key, (check, default) in self.parameter_specs.items():
            if key not in out:
                out[key] = check(self.name, key, default)
        return out

    # -- dump / load --

    def dump(
        self, obj: Any, params: Mapping[str, Any] | None = None, *, artifact: str | None = None
    ) -> tuple[list[Buffer], dict[str, Any]]:
        """Serialize ``obj``; returns (payload chunks, signed_extra)."""
        checked = self.validate_parameters(params, artifact=artifact)
        try:
            chunks, extra = self._dump(obj, checked)
        except SecureArtifactError:
            raise
        except Exception as err:
            raise SerializationError(
                f"{self.name} could not serialize an object of type "
                f"{type(obj).__module__}.{type(obj).__qualname__}: {_short(err)}",
                artifact=artifact,
                hint=self._dump_hint(),
            ) from err
        extra["module_version"] = self.module_version()
        return chunks, extra

    def load(
        self,
        payload: Buffer,
        signed_extra: Mapping[str, Any],
        *,
        artifact: str | None = None,
        key_id: str | None = None,
        zip_limits: ZipLimits | None = None,
    ) -> Any:
        """Deserialize a payload whose signature was already verified (never call it on
        anything else). Framing errors raise MalformedEnvelopeError; a library failure on the
        verified bytes raises SerializationError (a writer-side bug or a version skew)."""
        view = _payload_view(payload)
        if not isinstance(signed_extra, Mapping):
            raise self._malformed("serializer_params is not an object", artifact, key_id)
        try:
            limits = zip_limits or DEFAULT_ZIP_LIMITS
            return self._load(view, signed_extra, artifact, key_id, limits)
        except SecureArtifactError:
            raise
        except Exception as err:
            raise self._load_failed(err, signed_extra, artifact, key_id) from err

    @abstractmethod
    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]: ...

    @abstractmethod
    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any: ...

    def _dump_hint(self) -> str:
        return "choose another serialization module or fix its parameters"

    def _malformed(
        self, reason: str, artifact: str | None, key_id: str | None
    ) -> MalformedEnvelopeError:
        return MalformedEnvelopeError(
            f"{self.name} payload: {reason}", artifact=artifact, key_id=key_id
        )

    def _load_failed(
        self,
        err: BaseException,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
    ) -> SerializationError:
        recorded = extra.get("module_version")
        installed = self.module_version()
        skew = ""
        if isinstance(recorded, str) and recorded != installed:
            skew = f" (written with {self.name} {recorded}, installed {installed})"
        return SerializationError(
            f"could not deserialize the verified {self.name} payload: {_short(err)}. The bytes "
            f"were signed by a trusted key, so this is a writer-side bug or a version skew{skew}",
            artifact=artifact,
            key_id=key_id,
            hint=(
                "read it with the library versions it was written with, or re-materialize the "
                "asset with the reader's versions"
            ),
        )


# ----- the pickle family ----------------------------------------------------------------------


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
    lengths = struct.unpack_from(f">{count}Q", view, _U32.size)
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

        reader = _BufferReader(inband)
        handed = iter(buffers)
        used = 0

        def counted() -> Iterator[memoryview]:
            nonlocal used
            for buf in handed:
                used += 1
                yield buf

        obj = self._unpickler(reader, counted()).load()
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


class PickleSerializer(_PickleFamily):
    name = "pickle"
    file_suffix = "pickle"
    import_name = "pickle"

    def module_version(self) -> str:
        return f"python-{platform.python_version()}-protocol-{pickle.HIGHEST_PROTOCOL}"


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


class _PickledByValue:
    """Carries a cloudpickle stream inside a joblib file; unpickles straight to the object."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (pickle.loads, (self.data,))


class JoblibSerializer(Serializer):
    name = "joblib"
    pickle_family = True
    file_suffix = "joblib"
    import_name = "joblib"
    pip_package = "joblib"
    parameter_specs: ClassVar[dict[str, tuple[_Validator, Any]]] = {
        "compress": (_joblib_compress, 0),
        "protocol": (_protocol, None),
    }

    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]:
        compress = params["compress"]
        extra: dict[str, Any] = {"compress": compress, "protocol": params["protocol"]}
        try:
            return self._joblib_dump(obj, params), extra
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            # joblib's pickler saves functions by reference, so lambdas and closures (the
            # guide's own joblib example) fail. Wrap the object pickled *by value* with
            # cloudpickle; the signed parameters record it. Anything cloudpickle cannot handle
            # either still fails with the original error as the cause.
            try:
                import cloudpickle
            except ImportError:  # pragma: no cover - cloudpickle is a core dependency
                raise exc from None
            try:
                inner = cloudpickle.dumps(obj, protocol=params["protocol"] or 5)
            except Exception:  # noqa: BLE001 - report joblib's own error, the one users expect
                raise exc from None
            extra["by_value"] = "cloudpickle"
            return self._joblib_dump(_PickledByValue(inner), params), extra

    def _joblib_dump(self, obj: Any, params: dict[str, Any]) -> list[Buffer]:
        compress = params["compress"]
        collector = _ChunkCollector()
        self.module.dump(
            obj,
            collector,
            compress=tuple(compress) if isinstance(compress, list) else compress,
            protocol=params["protocol"],
        )
        return collector.finish()

    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any:
        return self.module.load(_BufferReader(view))

    def _dump_hint(self) -> str:
        return (
            "make the object picklable (joblib pickles lambdas and closures by value with "
            "cloudpickle, but not generators, open files or sockets)"
        )


# ----- zip (skops) -----------------------------------------------------------------------------

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record, 22 bytes
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_CENTRAL_HEADER = struct.Struct("<4s4s4HL2L5H2L")  # 46 bytes
_ZIP_LOCAL_MAGIC = b"PK\x03\x04"


def _zip_directory(view: memoryview) -> tuple[int, int]:
    """Locate the central directory strictly: (offset, size). ValueError if inconsistent."""
    total = len(view)
    if total < _EOCD.size or bytes(view[:4]) != _ZIP_LOCAL_MAGIC:
        raise ValueError("not a zip file (it must start with PK\\x03\\x04)")
    tail_start = max(0, total - (_EOCD.size + 0xFFFF))
    eocd = bytes(view[tail_start:]).rfind(b"PK\x05\x06")
    if eocd < 0:
        raise ValueError("no end-of-central-directory record")
    eocd += tail_start
    fields = _EOCD.unpack_from(view, eocd)
    _sig, disk, cd_disk, _n_disk, n_total, cd_size, cd_offset, comment_len = fields
    if eocd + _EOCD.size + comment_len != total:
        raise ValueError("bytes after the end-of-central-directory record")
    if disk or cd_disk:
        raise ValueError("multi-disk zip archives are not supported")
    directory_end = eocd
    if n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        locator = eocd - _ZIP64_LOCATOR.size
        if locator < 0 or bytes(view[locator : locator + 4]) != b"PK\x06\x07":
            raise ValueError("zip64 locator missing")
        _s, _d, zip64_at, _disks = _ZIP64_LOCATOR.unpack_from(view, locator)
        if zip64_at + _ZIP64_EOCD.size != locator:
            raise ValueError("zip64 end record is not where the locator says")
        z = _ZIP64_EOCD.unpack_from(view, zip64_at)
        if z[0] != b"PK\x06\x06":
            raise ValueError("bad zip64 end record signature")
        cd_size, cd_offset = z[8], z[9]
        directory_end = zip64_at
    if cd_offset + cd_size != directory_end:
        raise ValueError("central directory is not immediately before its end record")
    return cd_offset, cd_size


def check_zip(
    data: Buffer,
    *,
    limits: ZipLimits | None = None,
    artifact: str | None = None,
    key_id: str | None = None,
) -> None:
    """Refuse a zip that is not a plain, single, well-formed archive, before any library reads it.

    Counts central-directory records without allocating (ResourceLimitError over
    ``limits.max_entries``), then caps the declared uncompressed total (ResourceLimitError), then
    refuses duplicate entry names and any entry whose CRC does not match
    (MalformedEnvelopeError)."""
    limits = limits or DEFAULT_ZIP_LIMITS
    view = _payload_view(data)
    try:
        cd_offset, cd_size = _zip_directory(view)
    except (ValueError, struct.error) as err:
        raise MalformedEnvelopeError(
            f"zip payload: {err}", artifact=artifact, key_id=key_id
        ) from None
    pos, end, count = cd_offset, cd_offset + cd_size, 0
    while pos < end:
        if end - pos < _CENTRAL_HEADER.size or bytes(view[pos : pos + 4]) != b"PK\x01\x02":
            raise MalformedEnvelopeError(
                f"zip payload: bad central directory record at offset {pos}",
                artifact=artifact,
                key_id=key_id,
            )
        record = _CENTRAL_HEADER.unpack_from(view, pos)
        name_len, extra_len, comment_len = record[9], record[10], record[11]
        pos += _CENTRAL_HEADER.size + name_len + extra_len + comment_len
        count += 1
        if count > limits.max_entries:
            raise ResourceLimitError(
                f"zip payload has more than {limits.max_entries} entries",
                artifact=artifact,
                key_id=key_id,
            )
    if pos != end:
        raise MalformedEnvelopeError(
            "zip payload: central directory size does not match its records",
            artifact=artifact,
            key_id=key_id,
        )
    try:
        archive = zipfile.ZipFile(_BufferReader(view))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise MalformedEnvelopeError(
            f"zip payload: {_short(err)}", artifact=artifact, key_id=key_id
        ) from None
    with archive:
        infos = archive.infolist()
        if len(infos) != count:
            raise MalformedEnvelopeError(
                "zip payload: entry count differs from its central directory",
                artifact=artifact,
                key_id=key_id,
            )
        declared = sum(info.file_size for info in infos)
        if declared > limits.max_uncompressed_bytes:
            raise ResourceLimitError(
                f"zip payload would expand to {declared} bytes, more than the limit of "
                f"{limits.max_uncompressed_bytes}",
                artifact=artifact,
                key_id=key_id,
            )
        names = archive.namelist()
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})[:5]
            raise MalformedEnvelopeError(
                f"zip payload has duplicate entry names {dupes}",
                artifact=artifact,
                key_id=key_id,
            )
        try:
            bad = archive.testzip()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as err:
            raise MalformedEnvelopeError(
                f"zip payload: an entry cannot be read: {_short(err)}",
                artifact=artifact,
                key_id=key_id,
            ) from None
        if bad is not None:
            raise MalformedEnvelopeError(
                f"zip payload: entry {bad!r} fails its CRC check",
                artifact=artifact,
                key_id=key_id,
            )


def _trusted_types(value: Any) -> list[str]:
    if (
        not isinstance(value, list)
        or len(value) > _MAX_TRUSTED_TYPES
        or not all(isinstance(t, str) and t and len(t) <= 512 for t in value)
    ):
        raise ValueError("trusted_types must be a list of type names")
    return list(value)


class SkopsSerializer(Serializer):
    name = "skops"
    file_suffix = "skops"
    import_name = "skops.io"
    pip_package = "skops"
    parameter_specs: ClassVar[dict[str, tuple[_Validator, Any]]] = {
        "compression": (_zip_compression, None),
        "compresslevel": (_zip_level, None),
    }

    def module_version(self) -> str:
        return str(importlib.import_module("skops").__version__)

    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]:
        data = self.module.dumps(
            obj, compression=params["compression"], compresslevel=params["compresslevel"]
        )
        trusted = sorted(self.module.get_untrusted_types(data=data))
        return [data], {"trusted_types": trusted}

    def _dump_hint(self) -> str:
        return "skops supports scikit-learn style objects; use 'joblib' or 'pickle' for others"

    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any:
        try:
            trusted = _trusted_types(extra.get("trusted_types"))
        except ValueError as err:
            raise self._malformed(str(err), artifact, key_id) from None
        check_zip(view, limits=zip_limits, artifact=artifact, key_id=key_id)
        return self.module.loads(bytes(view), trusted=trusted)


def load_unsigned_skops(
    data: Buffer,
    *,
    limits: ZipLimits | None = None,
    artifact: str | None = None,
) -> Any:
    """Load an UNSIGNED skops file with skops' default trusted types only.

    The caller must have checked that policy allows unsigned safe formats. A type outside the
    defaults raises SerializerNotAllowedError naming it; a malformed or oversized zip raises
    MalformedEnvelopeError / ResourceLimitError before skops reads it."""
    ser = get_serializer("skops")
    view = _payload_view(data)
    check_zip(view, limits=limits, artifact=artifact)
    raw = bytes(view)
    exceptions = importlib.import_module("skops.io.exceptions")
    try:
        untrusted = sorted(ser.module.get_untrusted_types(data=raw))
    except Exception as err:
        raise MalformedEnvelopeError(
            f"unsigned skops file cannot be audited: {_short(err)}", artifact=artifact
        ) from err
    if untrusted:
        raise _untrusted_skops(untrusted, artifact)
    try:
        return ser.module.loads(raw, trusted=None)
    except exceptions.UntrustedTypesFoundException as err:
        raise _untrusted_skops([str(err)[:200]], artifact) from None
    except Exception as err:
        raise SerializationError(
            f"unsigned skops file could not be loaded: {_short(err)}",
            artifact=artifact,
            hint="re-materialize the asset; new outputs are signed",
        ) from err


def _untrusted_skops(types: list[str], artifact: str | None) -> SerializerNotAllowedError:
    shown = ", ".join(types[:10]) + (" ..." if len(types) > 10 else "")
    return SerializerNotAllowedError(
        f"unsigned skops file needs types outside skops' default trusted list: {shown}",
        artifact=artifact,
        hint=(
            "an unsigned file cannot vouch for those types; re-publish it signed "
            "(`dagster-wandb-secure adopt`) or re-materialize the asset"
        ),
    )


# ----- onnx --------------------------------------------------------------------------------------


def _onnx_tensors(model: Any) -> Iterator[Any]:
    def from_graph(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        for node in graph.node:
            yield from from_node(node)

    def from_node(node: Any) -> Iterator[Any]:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sparse in attr.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from from_graph(attr.g)
            for graph in attr.graphs:
                yield from from_graph(graph)

    yield from from_graph(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from from_node(node)


class OnnxSerializer(Serializer):
    name = "onnx"
    file_suffix = "onnx"
    import_name = "onnx"
    pip_package = "dagster-wandb-secure[onnx]"

    def _model(self, obj: Any) -> Any:
        onnx = self.module
        if isinstance(obj, onnx.ModelProto):
            return obj
        if isinstance(obj, bytes | bytearray | memoryview):
            return onnx.load_model_from_string(bytes(obj))
        raise TypeError(f"expected an onnx.ModelProto or its bytes, got {type(obj).__name__}")

    def _check(self, model: Any) -> None:
        uses_external_data = self.module.external_data_helper.uses_external_data
        if any(uses_external_data(tensor) for tensor in _onnx_tensors(model)):
            raise ValueError("the model references external data files; embed all tensors")
        self.module.checker.check_model(model)

    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]:
        model = self._model(obj)
        self._check(model)
        return [model.SerializeToString()], {}

    def _dump_hint(self) -> str:
        return "pass a valid, self-contained onnx.ModelProto (onnx.checker.check_model must pass)"

    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any:
        model = self.module.load_model_from_string(bytes(view))
        self._check(model)
        return model


def load_unsigned_onnx(data: Buffer, *, artifact: str | None = None) -> Any:
    """Load an UNSIGNED ONNX model (protobuf parse + ``onnx.checker``, no external data).

    The caller must have checked that policy allows unsigned safe formats."""
    ser = get_serializer("onnx")
    try:
        return ser._load(_payload_view(data), {}, artifact, None, DEFAULT_ZIP_LIMITS)
    except Exception as err:
        raise MalformedEnvelopeError(
            f"unsigned ONNX file is not a valid model: {_short(err)}",
            artifact=artifact,
            hint="re-materialize the asset; new outputs are signed",
        ) from err


# ----- json --------------------------------------------------------------------------------------


def _check_json_value(value: Any, depth: int = 0) -> None:
    if depth > _MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {_MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not valid JSON")
        return
    if isinstance(value, list):
        for item in value:
            _check_json_value(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"object keys must be strings, got {type(key).__name__}")
            _check_json_value(item, depth + 1)
        return
    raise ValueError(
        f"{type(value).__name__} is not JSON data (use dict, list, str, int, float, bool, None)"
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class JsonSerializer(Serializer):
    name = "json"
    file_suffix = "json"
    import_name = "json"

    def module_version(self) -> str:
        return f"python-{platform.python_version()}"

    def _dump(self, obj: Any, params: dict[str, Any]) -> tuple[list[Buffer], dict[str, Any]]:
        _check_json_value(obj)
        text = json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return [text.encode("utf-8")], {}

    def _dump_hint(self) -> str:
        return "the json module stores only plain JSON data; use 'pickle' for other objects"

    def _load(
        self,
        view: memoryview,
        extra: Mapping[str, Any],
        artifact: str | None,
        key_id: str | None,
        zip_limits: ZipLimits,
    ) -> Any:
        text = str(view, "utf-8", "strict")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


# ----- registry -------------------------------------------------------------------------------

_CLASSES: dict[str, type[Serializer]] = {
    cls.name: cls
    for cls in (
        PickleSerializer,
        DillSerializer,
        CloudpickleSerializer,
        JoblibSerializer,
        SkopsSerializer,
        OnnxSerializer,
        JsonSerializer,
    )
}
assert tuple(_CLASSES) == SERIALIZERS
_INSTANCES: dict[str, Serializer] = {}


def get_serializer(name: str) -> Serializer:
    """The serializer called ``name``. Unknown name -> SerializationError; its library not
    installed -> SerializerUnavailableError naming what to pip install."""
    if not isinstance(name, str) or name not in _CLASSES:
        raise SerializationError(
            f"unknown serialization module {name!r}; known: {', '.join(SERIALIZERS)}",
            hint=f"use one of: {', '.join(SERIALIZERS)}",
        )
    ser = _INSTANCES.get(name)
    if ser is None:
        cls = _CLASSES[name]
        try:
            ser = cls()
        except ImportError as err:
            raise SerializerUnavailableError(
                f"serialization module {name!r} needs {cls.import_name!r}, which is not "
                f"installed ({_short(err)})",
                hint=f"pip install '{cls.pip_package}'",
            ) from err
        except Exception as err:
            raise SerializerUnavailableError(
                f"serialization module {name!r} needs {cls.import_name!r}, which is installed "
                f"but fails to import ({_short(err)})",
                hint=f"reinstall it: pip install --force-reinstall '{cls.pip_package}'",
            ) from err
        _INSTANCES[name] = ser
    return ser


def auto_serializer_name(obj: Any) -> str:
    """The safest serializer for ``obj``: skops for scikit-learn estimators, onnx for ONNX
    models, else pickle. Never imports sklearn or onnx (only checks already loaded modules)."""
    sk_base = sys.modules.get("sklearn.base")
    if sk_base is not None and isinstance(obj, sk_base.BaseEstimator):
        return "skops"
    onnx = sys.modules.get("onnx")
    model_proto = getattr(onnx, "ModelProto", None) if onnx is not None else None
    if model_proto is not None and isinstance(obj, model_proto):
        return "onnx"
    return "pickle"


__all__ = [
    "DEFAULT_ZIP_LIMITS",
    "FRAMING_INBAND",
    "FRAMING_OOB",
    "OOB_MAX_BUFFERS",
    "PICKLE_FAMILY",
    "SERIALIZERS",
    "Buffer",
    "Serializer",
    "ZipLimits",
    "auto_serializer_name",
    "check_zip",
    "get_serializer",
    "load_unsigned_onnx",
    "load_unsigned_skops",
    "parse_oob_framing",
]
