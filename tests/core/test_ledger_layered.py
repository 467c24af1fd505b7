"""The read-only reader's ledger (core/ledger_layered.py): reads take the stronger answer of the
shared and the local ledger, reader writes land in the local one only, writer operations are
refused with a typed error; and how ``open_ledger`` selects it (``mode`` / ``ledger_mode=``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.ledger import Ledger
from dagster_wandb_secure.core.ledger_api import (
    LedgerError,
    LedgerReadOnlyError,
    export_history,
    ledger_status,
    open_ledger,
    split_mode,
)
from dagster_wandb_secure.core.ledger_layered import LayeredLedger
from dagster_wandb_secure.core.ledger_postgres import PostgresLedger
from kit.ledger_rows import entry
from kit.pg_roles import roles_database
from kit.postgres import PgServer

ART = "team/proj/model"


def pos(sequence: int, tag: str = "") -> Position:
    return Position(
        sequence,
        f"2024-05-01T12:00:0{sequence}.000000Z",
        hashlib.sha256(f"manifest {sequence}{tag}".encode()).hexdigest(),
    )




def snapshot(ledger: Ledger) -> tuple[object, ...]:
    return (ledger.count(), export_history(ledger), ledger.aliases("model"))


def test_reads_take_the_stronger_answer_and_writes_stay_local(tmp_path: Path) -> None:
    shared, local = Ledger(tmp_path / "shared.sqlite3"), Ledger(tmp_path / "local.sqlite3")
    row = shared.record_signature(**entry(1))  # type: ignore[arg-type]
    shared.attach_version(row, artifact_version="v1")
    shared.record_manifest(ART, pos(2).digest, pos(2), version="v1", source="writer")
    shared.advance_mark(ART, "latest", pos(2), source="writer")
    shared.advance_mark(ART, "prod", pos(1), source="writer")
    local.record_manifest(ART, pos(1).digest, pos(1), version="v7", source="reader")
    local.record_manifest(ART, pos(2).digest, pos(2), version="v9", source="reader")
    before = snapshot(shared)
    layered = LayeredLedger(shared, local)

    # the shared mark is higher for latest; after a local advance, the local one for prod
    assert layered.history_mark(ART, "latest") == pos(2)
    layered.advance_mark(ART, "prod", pos(3), source="reader")
    layered.advance_mark(ART, "latest", pos(1), source="reader")  # lower: shared still wins
    assert layered.history_mark(ART, "prod") == pos(3)
    assert layered.history_marks(ART) == {"latest": pos(2), "prod": pos(3)}
    # the first sighting is the shared ledger's; a manifest only the reader saw is found too
    seen = layered.seen_manifest(ART, pos(2).digest)
    assert seen is not None and seen.version == "v1"
    only_local = layered.seen_manifest(ART, pos(1).digest)
    assert only_local is not None and only_local.version == "v7"
    with layered.batch():
        layered.record_manifest(ART, pos(3).digest, pos(3), version="v3", source="reader")
        layered.note_seen("model", "latest", 5)
    newest = layered.newest_seen(ART)
    assert newest is not None and newest.position == pos(3)
    assert layered.newest_version("model") == 5 and layered.aliases("model")["latest"] == 5
    assert [r.id for r in layered.find_digest(entry(1)["digest"])] == [row]  # type: ignore[arg-type]
    assert layered.count() == 1 and len(layered.rows(artifact="model")) == 1
    assert {m[:3] for m in layered.marks()} == {("model", "latest", 5)}
    status = ledger_status(layered)
    assert status["mode"] == "read-only" and status["local_marks"] == 2

    # writer operations are refused before anything is written, naming the artifact
    refused = [
        lambda: layered.record_signature(**entry(2)),  # type: ignore[arg-type]
        lambda: layered.record_many([entry(3)]),
        lambda: layered.attach_version(row, artifact_version="v9"),
        lambda: layered.allocate_sequence(ART, floor=0),
    ]
    for write in refused:
        with pytest.raises(LedgerReadOnlyError, match="read-only"):
            write()
    with pytest.raises(LedgerReadOnlyError) as info, layered.history_lock(ART):
        pass
    assert info.value.artifact == ART
    assert snapshot(shared) == before  # nothing reached the shared ledger
    assert local.history_mark(ART, "prod") == pos(3) and local.count() == 0


def test_open_ledger_selects_the_mode(tmp_path: Path) -> None:
    url = "postgresql://r:pw-secret@/db?host=/tmp/nowhere&ledger_mode=read-only&schema=s"
    text, mode = split_mode(url)
    assert mode == "read-only" and text is not None and "ledger_mode" not in text
    layered = open_ledger(url, tmp_path)
    assert isinstance(layered, LayeredLedger) and isinstance(layered.shared, PostgresLedger)
    assert layered.shared.schema == "s" and isinstance(layered.local, Ledger)
    assert layered.local.path == tmp_path / "ledger.sqlite3"
    plain = "postgresql://r:pw-secret@/db?host=/tmp/nowhere"
    assert isinstance(open_ledger(plain, tmp_path), PostgresLedger)
    assert isinstance(open_ledger(plain, tmp_path, mode="read-only"), LayeredLedger)
    for bad, kwargs in (
        (plain + "&ledger_mode=sideways", {}),
        (plain, {"mode": "write-only"}),
        (None, {"mode": "read-only"}),  # read-only needs a shared ledger
        (str(tmp_path / "other.sqlite3"), {"mode": "read-only"}),
    ):
        with pytest.raises(LedgerError) as err:
            open_ledger(bad, tmp_path, **kwargs)  # type: ignore[arg-type]
        assert "pw-secret" not in str(err.value)


def test_a_select_only_role_serves_a_layered_reader(pg_server: PgServer, tmp_path: Path) -> None:
    """The documented read-only role: reads work, its writes land locally, the database is
    unchanged (rows counted before and after)."""
    db = roles_database(pg_server)
    writer = db.ledger_of("writer")
    with writer.history_lock(ART):
        assert writer.allocate_sequence(ART, floor=0) == 1
        writer.record_manifest(ART, pos(1).digest, pos(1), version="v0", source="writer")
        writer.advance_mark(ART, "latest", pos(1), source="writer")
    admin = PostgresLedger(db.url)
    before = (admin.count(), admin.history_rows(), admin.marks())
    layered = open_ledger(db.url_of("readonly"), tmp_path, mode="read-only")
    assert isinstance(layered, LayeredLedger)
    layered.ping()
    assert layered.history_mark(ART, "latest") == pos(1)
    with layered.batch():
        layered.record_manifest(ART, pos(2).digest, pos(2), version="v1", source="reader")
        layered.advance_mark(ART, "latest", pos(2), source="reader")
    assert layered.history_mark(ART, "latest") == pos(2)
    with pytest.raises(LedgerReadOnlyError):
        layered.allocate_sequence(ART, floor=0)
    assert (admin.count(), admin.history_rows(), admin.marks()) == before
    for ledger in (layered, writer, admin):
        ledger.close()
