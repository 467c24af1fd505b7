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


# The flusher thread is kept from looking at the ledger (it needs ``_FLUSH_CV``, held here), so
# the only thing that can commit the group is the drop or the exit itself.
HOLD_FLUSHER = """
import gc, sys
from dagster_wandb_secure.core import ledger_groups
from dagster_wandb_secure.core.ledger import Ledger
ledger_groups._FLUSH_CV.acquire()
"""

DROP = (
    HOLD_FLUSHER
    + ROW
    + """
ledger = Ledger(sys.argv[1])
ledger.record_signature(**row)  # joins an open group: the caller holds its row id
del ledger
gc.collect()
"""
)

BROKEN_AT_EXIT = (
    HOLD_FLUSHER
    + ROW
    + """
ledger = Ledger(sys.argv[1])
ledger.record_signature(**row)
ledger._INSERT_WITH_ID = "INSERT INTO no_such_table VALUES (?)"  # the exit commit fails
"""
)


def test_a_dropped_ledger_commits_its_open_group(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    subprocess.run([sys.executable, "-c", DROP, str(path)], check=True)
    assert Ledger(path).count() == 1


def test_a_failed_commit_at_exit_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    done = subprocess.run(
        [sys.executable, "-c", BROKEN_AT_EXIT, str(path)], capture_output=True, text=True
    )
    assert "KeyStoreError" in done.stderr and "lost uncommitted signature rows" in done.stderr
    assert Ledger(path).count() == 0


BROKEN_BY_THE_FLUSHER = (
    BROKEN_AT_EXIT
    + """
import time
ledger._flush_if_due(time.monotonic() + 60)  # the flusher's step: its commit fails
del ledger
"""
)


def test_a_group_the_flusher_failed_to_commit_is_reported_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    done = subprocess.run(
        [sys.executable, "-c", BROKEN_BY_THE_FLUSHER, str(path)], capture_output=True, text=True
    )
    assert "lost uncommitted signature rows" in done.stderr
    assert done.stderr.count("lost uncommitted") == 1  # once, though two exit hooks run
