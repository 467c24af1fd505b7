"""The PostgreSQL ledger's share of one publish, with 4 writers publishing at once.

A real cluster (``pgserver``, unix socket, default durability: every commit is flushed) in a
scratch folder. Each of 4 forked writer processes (one artifact each) performs, per publish,
the ledger calls ``publish_output`` makes (``publish_once``), the ``durable()`` barrier before
the store's publish included (a no-op on PostgreSQL, whose row commit flushes; one WAL fsync
on SQLite, which the loop left out before session 5: the baseline now has equal durability). The value is the median over
writers of (writer's wall time / its publishes), in milliseconds; the baseline is the same
loop against the key store's SQLite ledger. The note gives the latency of one durable commit
on the same server, the floor under each of the publish's commits, and the CPU time per publish
on both sides (also in ``extra``): the writer's (``time.process_time``, median over writers) and
the server's (every process of the scratch cluster, from ``/proc/<pid>/schedstat``, over all
publishes). On a machine shared with other work the CPU figures move much less than the wall
time; 4 writers and their 4 server processes on N cores cannot publish faster than
4 x (client + server CPU) / N per publish.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
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


def _writer(
    spec: str | None, folder: str, worker: int, count: int, start: Any, done: Any, out: Any
) -> None:
    from dagster_wandb_secure.core.ledger_api import open_ledger, ping

    ledger = open_ledger(spec, Path(folder))
    ping(ledger)
    publish_once(ledger, worker, -1)  # warm: connections, prepared statements
    start.wait()
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(count):
        publish_once(ledger, worker, i)
    t1, c1 = time.perf_counter(), time.process_time()
    out.put(((t1 - t0) / count, (c1 - c0) / count))
    done.wait(60)  # the server's processes are counted before this writer's go away
    ledger.close()


def server_cpu_ns(pgdata: Path) -> int | None:
    """CPU time so far of every process of the cluster in ``pgdata`` (the postmaster and its
    children), in nanoseconds; None where ``/proc`` cannot tell (not Linux)."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except (OSError, ValueError, IndexError):
        return None
    total, seen = 0, False
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if postmaster not in (int(pid), parent):
                continue
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
            seen = True
        except (OSError, ValueError, IndexError):
            continue  # a process that just went away
    return total if seen else None


def _per_publish(
    spec: str | None, folder: Path, count: int, pgdata: Path | None = None
) -> tuple[float, float, float | None]:
    """(wall, client CPU, server CPU) per publish in seconds: the medians over writers of the
    first two, the cluster's CPU over every publish (None without ``pgdata``)."""
    ctx = multiprocessing.get_context("fork")
    start, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(spec, str(folder), w, count, start, done, out))
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # every writer connected and waiting
    before = server_cpu_ns(pgdata) if pgdata is not None else None
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    after = server_cpu_ns(pgdata) if pgdata is not None else None
    done.set()
    for p in procs:
        p.join(60)
    server = None
    if before is not None and after is not None:
        server = (after - before) / 1e9 / (WRITERS * count)
    return median([r[0] for r in results]), median([r[1] for r in results]), server


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
        sqlite_s, sqlite_cpu, _ = _per_publish(None, scratch / "sqlite", count)
        postgres_s, client_cpu, server_cpu = _per_publish(
            server.get_uri("bench"), scratch, count, Path(server.pgdata)
        )
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
            f"{floor:.2f} ms here (server defaults: fsync, synchronous_commit on); CPU per "
            f"publish: client {client_cpu * 1e3:.2f} ms, server "
            + ("n/a" if server_cpu is None else f"{server_cpu * 1e3:.2f} ms")
            + f" (SQLite ledger: {sqlite_cpu * 1e3:.2f} ms)",
            extra={
                "client_cpu_ms": client_cpu * 1e3,
                "server_cpu_ms": None if server_cpu is None else server_cpu * 1e3,
                "sqlite_cpu_ms": sqlite_cpu * 1e3,
                "commit_floor_ms": floor,
            },
        )
    ]
