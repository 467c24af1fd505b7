"""The local store's per-version work (issue 16, small assets): one durable
(``synchronous=FULL``, WAL fsynced) commit makes a version visible; the publish's intent row
before the rename and a read's lineage row are committed without an fsync of their own; a
version file is opened by a descriptor walk, without resolving paths again."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from dagster_wandb_secure.stores.local import LocalArtifactStore


class _Trace:
    """Counts the COMMITs of one connection by the synchronous level they ran at."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.level = conn.execute("PRAGMA synchronous").fetchone()[0]  # 2 = FULL
        self.durable = 0
        self.unsynced = 0
        conn.set_trace_callback(self)

    def __call__(self, sql: str) -> None:
        text = " ".join(sql.split()).upper()
        if text.startswith("PRAGMA SYNCHRONOUS ="):
            self.level = 2 if text.endswith("FULL") else 1
        elif text == "COMMIT":
            if self.level == 2:
                self.durable += 1
            else:
                self.unsynced += 1


def test_one_durable_index_commit_per_publish_and_none_per_read(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    src = tmp_path / "payload.bin"
    src.write_bytes(b"x" * 100)
    store.publish(entity="e", project="p", name="a", type="t", files={"f": src})  # warm
    with store._index.connect() as conn:
        trace = _Trace(conn)
    for i in range(3):
        av = store.publish(entity="e", project="p", name="a", type="t", files={"f": src})
        assert (trace.durable, trace.unsynced) == (i + 1, i + 1)  # the version; its intent
    store.record_use(av, "run-1")
    assert (trace.durable, trace.unsynced) == (3, 4)  # lineage: no fsync
    with store._index.connect() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        assert conn.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
    assert [v.version for v in store.list_versions()] == [0, 1, 2, 3]


def test_opening_a_version_file_resolves_no_path_and_still_refuses_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster_wandb_secure.core.errors import UnsafePathError
    from dagster_wandb_secure.stores.local_files import open_in_version

    root = tmp_path / "v0"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_bytes(b"data")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"evil")
    (root / "inner").symlink_to(root / "sub")  # a symlink that stays inside: refused too
    (root / "out").symlink_to(outside)
    resolved: list[object] = []
    real = Path.resolve

    def resolve(self: Path, strict: bool = False) -> Path:
        resolved.append(self)
        return real(self, strict)

    monkeypatch.setattr(Path, "resolve", resolve)
    fd, path = open_in_version(root, "sub/f", "a:v0")
    try:
        assert os.read(fd, 10) == b"data" and path == root / "sub" / "f"
    finally:
        os.close(fd)
    assert resolved == []  # the descriptor walk (O_NOFOLLOW per component) is the check
    for rel in ("inner/f", "out/f"):
        with pytest.raises(UnsafePathError, match="symlink"):
            open_in_version(root, rel, "a:v0")
