"""rqueue core benchmark, measured against minimal_lua.py (the floor) in the same run.

    python benchmarks/core_bench.py                 # full run, starts its own throwaway servers
    python benchmarks/core_bench.py --quick         # smoke run (a few seconds)
    python benchmarks/core_bench.py --json          # one JSON object on stdout
    python benchmarks/core_bench.py --url redis://127.0.0.1:6400/0   # use a THROWAWAY server

Measures, with the ~240-byte JSON bodies of minimal_lua.py's payload():
  1. send/s, receive+delete/s, end-to-end/s at batch 1, 10, 100 (send all in
     batches, then receive batch + delete_batch until drained);
  2. long-poll wake-up latency (receiver blocked in receive(1, wait_time=10) in
     another process; send call start -> receive return) and the lateness of a
     0.05 s delayed message after its visible-at moment;
  3. server memory per stored message (INFO used_memory before/after);
  4. receive(10)+delete_batch cycles/s with 1k and with 1M messages queued;
  5. minimal_lua.py (subprocess, on a separate server it may FLUSHDB) and the
     ratio of every throughput figure to its counterpart;
  6. CPU per message at batch 100 (client process vs server main thread, send
     and receive+delete) for rqueue and for minimal_lua's scripts: unlike wall
     time it hardly moves when other processes share the cores.
Throughput figures are the best of --repeat runs, for rqueue and minimal_lua alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis
from bench_common import payload

import rqueue
from rqueue._transport.embedded import ServerProcess

#: The floor benchmark: ``RQUEUE_MINIMAL_LUA``, else ``shared/bench-limit/minimal_lua.py`` beside the repository.
MINIMAL_DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "bench-limit" / "minimal_lua.py"
MINIMAL = Path(os.environ.get("RQUEUE_MINIMAL_LUA") or MINIMAL_DEFAULT)
PREFIX = "bench"
BATCHES = (1, 10, 100)

# Targets on a 2-core machine (see RESULTS.md).
T_E2E_RATIO_B100 = 0.85
T_SEND_B100 = 150_000
T_WAKE_P99_MS = 2.0
T_MEM_OVER_BODY = 120
T_DEEP_RATIO = 0.90


def mono() -> float:
    """CLOCK_MONOTONIC: one system-wide clock, comparable across processes."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


# ------------------------------------------------------------------ 1. throughput


def throughput(client: rqueue.Client, batch: int, total: int) -> dict[str, float]:
    """minimal_lua.run's method, through rqueue's public API."""
    name = f"tp-{batch}"
    q = client.create_queue(name, visibility_timeout=30)
    q.purge()
    bodies = [payload(i) for i in range(total)]
    t0 = time.perf_counter()
    for i in range(0, total, batch):
        q.send_batch(bodies[i : i + batch])
    t1 = time.perf_counter()
    got = 0
    while got < total:
        msgs = q.receive(batch)
        got += len(msgs)
        q.delete_batch([m.receipt for m in msgs])
    t2 = time.perf_counter()
    client.delete_queue(name)
    return {
        "batch": batch,
        "send_per_s": total / (t1 - t0),
        "receive_delete_per_s": total / (t2 - t1),
        "end_to_end_per_s": total / (t2 - t0),
    }


def minimal_run(url: str, total: int) -> list[dict[str, float]]:
    out = subprocess.run(
        [
            sys.executable,
            str(MINIMAL),
            "--url",
            url,
            "--json",
            "--total",
            str(total),
            "--batches",
            ",".join(map(str, BATCHES)),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def best(runs: list[list[dict[str, float]]]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for run in runs:
        for r in run:
            b = int(r["batch"])
            cur = out.setdefault(b, {"batch": b})
            for k, v in r.items():
                if k != "batch":
                    cur[k] = max(cur.get(k, 0.0), v)
    return out


def _server_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def minimal_available(skip: bool) -> bool:
    """Whether to measure the floor: not with --no-minimal; exit 2 when RQUEUE_MINIMAL_LUA names no
    file; without the default file, say so on stderr and measure rqueue alone (no ratios)."""
    if skip:
        return False
    if MINIMAL.is_file():
        return True
    if os.environ.get("RQUEUE_MINIMAL_LUA"):
        print(f"core_bench: error: RQUEUE_MINIMAL_LUA={str(MINIMAL)!r} is not a file", file=sys.stderr)
        sys.exit(2)
    print(
        f"core_bench: no floor benchmark at {MINIMAL} (../shared/bench-limit/minimal_lua.py beside the "
        "repository): measuring rqueue alone, without ratios. Set RQUEUE_MINIMAL_LUA to its path, "
        "or pass --no-minimal to skip it without this note.",
        file=sys.stderr,
    )
    return False


def _load_minimal() -> Any:
    spec = importlib.util.spec_from_file_location("minimal_lua", MINIMAL)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_split(client: rqueue.Client, ref_url: str | None, batch: int, total: int, rounds: int) -> dict[str, Any]:
    """CPU time per message (us), client process vs server main thread, per phase; least of ``rounds``.

    CPU time, unlike wall time, hardly moves when other processes share the cores.
    """
    bodies = [payload(i) for i in range(total)]
    out: dict[str, Any] = {"batch": batch, "messages": total}

    def phases(r: redis.Redis, send: Any, receive_delete: Any) -> dict[str, float]:
        c0, s0 = time.process_time(), _server_cpu(r)
        send()
        c1, s1 = time.process_time(), _server_cpu(r)
        receive_delete()
        c2, s2 = time.process_time(), _server_cpu(r)
        us = 1e6 / total
        return {
            "send_client_us": (c1 - c0) * us,
            "send_server_us": (s1 - s0) * us,
            "receive_delete_client_us": (c2 - c1) * us,
            "receive_delete_server_us": (s2 - s1) * us,
        }

    def least(runs: list[dict[str, float]]) -> dict[str, float]:
        return {k: min(x[k] for x in runs) for k in runs[0]}

    q = client.create_queue("cpu", visibility_timeout=30)
    q.purge()

    def rq_send() -> None:
        for i in range(0, total, batch):
            q.send_batch(bodies[i : i + batch])

    def rq_receive_delete() -> None:
        got = 0
        while got < total:
            msgs = q.receive(batch)
            got += len(msgs)
            q.delete_batch([m.receipt for m in msgs])

    out["rqueue"] = least([phases(client.redis, rq_send, rq_receive_delete) for _ in range(rounds)])
    client.delete_queue("cpu")
    if ref_url:
        ml = _load_minimal()
        r = redis.Redis.from_url(ref_url)
        r.flushdb()
        ml_send, ml_receive, ml_delete = (r.register_script(x) for x in (ml.SEND, ml.RECEIVE, ml.DELETE))

        def m_send() -> None:
            for i in range(0, total, batch):
                ml_send(keys=ml.KEYS, args=[orjson.dumps(b) for b in bodies[i : i + batch]])

        def m_receive_delete() -> None:
            got = 0
            while got < total:
                ids, raw = ml_receive(keys=ml.KEYS, args=[batch, 30000])
                [orjson.loads(b) for b in raw]
                got += len(ids)
                ml_delete(keys=ml.KEYS, args=ids)

        out["minimal_lua"] = least([phases(r, m_send, m_receive_delete) for _ in range(rounds)])
        r.flushdb()
        r.close()
    return out


# ------------------------------------------------------------------ 2. wake-up latency


def _receiver(url: str, name: str, pipe: Any) -> None:  # runs in a child process
    c = rqueue.connect(url, prefix=PREFIX)
    q = c.queue(name)
    while pipe.recv():
        pipe.send("ready")
        msgs = q.receive(1, wait_time=10)
        t_mono, t_wall = mono(), time.time()
        pipe.send((t_mono, t_wall, msgs[0].sent_at if msgs else None))
        if msgs:
            q.delete(msgs[0].receipt)
    c.close()


def wakeup(client: rqueue.Client, url: str, samples: int, warmup: int = 10) -> dict[str, float]:
    """Receiver in another process, blocked (server says so) before each send."""
    name = "wake"
    q = client.create_queue(name, visibility_timeout=30)
    q.purge()
    r = client.redis
    base_blocked = int(r.info("clients")["blocked_clients"])
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver, args=(url, name, child), daemon=True)
    proc.start()
    lat: list[float] = []
    late: list[float] = []
    try:
        for delayed in (False, True):
            for i in range(warmup + samples):
                parent.send(True)
                assert parent.recv() == "ready"
                deadline = time.monotonic() + 10
                while int(r.info("clients")["blocked_clients"]) <= base_blocked:
                    if time.monotonic() > deadline:
                        raise RuntimeError("receiver never blocked")
                t0 = mono()
                q.send(payload(i), delay=0.05 if delayed else None)
                t_mono, t_wall, sent_at = parent.recv()
                if sent_at is None:
                    raise RuntimeError("long poll returned empty")
                if i >= warmup:
                    if delayed:
                        late.append((t_wall - (sent_at + 50) / 1000) * 1000)
                    else:
                        lat.append((t_mono - t0) * 1000)
        parent.send(False)
        proc.join(10)
    finally:
        if proc.is_alive():
            proc.kill()
    client.delete_queue(name)
    return {
        "samples": samples,
        "wake_p50_ms": statistics.median(lat),
        "wake_p99_ms": pct(lat, 99),
        "wake_max_ms": max(lat),
        "delay_late_p50_ms": statistics.median(late),
        "delay_late_p99_ms": pct(late, 99),
        "delay_late_max_ms": max(late),
    }


# ------------------------------------------------------------------ 3. memory


def _used(r: redis.Redis) -> int:
    """used_memory once no lazy free (of an earlier DEL/FLUSHDB) is pending."""
    deadline = time.monotonic() + 30
    while int(r.info("memory").get("lazyfree_pending_objects", 0)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(r.info("memory")["used_memory"])


def memory(client: rqueue.Client, n: int) -> dict[str, float]:
    name = "mem"
    q = client.create_queue(name, visibility_timeout=30)
    q.purge()
    r = client.redis
    body = sum(len(orjson.dumps(payload(i))) for i in range(n)) / n
    before = _used(r)
    for i in range(0, n, 1000):
        q.send_batch([payload(j) for j in range(i, min(n, i + 1000))])
    after = _used(r)
    client.delete_queue(name)
    per = (after - before) / n
    return {"messages": n, "body_bytes": body, "bytes_per_msg": per, "bytes_over_body": per - body}


def memory_floor(url: str, n: int) -> dict[str, float] | None:
    """The same n bodies stored by minimal_lua's SEND script (HSET + ZADD only)."""
    if not MINIMAL.is_file():
        return None
    mod = _load_minimal()
    r = redis.Redis.from_url(url)
    r.flushdb()
    send = r.register_script(mod.SEND)
    body = sum(len(orjson.dumps(payload(i))) for i in range(n)) / n
    before = _used(r)
    for i in range(0, n, 1000):
        send(keys=mod.KEYS, args=[orjson.dumps(payload(j)) for j in range(i, min(n, i + 1000))])
    per = (_used(r) - before) / n
    r.flushdb()
    r.close()
    return {"messages": n, "body_bytes": body, "bytes_per_msg": per, "bytes_over_body": per - body}


# ------------------------------------------------------------------ 4. deep queue


def _fill(q: rqueue.Queue, start: int, n: int) -> None:
    for i in range(start, start + n, 1000):
        q.send_batch([payload(j) for j in range(i, min(start + n, i + 1000))])


def deep(client: rqueue.Client, shallow: int, deep_n: int, cycles: int, rounds: int) -> dict[str, float]:
    """receive(10)+delete_batch cycles/s on a queue holding ``shallow`` and one holding ``deep_n`` messages.

    Rounds alternate between the two queues (so a burst of load elsewhere hits both alike)
    and the best round of each is kept. Each queue is refilled, untimed, every 50 cycles
    with as many messages as were deleted, so its depth holds.
    """
    chunk = 50
    queues = {}
    for label, depth in (("small", shallow), ("big", deep_n)):
        q = client.create_queue(f"deep-{label}", visibility_timeout=30)
        q.purge()
        _fill(q, 0, depth)
        queues[label] = [q, depth]

    def measure(label: str) -> float:
        q, nxt = queues[label]
        spent, done = 0.0, 0
        while done < cycles:
            k = min(chunk, cycles - done)
            t0 = time.perf_counter()
            for _ in range(k):
                msgs = q.receive(10)
                q.delete_batch([m.receipt for m in msgs])
            spent += time.perf_counter() - t0
            done += k
            _fill(q, nxt, 10 * k)
            nxt += 10 * k
        queues[label][1] = nxt
        return cycles / spent

    rates: dict[str, list[float]] = {"small": [], "big": []}
    for _ in range(rounds):
        for label in ("small", "big"):
            rates[label].append(measure(label))
    for label in ("small", "big"):
        client.delete_queue(f"deep-{label}")
    at_shallow, at_deep = max(rates["small"]), max(rates["big"])
    return {
        "shallow": shallow,
        "deep": deep_n,
        "cycles": cycles,
        "rounds": rounds,
        "shallow_cycles_per_s": at_shallow,
        "deep_cycles_per_s": at_deep,
        "deep_ratio": at_deep / at_shallow,
    }


# ------------------------------------------------------------------ report


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
        for b in BATCHES:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a THROWAWAY server for rqueue (default: start one)")
    ap.add_argument("--ref-url", help="a THROWAWAY server for minimal_lua, which FLUSHDBs (default: start one)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--total", type=int, help="messages per throughput run (batch 1 uses a tenth)")
    ap.add_argument("--repeat", type=int, help="throughput runs per side; the best is reported")
    ap.add_argument("--wake-samples", type=int)
    ap.add_argument("--mem-messages", type=int)
    ap.add_argument("--deep", type=int, help="messages queued for the deep receive measure")
    ap.add_argument("--no-minimal", action="store_true", help="skip minimal_lua (no ratios)")
    a = ap.parse_args()
    q = a.quick
    total = a.total or (2_000 if q else 50_000)
    repeat = a.repeat or (1 if q else 5)
    wake_n = a.wake_samples or (20 if q else 500)
    mem_n = a.mem_messages or (5_000 if q else 100_000)
    deep_n = a.deep or (20_000 if q else 1_000_000)
    cycles = 100 if q else 1_000
    use_minimal = minimal_available(a.no_minimal)

    servers: list[ServerProcess] = []
    try:
        url = a.url or servers.append(ServerProcess().start()) or servers[-1].url
        ref_url = None
        if use_minimal:
            ref_url = a.ref_url or servers.append(ServerProcess().start()) or servers[-1].url
        client = rqueue.connect(url, prefix=PREFIX)
        res: dict[str, Any] = {
            "machine": machine(client.redis),
            "params": {
                "total": total,
                "repeat": repeat,
                "wake_samples": wake_n,
                "mem_messages": mem_n,
                "deep": deep_n,
                "deep_cycles": cycles,
                "quick": q,
            },
        }
        mine, theirs = [], []
        for _ in range(repeat):
            if ref_url:
                theirs.append(minimal_run(ref_url, total))
            mine.append([throughput(client, b, total if b > 1 else total // 10) for b in BATCHES])
        res["throughput"] = {str(k): v for k, v in best(mine).items()}
        res["minimal_lua"] = {str(k): v for k, v in best(theirs).items()} if theirs else None
        res["ratios"] = (
            {
                str(b): {
                    k: res["throughput"][str(b)][k] / res["minimal_lua"][str(b)][k]
                    for k in ("send_per_s", "receive_delete_per_s", "end_to_end_per_s")
                }
                for b in BATCHES
            }
            if theirs
            else None
        )
        res["cpu_split"] = cpu_split(client, ref_url, 100, total, 2 if q else 3)
        res["wakeup"] = wakeup(client, url, wake_n)
        res["memory"] = memory(client, mem_n)
        res["memory_floor"] = memory_floor(ref_url, mem_n) if ref_url else None
        res["deep"] = deep(client, 1_000, deep_n, cycles, 2 if q else 6)
        res["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        client.close()
    finally:
        for s in servers:
            s.close()
    if a.json:
        print(json.dumps(res))
    else:
        mc = res["machine"]
        print(
            f"{mc['date']} | {mc['nproc']} cpu {mc['cpu']} | {mc['ram']} | Python {mc['python']} | "
            f"{mc['server']} ({mc['mem_allocator']}) | rqueue {mc['commit']} | "
            f"load {mc['loadavg_start']} -> {mc['loadavg_end']}"
        )
        print(table(res))


if __name__ == "__main__":
    main()
