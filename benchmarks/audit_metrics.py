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

    def publish_one(self) -> None:
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
                payload, dict(small_object(), index=i), key_store=self.ks, context=ctx
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
                extra={"build_ms_per_version": build * 1e3, "disk_bytes": _du(work / "store")},
            )
    assert metric is not None
    return [metric], {"store": rows}


def _du(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total
