"""Peak RSS of a signed write+read against a plain pickle write+read, each in its own process.

Each child imports what it needs, creates its key store, notes its resident set size (RSS), then
builds one int64 array, writes it, reads it back (keeping both, as a pipeline would) and reports
its peak RSS (``ru_maxrss``). The metric is the growth from that starting point, signed minus
plain, so it measures the data path; the import footprint of each side is reported separately.

Child mode: ``python -m benchmarks.memory --child plain|signed --bytes N --workdir DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import MIB, Config, MetricResult, failed, human_bytes, median

NAME = "peak_rss_overhead_mib"


def current_rss_kib() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def child(mode: str, nbytes: int, workdir: Path) -> dict[str, int]:
    import pickle

    import numpy as np

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{mode}.bin"
    if mode == "signed":
        from dagster_wandb_secure.core.envelope import seal_to, unseal_from
        from dagster_wandb_secure.core.keys import KeyStore

        ks = KeyStore.open(workdir / f"keys-{os.getpid()}")
        ks.generate("ed25519")
        ctx = {"artifact": "bench-rss"}
    start = current_rss_kib()
    arr = np.arange(nbytes // 8, dtype=np.int64)
    if mode == "signed":
        seal_to(path, arr, key_store=ks, context=ctx, durable=False)
        back = unseal_from(path, key_store=ks, expected_context=ctx)
    else:
        with open(path, "wb") as fh:
            pickle.dump(arr, fh, protocol=5)
        with open(path, "rb") as fh:
            back = pickle.load(fh)
    assert back.shape == arr.shape
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    os.unlink(path)
    return {"start_kib": start, "peak_kib": peak}


def _spawn(mode: str, nbytes: int, workdir: Path) -> dict[str, int]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.memory",
            "--child",
            mode,
            "--bytes",
            str(nbytes),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{mode} child failed: {' | '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(cfg: Config) -> MetricResult:
    runs = 1 if cfg.quick else 3
    work = cfg.workdir / "rss"
    try:
        plain: list[dict[str, int]] = []
        signed: list[dict[str, int]] = []
        for i in range(runs):
            order = [("plain", plain), ("signed", signed)]
            for mode, sink in order if i % 2 == 0 else reversed(order):
                sink.append(_spawn(mode, cfg.rss_bytes, work))
        plain_growth = median([(r["peak_kib"] - r["start_kib"]) / 1024 for r in plain])
        signed_growth = median([(r["peak_kib"] - r["start_kib"]) / 1024 for r in signed])
        return MetricResult(
            name=NAME,
            value=signed_growth - plain_growth,
            baseline=plain_growth,
            candidate=signed_growth,
            unit="MiB",
            baseline_label=f"pickle dump+load {human_bytes(cfg.rss_bytes)}: peak RSS growth",
            candidate_label=f"seal_to+unseal_from {human_bytes(cfg.rss_bytes)}: peak RSS growth",
            runs=runs,
            note="each run in its own subprocess; growth from RSS after imports and key setup",
            extra={
                "plain_import_rss_mib": median([r["start_kib"] / 1024 for r in plain]),
                "signed_import_rss_mib": median([r["start_kib"] / 1024 for r in signed]),
                "payload_mib": cfg.rss_bytes / MIB,
            },
        )
    except Exception as exc:
        return failed(NAME, exc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.memory")
    parser.add_argument("--child", choices=("plain", "signed"), required=True)
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args(argv)
    out: Any = child(args.child, args.bytes, args.workdir)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
