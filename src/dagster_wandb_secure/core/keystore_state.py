"""The parsed ``keystore.json`` a key store works from, and how it is read.

A ``StoreState`` is one parse of the file, with the lookups the hot path needs (primary, records
by fingerprint prefix) and an open descriptor of the very file that was parsed. While that
descriptor is open the file's inode cannot be freed and reused, so every atomic replace of the
store (by any process) shows up as a new inode number at the next ``stat``, even when size and
(coarse) mtime stay the same: ``KeyStore`` reuses a state only while ``fresh`` says so. Why no
stale state can be used: SECURITY.md "Caches on the hot path".
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from .keyrecords import KeyRecord, KeyStatus, file_sig, parse_store, read_store_file

__all__ = ["StoreState", "close_pin", "fresh", "load_state"]


@dataclass(frozen=True)
class StoreState:
    sig: tuple[int, ...]
    records: dict[str, KeyRecord]
    primary: str | None
    # records by the 16 hex digits of their fingerprint a derived key id carries
    by_fp: dict[str, tuple[KeyRecord, ...]]
    # An open descriptor of the keystore.json that was parsed (module docstring).
    pin_fd: int


def fresh(state: StoreState | None, st: os.stat_result) -> bool:
    """Whether ``state`` is still the file ``st`` describes (device, inode, size, mtime, ctime)."""
    return state is not None and state.sig == file_sig(st)


def load_state(file: Path) -> StoreState:
    """Read and parse ``file`` (no symlinks, bounded, mode and owner checked), keeping it open."""
    raw, st, fd = read_store_file(file, pin=True)
    assert fd is not None
    try:
        records = parse_store(raw, file)
    except BaseException:
        os.close(fd)
        raise
    primary = next((r.kid for r in records.values() if r.status is KeyStatus.PRIMARY), None)
    by_fp: dict[str, tuple[KeyRecord, ...]] = {}
    for r in records.values():
        by_fp[r.fingerprint[:16]] = (*by_fp.get(r.fingerprint[:16], ()), r)
    return StoreState(sig=file_sig(st), records=records, primary=primary, by_fp=by_fp, pin_fd=fd)


def close_pin(state: StoreState) -> None:
    """Release the descriptor ``state`` keeps on the file it parsed."""
    with contextlib.suppress(OSError):
        os.close(state.pin_fd)
