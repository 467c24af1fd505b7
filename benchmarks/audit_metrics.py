"""Fast audit of a local store with up to 10,000 versions, and how audit time scales.

The store is built through the library's own APIs, the way the IO manager lays a version out:
``seal_to`` writes ``output.pickle`` (a ~1 KB dict), ``write_manifest`` signs the file list,
``LocalArtifactStore.publish`` publishes both atomically, and the ledger rows are attached to
the version. Versions are spread over up to 1,000 artifact names. The store grows in steps
(``cfg.store_sizes``); at each step ``audit_store(deep=False)`` (what ``dagster-wandb-secure
audit --fast`` runs) is timed in-process, and every version must come out ``signature-ok``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .common import Config, MetricResult, Timer, make_key_store, median
from .envelope_metrics import small_object

NAME = "audit_fast_10k_s"
ENTITY, PROJECT = "bench", "audit"
ARTIFACTS = 1000


class StoreBuilder:
    def __init__(self, work: Path) -> None:
        from dagster_wandb_secure.stores.local import LocalArtifactStore

        self.work = work
        self.ks = make_key_store(work / "keys", "ed25519")
        self.store = LocalArtifactStore(work / "store")
        self.staging = work / "staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def publish_one(self, payload_obj: Any = None) -> None:
        from dagster_wandb_secure.core.envelope import seal_to
        from dagster_wandb_secure.core.manifest import MANIFEST_NAME, History, write_manifest

        i = self.count
        name = f"asset-{i % ARTIFACTS:04d}"
        ctx = {
            "artifact": name,
            "type": "dataset",
            "partition": None,
            "asset_key": name,
            "project": f"{ENTITY}/{PROJECT}",
        }
        folder = self.staging / str(i)
        folder.mkdir()
        payload = folder / "output.pickle"
        ledger = self.ks.ledger
        with ledger.batch():
            header = seal_to(
                payload,
                dict(small_object(), index=i) if payload_obj is None else payload_obj,
                key_store=self.ks,
                context=ctx,
            )
            # format 2: version i // ARTIFACTS of its artifact, so the signed order is the
            # publish order (what the IO manager's allocation produces)
            history = History(sequence=i // ARTIFACTS + 1, parent=None, aliases=("latest",))
            manifest, mheader = write_manifest(
                {"output.pickle": payload}, key_store=self.ks, context=ctx, history=history
            )
        (folder / MANIFEST_NAME).write_bytes(manifest)
        av = self.store.publish(
            entity=ENTITY,
            project=PROJECT,
            name=name,
            type="dataset",
            files={"output.pickle": payload, MANIFEST_NAME: folder / MANIFEST_NAME},
        )
        with ledger.batch():
            for row in (header.ledger_row, mheader.ledger_row):
                if row is not None:
                    ledger.attach_version(
                        row, artifact_version=av.version_label, aliases=tuple(av.aliases)
                    )
        shutil.rmtree(folder)
        self.count += 1

    def grow_to(self, n: int, log: Any = None) -> float:
        """Publish until the store holds ``n`` versions; returns seconds per new version."""
        start, first = time.perf_counter(), self.count
        while self.count < n:
            self.publish_one()
            if log is not None and self.count % 1000 == 0:
                log(f"audit store: {self.count} versions")
        made = self.count - first
        return (time.perf_counter() - start) / made if made else 0.0


def _audit(builder: StoreBuilder, deep: bool = False) -> tuple[float, Counter[str]]:
    from dagster_wandb_secure.maintenance.audit import audit_store

    with Timer() as t:
        report = audit_store(builder.store, builder.ks, deep=deep)
    return t.seconds, Counter(str(e.status) for e in report.entries)


def run(cfg: Config, log: Any = None) -> tuple[list[MetricResult], dict[str, Any]]:
    work = cfg.workdir / "audit"
    work.mkdir(parents=True, exist_ok=True)
    builder = StoreBuilder(work)
    sizes = sorted({*cfg.store_sizes, cfg.audit_versions})
    runs = 1 if cfg.quick else 3
    rows: list[dict[str, Any]] = []
    metric: MetricResult | None = None
    for n in sizes:
        try:
            build = builder.grow_to(n, log)
            times: list[float] = []
            statuses: Counter[str] = Counter()
            for _ in range(runs):
                seconds, statuses = _audit(builder, deep=False)
                times.append(seconds)
            deep_s = _audit(builder, deep=True)[0] if n <= 1000 else None
        except Exception as exc:
            rows.append({"versions": n, "error": f"{type(exc).__name__}: {exc}"})
            if n == cfg.audit_versions:
                metric = MetricResult(name=NAME, value=None, error=rows[-1]["error"])
            continue
        audit_s = median(times)
        # a fast audit calls an intact version signature-ok (payloads not re-hashed)
        invalid = {k: v for k, v in statuses.items() if k not in ("valid", "signature-ok")}
        rows.append(
            {
                "versions": n,
                "audit_s": audit_s,
                "audit_us_per_version": audit_s / n * 1e6,
                "deep_audit_s": deep_s,
                "build_ms_per_version": build * 1e3,
                "statuses": dict(statuses),
            }
        )
        if n == cfg.audit_versions:
            metric = MetricResult(
                name=NAME,
                value=audit_s if not invalid else None,
                baseline=None,
                candidate=audit_s,
                baseline_label="(absolute target)",
                candidate_label=f"audit_store(deep=False) over {n} versions, in-process",
                runs=runs,
                note=f"{n} versions over {min(n, ARTIFACTS)} artifacts, local store",
                error=f"versions not valid: {invalid}" if invalid else None,
                extra={
                    "build_ms_per_version": build * 1e3,
                    "disk_bytes": _du(work / "store"),
                    "on_processes": _on_processes(n),
                },
            )
    assert metric is not None
    return [metric], {"store": rows}


def _on_processes(n: int) -> bool:
    """Whether ``audit_store`` checked ``n`` versions on forked processes in this process (it
    stays on threads where forking is not safe: ``maintenance.audit._fork_is_safe``)."""
    from dagster_wandb_secure.maintenance import audit

    return audit._fork_is_safe() and n >= audit.PROCESS_MIN_VERSIONS and (os.cpu_count() or 1) > 1


def _du(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


DEEP_NAME = "audit_deep_fraction_of_limit"


def _raw_read_hash(paths: list[Path], algs: list[str]) -> float:
    """Read and hash every file (its own digest algorithm), one thread per core, as the audit
    does: the limit a deep audit of these bytes can reach on this machine."""
    from concurrent.futures import ThreadPoolExecutor

    from dagster_wandb_secure.core.digests import digest_file

    with Timer() as t, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(digest_file, algs, paths))
    return t.seconds


def run_deep_fraction(cfg: Config) -> MetricResult:
    """Deep audit of ``cfg.deep_versions`` versions of ``cfg.deep_bytes`` each vs raw read+hash."""
    from dagster_wandb_secure.core.envelope import read_header_unverified

    from .common import interleaved
    from .envelope_metrics import large_array

    work = cfg.workdir / "audit-deep"
    work.mkdir(parents=True, exist_ok=True)
    builder = StoreBuilder(work)
    array = large_array(cfg.deep_bytes)
    for _ in range(cfg.deep_versions):
        builder.publish_one(array)
    del array
    paths: list[Path] = []
    algs: list[str] = []
    for dirpath, _dirs, files in os.walk(builder.store.root / "artifacts"):
        for name in files:
            path = Path(dirpath) / name
            alg = read_header_unverified(path)["header"]["digest_alg"]
            paths.append(path)
            algs.append(alg)
    total = sum(p.stat().st_size for p in paths)
    statuses: Counter[str] = Counter()

    def deep() -> float:
        seconds, got = _audit(builder, deep=True)
        statuses.update(got)
        return seconds

    _raw_read_hash(paths, algs)  # warm the page cache for both sides
    runs = 1 if cfg.quick else 3
    base, cand = interleaved(lambda: _raw_read_hash(paths, algs), deep, runs)
    bad = {k: v for k, v in statuses.items() if k != "valid"}
    return MetricResult(
        name=DEEP_NAME,
        value=median(base) / median(cand) if not bad else None,
        baseline=median(base),
        candidate=median(cand),
        baseline_label=f"read + hash {len(paths)} files ({total >> 20} MiB), 1 thread per core",
        candidate_label=f"audit_store(deep=True), {cfg.deep_versions} versions",
        runs=runs,
        note="fraction = raw time / deep audit time; files in the page cache for both sides",
        error=f"versions not valid: {bad}" if bad else None,
        extra={"bytes": total, "files": len(paths), "digest_algs": sorted(set(algs))},
    )
