"""Zero-copy byte plumbing shared by the serializers: buffer views, the chunk collector that
``dump`` writes to, and the seekable reader that ``load`` reads from.

``_short`` (the bounded text of a library's exception, quoted in error messages) lives here too,
because the zip checks, the base class and every format need it and import nothing else shared.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview

CHUNK_REFERENCE_MIN_BYTES = 64 * 1024
_REASON_MAX = 400


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
