"""The benchmark scripts still run against the current API (smoke runs, no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def test_core_bench_quick_run_reports_every_measure() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "core_bench.py"), "--quick", "--no-minimal", "--json"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert sorted(r["batch"] for r in result["throughput"].values()) == [1, 10, 100]
    assert all(r["end_to_end_per_s"] > 0 for r in result["throughput"].values())
    assert result["memory"]["bytes_per_msg"] > result["memory"]["body_bytes"]
    assert result["wakeup"]["wake_p99_ms"] > 0
