"""``record_version`` (one statement on PostgreSQL) takes its row locks in the order every
other ledger transaction does: the manifest seen (``history_seen``) before the history marks.

A reader's ``check_alias_history`` batch records the manifest it verified, then advances its
alias mark, in one transaction. A writer's ``record_version`` right after the store published
that version inserts the same manifest and raises the same mark. When the writer's statement
locks the mark first and then waits for the reader's uncommitted manifest row, while the
reader waits for the mark, the two deadlock: PostgreSQL aborts one of them (the publish or the
read fails, and a failed ``record_version`` leaves the writer's records out). The fine calls
made before the coarse one (``record_manifest``, then ``advance_mark``) never did."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.ledger_rows import digest, entry

ART = "team/proj/model"
AT = "2024-05-01T12:00:00.000000Z"


def pos(sequence: int) -> Position:
    return Position(sequence, AT, digest(f"m{sequence}"))


def vals(p: Position) -> tuple[int, str, str]:
    return p.sequence, p.signed_at, p.digest


def _waiting_for_a_lock(probe: Any, pid_of_others: set[int], timeout_s: float = 30.0) -> int:
    """The pid of a ledger backend (not in ``pid_of_others``) blocked on a heavyweight lock."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = probe.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND application_name = 'dagster-wandb-secure'"
        ).fetchall()
        waiting = [r[0] for r in rows if r[0] not in pid_of_others]
        if waiting:
            return int(waiting[0])
        time.sleep(0.01)
    raise AssertionError("record_version never waited for the reader's manifest row")


@pytest.mark.parametrize("marks", [(), ("prod",)])
def test_record_version_waits_for_a_readers_manifest_without_holding_a_mark(
    pg_url: str, marks: tuple[str, ...]
) -> None:
    import psycopg

    writer = PostgresLedger(pg_url)
    errors: list[BaseException] = []
    try:
        # an earlier version: the marks exist (an upsert then locks the existing row)
        writer.record_version(
            writer.record_many([entry(1), entry(2)]), artifact_version="v1", history_key=ART,
            manifest_digest=pos(1).digest, position=pos(1), marks=marks,
        )
        rows = writer.record_many([entry(3), entry(4)])
        q = writer._statements()
        with psycopg.connect(pg_url, autocommit=True) as reader, psycopg.connect(
            pg_url, autocommit=True
        ) as probe:
            # the reader's batch so far: it verified v2 and recorded its manifest, uncommitted
            reader.execute("BEGIN")
            reader.execute(
                q["record_manifest"],
                (ART, pos(2).digest, *vals(pos(2)), "v2", "reader", AT),
            )

            def publish() -> None:
                try:
                    writer.record_version(
                        rows, artifact_version="v2", history_key=ART,
                        manifest_digest=pos(2).digest, position=pos(2), marks=marks,
                    )
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            thread = threading.Thread(target=publish)
            thread.start()
            reader_pid = reader.info.backend_pid
            _waiting_for_a_lock(probe, {reader_pid, probe.info.backend_pid})
            # the writer waits for the reader's manifest row: it must hold no mark the reader
            # is about to raise (NOWAIT answers at once whether a lock is held)
            held = []
            for alias in ("latest", *marks):
                try:
                    with probe.transaction():
                        probe.execute(
                            "SELECT 1 FROM dagster_wandb_secure.history_marks "
                            "WHERE artifact = %s AND alias = %s FOR UPDATE NOWAIT",
                            (ART, alias),
                        )
                except psycopg.errors.LockNotAvailable:
                    held.append(alias)
            # the reader's batch goes on: its mark, then COMMIT (the writer then finishes)
            reader.execute(q["advance_mark"], (ART, "latest", *vals(pos(2)), "reader", AT))
            reader.execute("COMMIT")
            thread.join(timeout=60)
            assert not thread.is_alive()
        assert held == [], f"record_version held the marks {held} while it waited"
        assert errors == []
        assert writer.history_marks(ART)["latest"] == pos(2)
        assert {r.id: r.artifact_version for r in writer.rows()}[rows[0]] == "v2"
    finally:
        writer.close()
