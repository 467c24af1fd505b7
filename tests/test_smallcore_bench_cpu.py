"""The small-object rows also report CPU time (``overhead_us_cpu_min``): on a shared 2-core
machine the wall clock moves by +-50%, process CPU time by a few percent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_small_rows_report_cpu_overhead(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", "--only", "small",
         "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    details = json.loads(proc.stdout)["details"]
    for name in ("small_overhead_us_ed25519", "small_overhead_us_hmac"):
        extra = details[name]["extra"]
        assert isinstance(extra["overhead_us_cpu_min"], float)
        assert 0 < extra["overhead_us_cpu_min"] < 100_000
