"""Ledger writes a caller was told succeeded are never silently lost by a sibling process closing
its connection, by dropping a ``Ledger`` object, or at a normal process exit.

The first test is the root cause of the flaky storm (``test_concurrency.py``, attack 16: "the
ledger does not know own3:v0"): ``durable()`` opened and closed a descriptor of the database file
to fsync it, which drops every POSIX lock this process holds on it (the SHARED lock of its WAL
connection included). Another process closing its connection then found no other holder, took
itself for the last connection, checkpointed and deleted the WAL, and the writer's next commit
(``attach_version`` after the publish) went into the unlinked WAL: gone, with no error.
Each step here is sequenced through pipes: no timing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster_wandb_secure.core.ledger import Ledger

ROW = """
row = dict(key_id="0123456789abcdef", alg="ed25519", digest="ab" * 32, length=1,
           context={"artifact": "own3", "type": "artifact", "partition": None, "asset_key": "a"},
           serializer="pickle", signed_at="2024-05-01T12:00:00.000000Z")
"""

WRITER = (
    "import sys\nfrom dagster_wandb_secure.core.ledger import Ledger\n"
    + ROW
    + """
ledger = Ledger(sys.argv[1])
row_id = ledger.record_many([row])[0]
ledger.durable()  # the barrier before a publish
print("durable", flush=True)
sys.stdin.readline()
ledger.attach_version(row_id, artifact_version="v0")  # after the publish
print("attached", flush=True)
sys.stdin.readline()
ledger.close()
"""
)

OPEN_AND_CLOSE = """
import sys
from dagster_wandb_secure.core.ledger import Ledger
ledger = Ledger(sys.argv[1])
ledger.count()
ledger.close()
"""


def _step(proc: subprocess.Popen[str], expect: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == expect


def test_durable_keeps_the_wal_of_a_live_writer(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "durable"
        # another process (an auditor, a writer's resource teardown) opens and closes the ledger
        subprocess.run([sys.executable, "-c", OPEN_AND_CLOSE, str(path)], check=True)
        # the writer's connection is open, so that close must not have removed its WAL
        assert path.with_name(path.name + "-wal").exists()
        reader = Ledger(path)  # a connection that stays open across the writer's last commit
        reader.count()
        _step(writer, "attached")
        _step(writer, "")
        assert writer.wait() == 0
        assert [r.artifact_version for r in reader.rows(artifact="own3")] == ["v0"]
        reader.close()
    finally:
        writer.kill()
        writer.wait()
    assert [r.artifact_version for r in Ledger(path).rows(artifact="own3")] == ["v0"]
