"""Seal/unseal against plain ``pickle``: large ratios, small overhead, hashing throughput, scaling.

Baselines run in the same process, interleaved with the candidate:
- write: ``pickle.dump(obj, file, protocol=5)``; candidate ``seal_to(path, obj, durable=False)``.
  Neither fsyncs; the candidate also renames a temporary file into place and writes a ledger row.
- read: ``pickle.load(file)``; candidate ``unseal_from(path)`` (signature, context, length and
  digest checked before a byte is deserialized).
- hashing: the default digest (``core/digests.py``, BLAKE3 on every core) over the very buffer
  that seal/unseal hash.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    MIB,
    Config,
    MetricResult,
    Timer,
    failed,
    human_bytes,
    interleaved,
    make_key_store,
    median,
)

CONTEXT = {"artifact": "bench-payload", "type": "dataset"}


def large_array(nbytes: int) -> np.ndarray:
    """An int64 array of ``nbytes`` bytes (rounded down to whole elements, at least one)."""
    return np.arange(max(nbytes // 8, 1), dtype=np.int64)


def small_object() -> dict[str, Any]:
    """A dict whose pickle is about 1 KB: the typical small Dagster output."""
    obj = {
        "name": "daily-metrics",
        "rows": 1234,
        "columns": [f"col_{i}" for i in range(24)],
        "scores": [i * 0.5 for i in range(60)],
        "tags": {"team": "ml", "env": "prod", "owner": "bench"},
    }
    return obj


class NullSink:
    """A seekable binary sink that discards what is written (isolates hashing from disk I/O)."""

    def __init__(self) -> None:
        self.pos = 0
        self.end = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.pos += n
        self.end = max(self.end, self.pos)
        return n

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else self.end + pos)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def seekable(self) -> bool:
        return True

    def flush(self) -> None:
        pass


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def pickle_write(path: Path, obj: Any) -> float:
    _unlink(path)
    with Timer() as t, open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=5)
    return t.seconds


def pickle_read(path: Path) -> float:
    with Timer() as t, open(path, "rb") as fh:
        obj = pickle.load(fh)
    del obj
    return t.seconds


def seal_write(path: Path, obj: Any, key_store: Any) -> float:
    from dagster_wandb_secure.core.envelope import seal_to

    _unlink(path)
    with Timer() as t:
        seal_to(path, obj, key_store=key_store, context=CONTEXT, durable=False)
    return t.seconds


def seal_read(path: Path, key_store: Any) -> float:
    from dagster_wandb_secure.core.envelope import unseal_from

    with Timer() as t:
        obj = unseal_from(path, key_store=key_store, expected_context=CONTEXT)
    del obj
    return t.seconds


def run_large(cfg: Config, key_store: Any) -> list[MetricResult]:
    """write_ratio_large and read_ratio_large on one int64 array of ``cfg.large_bytes``."""
    work = cfg.workdir / "large"
    work.mkdir(parents=True, exist_ok=True)
    plain, signed = work / "plain.pkl", work / "signed.env"
    box = {"arr": large_array(cfg.large_bytes)}
    size = human_bytes(box["arr"].nbytes)
    results: list[MetricResult] = []
    try:
        base, cand = interleaved(
            lambda: pickle_write(plain, box["arr"]),
            lambda: seal_write(signed, box["arr"], key_store),
            cfg.runs,
        )
        results.append(
            MetricResult(
                name="write_ratio_large",
                value=median(cand) / median(base),
                baseline=median(base),
                candidate=median(cand),
                baseline_label=f"pickle.dump {size} to file",
                candidate_label=f"seal_to {size} (durable=False, ledger row)",
                runs=cfg.runs,
                note="neither side fsyncs; seal_to renames a temp file into place",
                extra={"baseline_runs": base, "candidate_runs": cand},
            )
        )
    except Exception as exc:
        results.append(failed("write_ratio_large", exc))
    try:
        if not signed.exists():
            seal_write(signed, box["arr"], key_store)
        if not plain.exists():
            pickle_write(plain, box["arr"])
        box.clear()  # the read side holds only what it loads
        base, cand = interleaved(
            lambda: pickle_read(plain), lambda: seal_read(signed, key_store), cfg.runs
        )
        results.append(
            MetricResult(
                name="read_ratio_large",
                value=median(cand) / median(base),
                baseline=median(base),
                candidate=median(cand),
                baseline_label=f"pickle.load {size} from file",
                candidate_label=f"unseal_from {size} (verify + load)",
                runs=cfg.runs,
                note="file in the page cache for both sides",
                extra={"baseline_runs": base, "candidate_runs": cand},
            )
        )
    except Exception as exc:
        results.append(failed("read_ratio_large", exc))
    _unlink(plain)
    _unlink(signed)
    return results


def run_small(cfg: Config, name: str, key_store: Any) -> MetricResult:
    """Extra microseconds per seal+unseal of a ~1 KB dict, against pickle.dumps+loads."""
    from dagster_wandb_secure.core.envelope import seal, unseal

    obj = small_object()
    n = cfg.small_iterations

    def baseline() -> float:
        with Timer() as t:
            for _ in range(n):
                pickle.loads(pickle.dumps(obj, protocol=5))
        return t.seconds / n

    def candidate(record: bool = True) -> float:
        with Timer() as t:
            for _ in range(n):
                data = seal(obj, key_store=key_store, context=CONTEXT, record=record)
                unseal(data, key_store=key_store, expected_context=CONTEXT)
        return t.seconds / n

    try:
        candidate()  # warm caches (serializer registry, key objects)
        base, cand = interleaved(baseline, candidate, cfg.runs)
        _, no_ledger = interleaved(baseline, lambda: candidate(False), max(cfg.runs // 2, 1))
        seal_only = _per_op(
            n, lambda: seal(obj, key_store=key_store, context=CONTEXT, record=True)
        )
        envelope = seal(obj, key_store=key_store, context=CONTEXT, record=False)
        unseal_only = _per_op(
            n, lambda: unseal(envelope, key_store=key_store, expected_context=CONTEXT)
        )
        # CPU time (all threads) of the same loops: on a shared machine the wall clock moves by
        # +-50%, this by a few percent; the minimum of the runs is the least disturbed one
        cpu_base, cpu_cand = interleaved(
            lambda: _cpu_per_op(n, lambda: pickle.loads(pickle.dumps(obj, protocol=5))),
            lambda: _cpu_per_op(
                n,
                lambda: unseal(
                    seal(obj, key_store=key_store, context=CONTEXT, record=True),
                    key_store=key_store,
                    expected_context=CONTEXT,
                ),
            ),
            max(cfg.runs // 2, 1),
        )
        b, c = median(base), median(cand)
        return MetricResult(
            name=name,
            value=(c - b) * 1e6,
            baseline=b,
            candidate=c,
            baseline_label=f"pickle.dumps+loads {len(pickle.dumps(obj))} B dict",
            candidate_label="seal (ledger row) + unseal, in memory",
            runs=cfg.runs,
            note=f"per operation, {n} operations per run",
            extra={
                "overhead_us_without_ledger": (median(no_ledger) - b) * 1e6,
                "overhead_us_cpu_min": (min(cpu_cand) - min(cpu_base)) * 1e6,
                "seal_us": seal_only * 1e6,
                "unseal_us": unseal_only * 1e6,
                "envelope_bytes": len(envelope),
            },
        )
    except Exception as exc:
        return failed(name, exc)


def _cpu_per_op(n: int, fn: Any) -> float:
    """CPU seconds (``time.process_time``: every thread of the process) per call of ``fn``."""
    with Timer():  # the garbage collector paused, as for the wall-clock figures
        start = time.process_time()
        for _ in range(n):
            fn()
        return (time.process_time() - start) / n


def _per_op(n: int, fn: Any) -> float:
    with Timer() as t:
        for _ in range(n):
            fn()
    return t.seconds / n


def run_hash_fraction(cfg: Config, key_store: Any) -> MetricResult:
    """Digest throughput inside seal (to a null sink) and verify (in memory) vs the raw digest
    (the default algorithm, from the same registry, with the threads the library uses)."""
    from dagster_wandb_secure.core.digests import DEFAULT_DIGEST, digest_bytes
    from dagster_wandb_secure.core.envelope import seal, seal_to, verify_bytes

    name = "hash_fraction_of_limit"
    try:
        box = {"arr": large_array(cfg.large_bytes)}
        view = memoryview(box["arr"]).cast("B")
        nbytes = view.nbytes

        def raw() -> float:
            with Timer() as t:
                digest_bytes(DEFAULT_DIGEST, view)
            return t.seconds

        def in_seal() -> float:
            with Timer() as t:
                seal_to(NullSink(), box["arr"], key_store=key_store, context=CONTEXT, record=False)
            return t.seconds

        raw_s, seal_s = interleaved(raw, in_seal, cfg.runs)
        envelope = seal(box["arr"], key_store=key_store, context=CONTEXT, record=False)
        view.release()
        box.clear()
        view = memoryview(envelope)[-nbytes:]  # the same bytes, now inside the envelope

        def in_verify() -> float:
            with Timer() as t:
                verify_bytes(envelope, key_store=key_store, expected_context=CONTEXT)
            return t.seconds

        raw_v, verify_s = interleaved(raw, in_verify, cfg.runs)
        raw_all = median(raw_s + raw_v)
        frac_seal = median(raw_s) / median(seal_s)
        frac_verify = median(raw_v) / median(verify_s)
        worst = min(frac_seal, frac_verify)
        return MetricResult(
            name=name,
            value=worst,
            baseline=raw_all,
            candidate=median(seal_s) if frac_seal <= frac_verify else median(verify_s),
            baseline_label=f"raw {DEFAULT_DIGEST} over {human_bytes(nbytes)}",
            candidate_label="slower of seal_to(null sink) / verify_bytes",
            runs=cfg.runs,
            note="throughput fraction = raw time / time inside the library (min of both sides)",
            extra={
                "raw_mib_s": nbytes / MIB / raw_all,
                "seal_fraction": frac_seal,
                "verify_fraction": frac_verify,
                "seal_mib_s": nbytes / MIB / median(seal_s),
                "verify_mib_s": nbytes / MIB / median(verify_s),
            },
        )
    except Exception as exc:
        return failed(name, exc)


def run_payload_scaling(cfg: Config, key_store: Any) -> list[dict[str, Any]]:
    """seal_to/unseal_from against pickle for payloads from 1 KB up to the largest size."""
    work = cfg.workdir / "scaling"
    work.mkdir(parents=True, exist_ok=True)
    plain, signed = work / "plain.pkl", work / "signed.env"
    rows: list[dict[str, Any]] = []
    for size in cfg.payload_sizes:
        arr: Any = large_array(size)
        reps = cfg.scaling_runs if size >= MIB else max(cfg.scaling_runs, 5)
        try:
            bw, sw = interleaved(
                lambda a=arr: pickle_write(plain, a),
                lambda a=arr: seal_write(signed, a, key_store),
                reps,
            )
            del arr
            br, sr = interleaved(
                lambda: pickle_read(plain), lambda: seal_read(signed, key_store), reps
            )
        except Exception as exc:
            rows.append({"bytes": size, "error": f"{type(exc).__name__}: {exc}"})
            continue
        rows.append(
            {
                "bytes": size,
                "size": human_bytes(size),
                "pickle_write_s": median(bw),
                "seal_write_s": median(sw),
                "pickle_read_s": median(br),
                "unseal_read_s": median(sr),
                "write_ratio": median(sw) / median(bw),
                "read_ratio": median(sr) / median(br),
                "seal_mib_s": size / MIB / median(sw),
                "unseal_mib_s": size / MIB / median(sr),
            }
        )
        _unlink(plain)
        _unlink(signed)
    return rows


def run(cfg: Config, key_stores: dict[str, Any]) -> tuple[list[MetricResult], dict[str, Any]]:
    ed = key_stores["ed25519"]
    results: list[MetricResult] = []
    scaling: dict[str, Any] = {}
    if cfg.wants("large"):
        results += run_large(cfg, ed)
    if cfg.wants("small"):
        results.append(run_small(cfg, "small_overhead_us_ed25519", ed))
        results.append(run_small(cfg, "small_overhead_us_hmac", key_stores["hmac-sha256"]))
    if cfg.wants("hash"):
        results.append(run_hash_fraction(cfg, ed))
    if cfg.wants("scaling"):
        scaling["payload"] = run_payload_scaling(cfg, ed)
    return results, scaling


def key_stores_for(cfg: Config) -> dict[str, Any]:
    return {
        alg: make_key_store(cfg.workdir / f"keys-{alg}", alg) for alg in ("ed25519", "hmac-sha256")
    }
