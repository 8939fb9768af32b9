"""core_bench's report: the machine it ran on, and the table of measures against their targets."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

import rqueue

# Targets on a 2-core machine (see RESULTS.md).
T_E2E_RATIO_B100 = 0.85
T_SEND_B100 = 150_000
T_WAKE_P99_MS = 2.0
T_MEM_OVER_BODY = 120
T_DEEP_RATIO = 0.90


def machine(r: redis.Redis) -> dict[str, str]:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    commit = ""
    try:
        here = Path(rqueue.__file__).resolve().parent.parent  # the checkout whose rqueue runs
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    info = r.info("server")
    server = (
        f"{'valkey' if 'valkey_version' in info else 'redis'} {info.get('valkey_version', info.get('redis_version'))}"
    )
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": mem,
        "python": platform.python_version(),
        "server": server,
        "redis_py": redis.__version__,
        "rqueue": f"{rqueue.__version__} at {Path(rqueue.__file__).resolve().parent}",
        "mem_allocator": str(r.info("memory").get("mem_allocator", "")),
        "commit": commit,
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def table(res: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    tp, ref = res["throughput"], res.get("minimal_lua") or {}

    def ratio(a: float, b: float | None) -> str:
        return f"{a / b:.2f}" if b else "-"

    labels = (("send_per_s", "send"), ("receive_delete_per_s", "receive+delete"), ("end_to_end_per_s", "end-to-end"))
    for key, label in labels:
        for b in sorted(int(k) for k in tp):  # the batch sizes measured
            mine = tp[str(b)][key]
            theirs = ref.get(str(b), {}).get(key)
            target = ""
            if b == 100 and key == "send_per_s":
                target = f">= {T_SEND_B100 / 1000:.0f}k/s: {'met' if mine >= T_SEND_B100 else 'MISSED'}"
            if b == 100 and key == "end_to_end_per_s" and theirs:
                target = f">= {T_E2E_RATIO_B100:.2f}x: {'met' if mine / theirs >= T_E2E_RATIO_B100 else 'MISSED'}"
            rows.append(
                (
                    f"{label} msgs/s, batch {b}",
                    f"{mine:,.0f}",
                    f"{theirs:,.0f}" if theirs else "-",
                    ratio(mine, theirs),
                    target,
                )
            )
    w = res["wakeup"]
    ok = w["wake_p99_ms"] < T_WAKE_P99_MS
    rows.append(
        (
            f"long-poll wake-up p50 / p99 (n={w['samples']})",
            f"{w['wake_p50_ms']:.2f} / {w['wake_p99_ms']:.2f} ms",
            "-",
            "-",
            f"p99 < {T_WAKE_P99_MS:g} ms: {'met' if ok else 'MISSED'}",
        )
    )
    rows.append(
        (
            "delayed 0.05 s: lateness p50 / p99",
            f"{w['delay_late_p50_ms']:.2f} / {w['delay_late_p99_ms']:.2f} ms",
            "-",
            "-",
            "",
        )
    )
    m, f = res["memory"], res.get("memory_floor")
    ok = m["bytes_over_body"] <= T_MEM_OVER_BODY
    rows.append(
        (
            f"memory bytes/msg ({m['messages']:,} msgs, body {m['body_bytes']:.0f} B)",
            f"{m['bytes_per_msg']:.0f}",
            f"{f['bytes_per_msg']:.0f}" if f else "-",
            ratio(m["bytes_per_msg"], f["bytes_per_msg"] if f else None),
            "",
        )
    )
    rows.append(
        (
            "memory bytes/msg over body",
            f"{m['bytes_over_body']:.0f}",
            f"{f['bytes_over_body']:.0f}" if f else "-",
            "-",
            f"<= {T_MEM_OVER_BODY}: {'met' if ok else 'MISSED'}",
        )
    )
    d = res["deep"]
    ok = d["deep_ratio"] >= T_DEEP_RATIO
    rows.append(
        (f"receive(10)+delete cycles/s, {d['shallow']:,} queued", f"{d['shallow_cycles_per_s']:,.0f}", "-", "-", "")
    )
    rows.append(
        (
            f"receive(10)+delete cycles/s, {d['deep']:,} queued",
            f"{d['deep_cycles_per_s']:,.0f}",
            "-",
            f"{d['deep_ratio']:.3f} of {d['shallow']:,}",
            f">= {T_DEEP_RATIO:.2f}: {'met' if ok else 'MISSED'}",
        )
    )
    cs = res.get("cpu_split")
    if cs:
        mine_c, ref_c = cs["rqueue"], cs.get("minimal_lua")
        for phase, label in (("send", "send"), ("receive_delete", "receive+delete")):
            for side in ("client", "server"):
                k = f"{phase}_{side}_us"
                rows.append(
                    (
                        f"CPU us/msg, {label}, {side}, batch {cs['batch']}",
                        f"{mine_c[k]:.2f}",
                        f"{ref_c[k]:.2f}" if ref_c else "-",
                        ratio(mine_c[k], ref_c[k] if ref_c else None),
                        "",
                    )
                )
    head = ("measure", "rqueue", "minimal_lua", "ratio", "target")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
