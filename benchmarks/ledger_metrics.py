"""The PostgreSQL ledger's share of one publish, with 4 writers publishing at once.

A real cluster (``pgserver``, unix socket, default durability: every commit is flushed) in a
scratch folder. Each of 4 forked writer processes (one artifact each) performs, per publish,
the ledger calls ``publish_output`` makes (``publish_once``), the ``durable()`` barrier before
the store's publish included (a no-op on PostgreSQL, whose row commit flushes; one WAL fsync
on SQLite, which the loop left out before session 5: the baseline now has equal durability). The value is the median over
writers of (writer's wall time / its publishes), in milliseconds; the baseline is the same
loop against the key store's SQLite ledger. The note gives the latency of one durable commit
on the same server, the floor under each of the publish's commits.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from dagster_wandb_secure.core.history import Position

from .common import Config, MetricResult, median

NAME = "ledger_publish_ms_postgres"
WRITERS = 4
COMMITS = 3  # commits per publish (publish_once); only the signature rows' flushes the WAL


def _digest(worker: int, i: int, role: str) -> str:
    return hashlib.sha256(f"{worker}-{i}-{role}".encode()).hexdigest()


def _entry(worker: int, i: int, role: str) -> dict[str, Any]:
    return {
        "key_id": "0123456789abcdef",
        "alg": "ed25519",
        "digest": _digest(worker, i, role),
        "length": 1024,
        "context": {"artifact": f"asset-{worker}", "type": "dataset", "project": "team/proj",
                    "role": role},
        "serializer": "pickle",
        "signed_at": "2024-05-01T12:00:00.000000Z",
    }


def publish_once(ledger: Any, worker: int, i: int) -> None:
    """The ledger calls of one ``publish_output`` (artifacts/publishing.py), in its order: three
    commits (the allocation; both signature rows, durable before the store publishes; the
    version's records after it), each one call (one statement on PostgreSQL)."""
    key = f"team/proj/asset-{worker}"
    with ledger.history_lock(key):  # history.allocate
        sequence, _seen = ledger.allocate_next(key, floor=0)
        # add_signed_manifest: the payload's row and the manifest's
        rows = ledger.record_many([_entry(worker, i, role) for role in ("payload", "manifest")])
        ledger.durable()
        # ... store.publish(...) happens here ...
        position = Position(sequence, "2024-05-01T12:00:00.000000Z", _digest(worker, i, "m"))
        ledger.record_version(  # publish_version: the rows' version, manifest, history marks
            rows, artifact_version=f"v{i + 1}", aliases=("latest", "prod"), history_key=key,
            manifest_digest=position.digest, position=position, marks=("prod",),
        )


def _writer(spec: str | None, folder: str, worker: int, count: int, start: Any, out: Any) -> None:
    from dagster_wandb_secure.core.ledger_api import open_ledger, ping

    ledger = open_ledger(spec, Path(folder))
    ping(ledger)
    publish_once(ledger, worker, -1)  # warm: connections, prepared statements
    start.wait()
    t0 = time.perf_counter()
    for i in range(count):
        publish_once(ledger, worker, i)
    out.put((time.perf_counter() - t0) / count)
    ledger.close()


def _per_publish(spec: str | None, folder: Path, count: int) -> float:
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(spec, str(folder), w, count, start, out))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # every writer connected and waiting
    start.set()
    times = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    return median(times)


def commit_floor_ms(uri: str, count: int = 200) -> float:
    """The median latency of one durable commit (a one-row INSERT in autocommit) on this
    server: the floor under every commit a publish makes."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS commit_floor (i int)")
        times = []
        for i in range(count):
            t0 = time.perf_counter()
            conn.execute("INSERT INTO commit_floor VALUES (%s)", (i,))
            times.append(time.perf_counter() - t0)
    return median(times) * 1e3


def run(cfg: Config) -> list[MetricResult]:
    import pgserver

    count = 25 if cfg.quick else 250
    scratch = Path(tempfile.mkdtemp(prefix="dws-bench-pg-"))
    scratch.chmod(0o755)  # as root, pgserver runs PostgreSQL as another user
    server = pgserver.get_server(scratch / "data", cleanup_mode="stop")
    try:
        server.psql("CREATE DATABASE bench;")
        (scratch / "sqlite").mkdir()
        sqlite_s = _per_publish(None, scratch / "sqlite", count)
        postgres_s = _per_publish(server.get_uri("bench"), scratch, count)
        floor = commit_floor_ms(server.get_uri("bench"))
    finally:
        server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    return [
        MetricResult(
            name=NAME,
            value=postgres_s * 1e3,
            baseline=sqlite_s,
            candidate=postgres_s,
            baseline_label=f"SQLite ledger, {WRITERS} writers x {count} publishes",
            candidate_label=f"PostgreSQL ledger (unix socket), {WRITERS} writers x {count} "
            f"publishes: lock, allocation, 2 rows, {COMMITS} commits each (1 WAL flush)",
            runs=1,
            note=f"per publish, median over writers; one durable commit alone costs "
            f"{floor:.2f} ms here (server defaults: fsync, synchronous_commit on)",
        )
    ]
