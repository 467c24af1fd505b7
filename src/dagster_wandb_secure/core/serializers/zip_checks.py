"""Strict structural checks on a zip payload (skops), run before any library reads it."""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass

from ..errors import MalformedEnvelopeError, ResourceLimitError
from ._buffers import Buffer, _BufferReader, _payload_view, _short

GiB = 1 << 30


@dataclass(frozen=True)
class ZipLimits:
    """Caps applied to a zip (skops) payload before anything inside it is read."""

    max_entries: int = 100_000
    max_uncompressed_bytes: int = 16 * GiB


DEFAULT_ZIP_LIMITS = ZipLimits()


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
