"""A large numpy asset through the IO manager touches each payload byte once per direction
(issue 16, "IO manager, large, on a Firecracker VM" in benchmarks/RESULTS.md).

On a VM with free page reporting, every page of fresh memory costs a host fault, so what counts
is how much fresh memory a materialize touches: one private buffer for the read (the array is
rebuilt over it, not copied), one write of the envelope, one read of it, and no huge-page
mapping (huge pages come from exactly the 2 MiB blocks such a VM has handed back to the host).
Counted, never timed: /proc/self/io byte counters, minor page faults and the mapping's flags."""

from __future__ import annotations

import mmap
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dagster import AssetIn, asset, materialize
from dagster_wandb_secure.core import _envelope_read
from dagster_wandb_secure.core.envelope import seal_to, unseal_from
from dagster_wandb_secure.core.keys import KeyStore

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/io").exists(),
    reason="counts come from /proc",
)
MIB = 1 << 20
SIZE = 32 * MIB


def _io() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = int(value)
    return out


def _smaps_field(address: int, name: str) -> list[str]:
    """The values of field ``name`` (e.g. "VmFlags:", "Rss:") of the mapping of this process
    that holds ``address``."""
    current = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            current = lo <= address < hi
        elif current and head == name:
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


def _vm_flags(address: int) -> set[str]:
    return set(_smaps_field(address, "VmFlags:"))


@linux_only
def test_the_private_read_buffer_is_not_a_huge_page_mapping() -> None:
    view, _populate = _envelope_read._private_buffer(_envelope_read.LARGE_PAYLOAD)
    assert isinstance(view.obj, mmap.mmap)  # an anonymous mapping: no user-space zero-fill
    address = np.frombuffer(view, np.uint8).ctypes.data
    assert "hg" not in _vm_flags(address)  # not advised MADV_HUGEPAGE


def _rss_bytes(address: int) -> int:
    """The resident bytes of the mapping of this process that holds ``address``."""
    return int(_smaps_field(address, "Rss:")[0]) * 1024


class _ResidencyProbe:
    """A payload source that records, at each ``readinto``, how much of the buffer it is asked
    to fill is already resident (and how much of the mapping is)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.seen = data, 0, []

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf)
        address = np.frombuffer(view, np.uint8).ctypes.data
        self.seen.append((self.pos, view.nbytes, _rss_bytes(address)))
        n = min(view.nbytes, len(self.data) - self.pos)
        view[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@pytest.mark.skipif(
    _envelope_read.MADV_POPULATE_WRITE is None, reason="no MADV_POPULATE_WRITE here"
)
@linux_only
def test_the_private_buffer_is_populated_one_chunk_ahead_of_each_read() -> None:
    """Each chunk's pages are made present right before it is read, not all up front
    (MAP_POPULATE made the hash wait for the whole mapping) and not one fault per page inside
    the read; the digest and bytes are unchanged."""
    chunk = _envelope_read.READ_CHUNK
    data = bytes(range(256)) * (3 * chunk // 256)
    probe = _ResidencyProbe(data)
    view, digest = _envelope_read._read_payload(probe, "sha256", len(data), "a", "k")
    import hashlib

    assert digest == hashlib.sha256(data).hexdigest() and bytes(view) == data
    assert [pos for pos, _, _ in probe.seen] == [0, chunk, 2 * chunk]
    for pos, asked, resident in probe.seen:
        # the chunk being read is resident (maybe a page of slack: the mapping's Rss counts
        # whole pages), the chunks after it are not yet
        assert pos + asked <= resident < pos + asked + chunk, (pos, asked, resident)


class _CountingFile:
    def __init__(self, fh: Any) -> None:
        self.fh, self.bytes = fh, 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.bytes += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        n = self.fh.readinto(buf)
        self.bytes += n or 0
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def test_a_large_array_is_read_once_and_rebuilt_over_the_private_buffer(
    tmp_path: Path, key_store: KeyStore
) -> None:
    arr = np.arange(SIZE // 8, dtype=np.int64)
    path = tmp_path / "output.pickle"
    seal_to(path, arr, key_store=key_store, record=False)
    with path.open("rb") as fh:
        counting = _CountingFile(fh)
        back = unseal_from(counting, key_store=key_store)
    assert counting.bytes == path.stat().st_size  # every byte read once, none twice
    assert np.array_equal(back, arr)
    base = back.base
    while isinstance(base, np.ndarray):
        base = base.base
    # not a copy: the array's memory is the verified private mapping itself
    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


@linux_only
def test_a_large_asset_and_its_consumer_touch_one_copy_of_the_payload(
    key_store: Any, make_io_manager: Any
) -> None:
    holder = {"array": np.arange(SIZE // 8, dtype=np.int64)}

    @asset(name="big", io_manager_key="m")
    def big() -> Any:
        return holder["array"]

    @asset(name="use_big", ins={"big": AssetIn(input_manager_key="m")})
    def use_big(big: Any) -> int:
        return int(big.nbytes)

    manager = make_io_manager()
    assert materialize([big, use_big], resources={"m": manager}).success  # warm every path
    io0, faults0 = _io(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    assert materialize([big, use_big], resources={"m": manager}).success
    io1, faults1 = _io(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    written, read = io1["wchar"] - io0["wchar"], io1["rchar"] - io0["rchar"]
    touched = (faults1 - faults0) * resource.getpagesize()
    # one envelope written (no staging copy, no re-write), one read (no re-hash, no file copy)
    assert SIZE <= written < SIZE * 1.25, written / SIZE
    assert SIZE <= read < SIZE * 1.25, read / SIZE
    # fresh memory: the private read buffer and little else (Dagster's own run bookkeeping);
    # FilesystemIOManager touches two copies (the pickled bytes, then the loaded bytes). An
    # upper bound only: huge pages (THP "always") would count one fault per 2 MiB.
    assert touched < SIZE * 1.5, touched / SIZE
