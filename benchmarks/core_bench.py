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
import json
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import floor
import orjson
import redis
from bench_common import payload
from core_report import machine, table

import rqueue
from rqueue._transport.embedded import ServerProcess

PREFIX = "bench"
BATCHES = (1, 10, 100)


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
        ml = floor.load()
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
    if not floor.MINIMAL.is_file():
        return None
    mod = floor.load()
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
    use_minimal = floor.minimal_available(a.no_minimal)

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
                theirs.append(floor.run(ref_url, total, BATCHES))
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
