"""The benchmark scripts still run against the current API (smoke runs, no timing asserted)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rqueue._transport.embedded import ServerProcess

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


PEERS = BENCH.parent.parent / "shared" / "bench-peers"


@pytest.mark.skipif(not (PEERS / "common.py").is_file(), reason=f"the peers' harness is not at {PEERS}")
@pytest.mark.parametrize("mode", ["asyncio", "threads"])
def test_peer_harness_run_drains_every_message(mode: str) -> None:
    with ServerProcess() as server:
        out = subprocess.run(
            [sys.executable, str(BENCH / "peer_rqueue.py"), "--mode", mode, "--port", str(server.port), "--n", "500"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert (result["processed"], result["error"]) == (500, None)
    assert result["drain_rate"] > 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_server_instructions_counts_both_phases() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "server_instructions.py"), "--n", "200", "--batch", "50"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCH,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    send, cycle = (int(x.replace(",", "")) for x in re.findall(r"(?:send|delete) ([\d,]+)", out.stdout))
    assert send > 1000 and cycle > 1000, out.stdout


def test_fifo_bench_quick_run_reports_every_measure() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "fifo_bench.py"), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCH,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert sorted(result["throughput"]) == ["fifo_1", "fifo_100", "fifo_100000", "standard"]
    assert all(rate > 0 for rate in result["throughput"].values())
    assert result["flat"]["small_ms"] > 0 and result["flat"]["big_ms"] > 0
    assert result["flat"]["big_groups"] == 2001
    assert result["memory"]["fifo"] > 0 and result["memory"]["standard"] > 0
