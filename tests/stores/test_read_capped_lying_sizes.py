"""Red team of ``read_capped`` asking for the stated size + 1 (session 5, merge e211ba8): a file
whose ``st_size`` lies (0 with content as in ``/proc``, a pipe, sparse, read from the middle)
never gets more than the cap through, and is never cut short: what comes back is all of it."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from dagster_wandb_secure.core.errors import ResourceLimitError
from dagster_wandb_secure.stores import base
from dagster_wandb_secure.stores.base import read_capped


@pytest.mark.parametrize("size,cap", [(5000, 10_000), (5000, 5000), (5001, 5000)])
def test_a_file_stating_zero_bytes_is_read_whole_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, cap: int
) -> None:
    f = tmp_path / "proc-like"
    f.write_bytes(os.urandom(size))
    monkeypatch.setattr(base.os, "fstat", lambda fd: SimpleNamespace(st_size=0))
    with open(f, "rb") as fh:
        if size <= cap:
            assert read_capped(fh, cap, "m") == f.read_bytes()
        else:
            with pytest.raises(ResourceLimitError):
                read_capped(fh, cap, "m")
            assert fh.tell() <= cap + 1  # never read past the cap


def test_a_real_proc_file_is_read_whole(tmp_path: Path) -> None:
    with open("/proc/self/cmdline", "rb") as fh:
        assert os.fstat(fh.fileno()).st_size == 0
        got = read_capped(fh, 1 << 20, "cmdline")
    with open("/proc/self/cmdline", "rb") as fh:
        assert got == fh.read() and got


@pytest.mark.parametrize("size", [10, 4096, 70_000, 100_001])
def test_a_pipe_is_read_whole_or_refused(size: int) -> None:
    cap = 100_000
    r, w = os.pipe()
    payload = os.urandom(size)

    def write() -> None:
        with os.fdopen(w, "wb") as out:
            for i in range(0, size, 3000):  # many short writes: short reads on the other end
                try:
                    out.write(payload[i : i + 3000])
                    out.flush()
                except BrokenPipeError:
                    return

    t = threading.Thread(target=write)
    t.start()
    with os.fdopen(r, "rb") as fh:
        if size <= cap:
            assert read_capped(fh, cap, "m") == payload
        else:
            with pytest.raises(ResourceLimitError):
                read_capped(fh, cap, "m")
    t.join(30)


def test_a_sparse_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "sparse"
    with open(f, "wb") as fh:
        fh.truncate(1 << 30)  # 1 GiB stated, no blocks
    with open(f, "rb") as fh:
        with pytest.raises(ResourceLimitError):
            read_capped(fh, 1 << 20, "m")
        assert fh.tell() <= (1 << 20) + 1


@pytest.mark.parametrize("cap,ok", [(90, True), (89, False)])
def test_read_from_the_middle_counts_what_is_left(tmp_path: Path, cap: int, ok: bool) -> None:
    f = tmp_path / "m"
    f.write_bytes(bytes(range(100)))
    with open(f, "rb") as fh:
        fh.read(10)
        if ok:
            assert read_capped(fh, cap, "m") == bytes(range(10, 100))
        else:
            with pytest.raises(ResourceLimitError):
                read_capped(fh, cap, "m")


def test_a_file_that_shrank_is_what_it_holds_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"a" * 50)
    monkeypatch.setattr(base.os, "fstat", lambda fd: SimpleNamespace(st_size=100))
    with open(f, "rb") as fh:
        assert read_capped(fh, 1000, "m") == b"a" * 50
