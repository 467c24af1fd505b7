"""Smoke test of the benchmark runner: ``python -m benchmarks --quick --json`` runs end to end and
reports every metric of README.md's "Performance" table (benchmarks/RESULTS.md). No timing
assertions: CI machines are too noisy for them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METRICS = (
    "write_ratio_large",
    "read_ratio_large",
    "io_manager_ratio_large",
    "io_manager_ratio_large_durable",
    "io_manager_ratio_small",
    "small_overhead_us_ed25519",
    "small_overhead_us_hmac",
    "peak_rss_overhead_mib",
    "hash_fraction_of_limit",
    "audit_fast_10k_s",
    "audit_deep_fraction_of_limit",
    "ledger_publish_ms_postgres",
)


def test_quick_json_has_every_metric(tmp_path: Path) -> None:
    scratch = tmp_path / "bench"
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", "--workdir", str(scratch)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)

    for name in METRICS:
        assert name in data, f"metric {name} missing from the JSON"
        detail = data["details"][name]
        assert detail["error"] is None, f"{name} failed: {detail['error']}"
        assert isinstance(data[name], int | float), f"{name} has no value: {data[name]!r}"
        assert name in data["targets"] and data["targets"][name]
        assert name in data["ok"] and data["ok"][name] in (True, False)
        assert detail["runs"] >= 1

    machine = data["machine"]
    assert machine["cpu_model"] and isinstance(machine["cores"], int)
    assert data["mode"] == "quick"
    assert data["scaling"]["payload"] and all("error" not in r for r in data["scaling"]["payload"])
    assert data["scaling"]["store"] and all("error" not in r for r in data["scaling"]["store"])
    # the scratch folder is removed unless --keep is given
    assert list(scratch.iterdir()) == []


def test_table_output(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            "small",
            "--workdir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "small_overhead_us_hmac" in proc.stdout and "target" in proc.stdout
    assert "machine:" in proc.stdout
