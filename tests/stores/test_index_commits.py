"""The local store's index commits per publish (issue 16, small assets): one durable
(``synchronous=FULL``, WAL fsynced) commit makes a version visible; the publish's intent row
before the rename and a read's lineage row are committed without an fsync of their own."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
