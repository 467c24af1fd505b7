"""``python -m benchmarks [--quick] [--json] [--only GROUP ...] [--keep]``: run and report."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import (
    METRICS,
    MIB,
    TARGETS,
    Config,
    MetricResult,
    failed,
    host_memory,
    host_memory_text,
    isolate_environment,
    machine,
)

GROUPS = ("large", "small", "hash", "rss", "io", "io_small", "audit", "scaling", "ledger")


def run_all(cfg: Config, log: Any) -> tuple[list[MetricResult], dict[str, Any]]:
    results: list[MetricResult] = []
    scaling: dict[str, Any] = {}
    try:
        from . import envelope_metrics

        key_stores = envelope_metrics.key_stores_for(cfg)
        log("envelope: large ratios, small overhead, hashing, payload scaling")
        got, sc = envelope_metrics.run(cfg, key_stores)
        results += got
        scaling.update(sc)
    except Exception as exc:
        for name in (
            "write_ratio_large",
            "read_ratio_large",
            "small_overhead_us_ed25519",
            "small_overhead_us_hmac",
            "hash_fraction_of_limit",
        ):
            results.append(failed(name, exc))
    if cfg.wants("rss"):
        from . import memory

        log("memory: peak RSS in subprocesses")
        results.append(memory.run(cfg))
    if cfg.wants("io"):
        log("io manager: materialize + load against FilesystemIOManager")
        try:
            from . import io_manager_metrics

            results += io_manager_metrics.run(cfg)
        except Exception as exc:
            names = (
                "io_manager_ratio_large",
                "io_manager_ratio_large_durable",
                "io_manager_ratio_small",
            )
            results += [failed(n, exc) for n in names]
    elif cfg.wants("io_small"):  # the small IO manager row alone
        log(f"io manager: {cfg.small_assets} small assets against FilesystemIOManager")
        from . import io_manager_metrics

        results.append(io_manager_metrics.run_small_only(cfg))
    if cfg.wants("audit") or cfg.wants("scaling"):
        log("audit: fast audit of the local store")
        try:
            from . import audit_metrics

            got, sc = audit_metrics.run(cfg, log)
            results += got
            scaling.update(sc)
        except Exception as exc:
            results.append(failed("audit_fast_10k_s", exc))
        try:
            from . import audit_metrics

            log("audit: deep audit vs raw read + hash of the same bytes")
            results.append(audit_metrics.run_deep_fraction(cfg))
        except Exception as exc:
            results.append(failed("audit_deep_fraction_of_limit", exc))
    if cfg.wants("ledger"):
        log("ledger: the PostgreSQL ledger's share of a publish, 4 writers")
        try:
            from . import ledger_metrics

            results += ledger_metrics.run(cfg)
        except Exception as exc:
            results.append(failed("ledger_publish_ms_postgres", exc))
    return results, scaling


def report(cfg: Config, results: list[MetricResult], scaling: dict[str, Any], secs: float) -> dict:
    by_name = {r.name: r for r in results}
    out: dict[str, Any] = {}
    for name in METRICS:
        res = by_name.get(name)
        out[name] = res.value if res else None
    out["machine"] = machine()
    out["machine"]["load_average_at_start"] = cfg.load_at_start
    out["machine"]["host_memory_at_start"] = cfg.host_memory_at_start
    out["targets"] = {name: TARGETS[name].text() for name in METRICS}
    out["ok"] = {name: (by_name[name].ok if name in by_name else None) for name in METRICS}
    out["details"] = {name: by_name[name].as_dict() for name in METRICS if name in by_name}
    out["scaling"] = scaling
    out["mode"] = "quick" if cfg.quick else "full"
    out["runs"] = cfg.runs
    out["elapsed_s"] = round(secs, 2)
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.1f} us"
        return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        f"dagster-wandb-secure benchmarks ({data['mode']} run, {data['elapsed_s']} s)",
        f"machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}, SHA extensions: {m['sha_extensions']}",
        f"load average (1/5/15 min) at start {m['load_average_at_start']}, "
        f"at end {m['load_average_1_5_15min']} (other processes share these cores)",
    ]
    if m.get("host_memory_at_start"):
        lines.append(f"at start: {host_memory_text(m['host_memory_at_start'])}")
    lines += [
        "",
        f"{'metric':<31} {'baseline':>12} {'candidate':>12} {'value':>10} {'target':>12}  ok",
        "-" * 86,
    ]
    for name in METRICS:
        det = data["details"].get(name)
        if det is None:
            lines.append(f"{name:<31} {'(not run)':>12}")
            continue
        if det["error"]:
            lines.append(f"{name:<31} ERROR: {det['error'][:120]}")
            continue
        unit = det["unit"]
        ok = {True: "yes", False: "NO", None: "-"}[det["ok"]]
        lines.append(
            f"{name:<31} {_fmt(det['baseline'], unit):>12} {_fmt(det['candidate'], unit):>12} "
            f"{_fmt(det['value']):>10} {det['target']:>12}  {ok}"
        )
    lines.append("")
    for name in METRICS:
        det = data["details"].get(name)
        if det and not det["error"]:
            lines.append(f"  {name}: {det['baseline_label']}  vs  {det['candidate_label']}")
            if det["note"]:
                lines.append(f"      ({det['note']})")
            if det["extra"].get("ratio_keeping_versions") is not None:
                lines.append(
                    "      every version kept instead (page cache grows a payload a run): "
                    f"ratio {det['extra']['ratio_keeping_versions']:.3g}"
                )
            if det["extra"].get("host_memory"):
                probe = host_memory_text(det["extra"]["host_memory"])
                lines.append(f"      before these runs: {probe}")
    payload = data["scaling"].get("payload")
    if payload:
        lines += ["", "payload scaling (medians; seal_to/unseal_from vs pickle dump/load to file)"]
        lines.append(
            f"{'size':>9} {'pickle w':>10} {'seal w':>10} {'ratio':>6} "
            f"{'pickle r':>10} {'unseal r':>10} {'ratio':>6} {'seal MiB/s':>11} "
            f"{'unseal MiB/s':>12}"
        )
        for row in payload:
            if "error" in row:
                lines.append(f"{row['bytes']:>9} ERROR: {row['error'][:100]}")
                continue
            lines.append(
                f"{row['size']:>9} {_fmt(row['pickle_write_s'], 's'):>10} "
                f"{_fmt(row['seal_write_s'], 's'):>10} {row['write_ratio']:>6.2f} "
                f"{_fmt(row['pickle_read_s'], 's'):>10} {_fmt(row['unseal_read_s'], 's'):>10} "
                f"{row['read_ratio']:>6.2f} {row['seal_mib_s']:>11.0f} {row['unseal_mib_s']:>12.0f}"
            )
    store = data["scaling"].get("store")
    if store:
        lines += ["", "store scaling (fast audit of every version in the local store)"]
        lines.append(f"{'versions':>9} {'audit':>10} {'per version':>12} {'build/version':>14}")
        for row in store:
            if "error" in row:
                lines.append(f"{row['versions']:>9} ERROR: {row['error'][:100]}")
                continue
            lines.append(
                f"{row['versions']:>9} {_fmt(row['audit_s'], 's'):>10} "
                f"{row['audit_us_per_version']:>9.0f} us {row['build_ms_per_version']:>11.2f} ms"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds in all")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=(), help="metric groups")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--output", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--from-json", type=Path, help="print the table of a saved JSON result")
    args = parser.parse_args(argv)
    if args.from_json:
        print(table(json.loads(args.from_json.read_text())))
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="dws-bench-", dir=args.workdir))
    isolate_environment(scratch / "home")
    cfg = Config.make(quick=args.quick, workdir=scratch, only=frozenset(args.only))
    cfg.load_at_start = machine()["load_average_1_5_15min"]
    cfg.host_memory_at_start = host_memory(scratch, min(cfg.large_bytes, 512 * MIB))

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    try:
        results, scaling = run_all(cfg, log)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    data = report(cfg, results, scaling, time.perf_counter() - start)
    if args.output:
        args.output.write_text(json.dumps(data, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
