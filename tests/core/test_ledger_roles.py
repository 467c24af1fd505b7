"""Least privilege on the PostgreSQL ledger: the GRANTs of docs/deployment.md, per role, on a
real server. Writers record and attach; readers read and advance marks; read-only roles read."""

from __future__ import annotations

import hashlib

import pytest

from dagster_wandb_secure.core.history import Position
from dagster_wandb_secure.core.ledger_api import LedgerError, LedgerPermissionError
from kit.ledger_rows import entry
from kit.pg_roles import roles_database
from kit.postgres import PgServer

ART = "team/proj/model"


def pos(sequence: int) -> Position:
    return Position(
        sequence,
        f"2024-05-01T12:00:0{sequence}.000000Z",
        hashlib.sha256(f"manifest {sequence}".encode()).hexdigest(),
    )


def test_grants_per_role(pg_server: PgServer) -> None:
    db = roles_database(pg_server)
    owner = db.ledger_of("owner")

    writer = db.ledger_of("writer")
    row = writer.record_signature(**entry(1))
    writer.attach_version(row, artifact_version="v2", aliases=["prod"])
    writer.note_seen("model", "latest", 3)
    assert writer.newest_version("model") == 3
    with writer.history_lock(ART):  # advisory locks need no privilege
        assert writer.allocate_sequence(ART, floor=0) == 1
        writer.record_manifest(ART, pos(1).digest, pos(1), version="v0", source="writer")
        writer.advance_mark(ART, "latest", pos(1), source="writer")

    reader = db.ledger_of("reader")
    assert reader.find_digest(entry(1)["digest"])[0].artifact_version == "v2"
    reader.note_seen("model", "latest", 4)
    with pytest.raises(LedgerError, match="GRANT"):
        reader.record_signature(**entry(2))
    with pytest.raises(LedgerError):
        reader.attach_version(row, artifact_version="v9")
    assert reader.history_mark(ART, "latest") == pos(1)
    reader.record_manifest(ART, pos(2).digest, pos(2), version="v1", source="reader")
    reader.advance_mark(ART, "latest", pos(2), source="reader")
    with pytest.raises(LedgerError, match="GRANT"):
        reader.allocate_sequence(ART, floor=0)  # only writers hand out sequences

    readonly = db.ledger_of("readonly")
    assert readonly.newest_version("model") == 4 and readonly.count() == 1
    assert readonly.history_mark(ART, "latest") == pos(2)
    seen = readonly.newest_seen(ART)
    assert seen is not None and seen.position == pos(2)
    for write in (
        lambda: readonly.note_seen("model", "latest", 5),
        lambda: readonly.record_signature(**entry(3)),
        lambda: readonly.advance_mark(ART, "latest", pos(3), source="reader"),
        lambda: readonly.record_manifest(ART, pos(3).digest, pos(3), version="v2", source="reader"),
        lambda: readonly.allocate_sequence(ART, floor=0),
    ):
        with pytest.raises(LedgerPermissionError, match="ledger_mode: read-only"):
            write()
    assert owner.count() == 1 and owner.newest_version("model") == 4
    assert owner.history_mark(ART, "latest") == pos(2) and owner.allocate_sequence(ART, floor=0) == 2


def test_a_writer_role_may_make_a_publishs_coarse_calls(pg_server: PgServer) -> None:
    """allocate_next, record_many and record_version (one statement each) need no GRANT
    beyond the documented writer's; a reader role may make none of them."""
    db = roles_database(pg_server)
    writer = db.ledger_of("writer")
    with writer.history_lock(ART):
        sequence, seen = writer.allocate_next(ART, floor=0)
        assert (sequence, seen) == (1, None)
        rows = writer.record_many([entry(1), entry(2)])
        writer.record_version(
            rows, artifact_version="v1", aliases=("latest", "prod"), history_key=ART,
            manifest_digest=pos(1).digest, position=pos(1), marks=("prod",),
        )
    assert writer.history_marks(ART) == {"latest": pos(1), "prod": pos(1)}
    assert writer.aliases("model") == {"latest": 1, "prod": 1}

    reader = db.ledger_of("reader")
    with pytest.raises(LedgerError, match="GRANT"):
        reader.allocate_next(ART, floor=0)
    with pytest.raises(LedgerError, match="GRANT"):
        reader.record_many([entry(3), entry(4)])
    with pytest.raises(LedgerError):
        reader.record_version(rows, artifact_version="v2")
    assert writer.count() == 2 and writer.history_marks(ART)["latest"] == pos(1)
    for ledger in (writer, reader):
        ledger.close()
