"""``read_capped`` asks the file for the size it states plus one byte, never for the whole cap
(session 5: the writer's head scan read every version's 1 KB manifest with a 64 MiB read, one
64 MiB buffer each), and still refuses anything past the cap, even a file that grows."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from dagster_wandb_secure.core.errors import ResourceLimitError
from dagster_wandb_secure.stores.base import read_capped

CAP = 64 << 20


class Recording(io.BufferedReader):
    def __init__(self, raw: Any) -> None:
        super().__init__(raw)
        self.asked: list[int] = []

    def read(self, n: int | None = -1) -> bytes:
        self.asked.append(-1 if n is None else n)
        return super().read(n)


def _open(path: Path) -> Recording:
    return Recording(io.FileIO(path, "r"))


def test_a_small_file_under_a_large_cap_is_read_with_a_small_request(tmp_path: Path) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"x" * 1330)
    with _open(f) as fh:
        assert read_capped(fh, CAP, "manifest") == b"x" * 1330
    assert fh.asked == [1331]  # one request: the stated size and one byte


@pytest.mark.parametrize("size,ok", [(100, True), (101, False), (5000, False)])
def test_the_cap_still_holds(tmp_path: Path, size: int, ok: bool) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"y" * size)
    with _open(f) as fh:
        if ok:
            assert len(read_capped(fh, 100, "manifest")) == size
        else:
            with pytest.raises(ResourceLimitError, match="larger than 100 bytes"):
                read_capped(fh, 100, "manifest")
    assert max(fh.asked) <= 101 and sum(fh.asked) <= 101


def test_a_file_longer_than_it_states_is_read_on_up_to_the_cap(tmp_path: Path) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"z" * 300)

    class Understating(Recording):
        def fileno(self) -> int:
            raise io.UnsupportedOperation("no descriptor")  # no stated size: the cap is asked

    with Understating(io.FileIO(f, "r")) as fh:
        assert read_capped(fh, 1000, "manifest") == b"z" * 300
    assert fh.asked == [1001]



def test_a_file_that_grew_past_its_stated_size_is_read_on_never_past_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    from types import SimpleNamespace

    # the stated size is a hint: a file that states 10 bytes but holds more is still read whole
    monkeypatch.setattr(
        "dagster_wandb_secure.stores.base.os.fstat", lambda fd: SimpleNamespace(st_size=10)
    )
    grown = tmp_path / "g"
    grown.write_bytes(b"g" * 100)
    with _open(grown) as fh:
        assert read_capped(fh, 1000, "manifest") == b"g" * 100
    assert fh.asked[0] == 11 and sum(fh.asked) <= 1001
    grown.write_bytes(b"g" * 2000)
    with _open(grown) as fh:
        with pytest.raises(ResourceLimitError):
            read_capped(fh, 1000, "manifest")
    assert sum(fh.asked) <= 1001
    assert os.path.getsize(grown) == 2000
