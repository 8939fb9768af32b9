"""Consumer benchmark: drain throughput of a no-op handler, and send -> handler latency.

    python benchmarks/consumer_bench.py [--n 50000] [--url redis://...]   # default: a throwaway embedded server
    python benchmarks/consumer_bench.py --fifo-groups 100                 # also drain a FIFO queue

One process. Drain: pre-fill a queue with N ~240-byte JSON bodies (``payload(i)``
of ../shared/bench-limit/minimal_lua.py), then time a consumer (threads, then
asyncio) from start until every message is acknowledged. With ``--fifo-groups G``
the same again on a FIFO queue whose messages go round-robin to G groups.
Latency: an idle consumer; send one message at a time and measure send ->
handler start.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from typing import Any

from bench_common import payload

import rqueue
import rqueue.asyncio as rqa
from rqueue._transport.embedded import ServerProcess


def fill(q: rqueue.Queue, n: int, groups: int = 0) -> None:
    for i in range(0, n, 1000):
        js = range(i, min(n, i + 1000))
        q.send_batch([payload(j) for j in js], group=[f"g{j % groups}" for j in js] if groups else None)


def drain_sync(url: str, n: int, concurrency: int, batch: int, groups: int = 0) -> float:
    with rqueue.connect(url, prefix="bench") as c:
        q = c.create_queue("drain" + "-fifo" * bool(groups), visibility_timeout=60, fifo=bool(groups))
        q.purge()
        fill(q, n, groups)
        count = [0]
        done = threading.Event()
        lock = threading.Lock()

        def handler(body: Any) -> None:
            with lock:
                count[0] += 1
                if count[0] == n:
                    done.set()

        consumer = rqueue.Consumer(q, handler, concurrency=concurrency, batch_size=batch)
        t0 = time.perf_counter()
        consumer.start()
        done.wait()
        consumer.stop()
        elapsed = time.perf_counter() - t0
        assert q.stats().deleted_total >= n
        c.delete_queue(q.name)
        return n / elapsed


async def drain_async(url: str, n: int, concurrency: int, batch: int, groups: int = 0) -> float:
    sync = rqueue.connect(url, prefix="bench")
    q = sync.create_queue("adrain" + "-fifo" * bool(groups), visibility_timeout=60, fifo=bool(groups))
    q.purge()
    fill(q, n, groups)
    client = await rqa.connect(url, prefix="bench")
    count = 0
    done = asyncio.Event()

    async def handler(body: Any) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    consumer = rqa.Consumer(client.queue(q.name), handler, concurrency=concurrency, batch_size=batch)
    t0 = time.perf_counter()
    await consumer.start()
    await done.wait()
    await consumer.stop()
    elapsed = time.perf_counter() - t0
    assert q.stats().deleted_total >= n
    sync.delete_queue(q.name)
    sync.close()
    await client.aclose()
    return n / elapsed


def latency_sync(url: str, k: int) -> tuple[float, float]:
    with rqueue.connect(url, prefix="bench") as c:
        q = c.create_queue("lat", visibility_timeout=60)
        got = threading.Event()
        lat: list[float] = []
        sent = [0.0]

        def handler(body: Any) -> None:
            lat.append(time.perf_counter() - sent[0])
            got.set()

        with rqueue.Consumer(q, handler, concurrency=4):
            time.sleep(0.2)
            for i in range(k):
                got.clear()
                sent[0] = time.perf_counter()
                q.send(payload(i))
                got.wait(5)
                time.sleep(0.002)
        c.delete_queue("lat")
    return _pct(lat)


async def latency_async(url: str, k: int) -> tuple[float, float]:
    client = await rqa.connect(url, prefix="bench")
    q = await client.create_queue("alat", visibility_timeout=60)
    got = asyncio.Event()
    lat: list[float] = []
    sent = 0.0

    async def handler(body: Any) -> None:
        lat.append(time.perf_counter() - sent)
        got.set()

    async with rqa.Consumer(q, handler, concurrency=4):
        await asyncio.sleep(0.2)
        sender = await rqa.connect(url, prefix="bench")
        sq = sender.queue("alat")
        for i in range(k):
            got.clear()
            sent = time.perf_counter()
            await sq.send(payload(i))
            await asyncio.wait_for(got.wait(), 5)
            await asyncio.sleep(0.002)
        await sender.aclose()
    await client.delete_queue("alat")
    await client.aclose()
    return _pct(lat)


def _pct(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs) * 1000, xs[int(len(xs) * 0.99) - 1] * 1000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", default=None)
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--latency", type=int, default=1000)
    # concurrency >= 2 x batch_size lets a receiver fetch the next batch while the last one runs.
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--fifo-groups", type=int, default=0, help="also drain a FIFO queue with this many groups")
    a = p.parse_args()
    server = None if a.url else ServerProcess().start()
    url = a.url or server.url  # type: ignore[union-attr]
    try:
        for rep in range(a.reps):
            t = drain_sync(url, a.n, a.concurrency, a.batch_size)
            at = asyncio.run(drain_async(url, a.n, a.concurrency, a.batch_size))
            print(f"rep {rep + 1}: drain threads {t:,.0f} msgs/s   asyncio {at:,.0f} msgs/s", flush=True)
            if a.fifo_groups:
                ft = drain_sync(url, a.n, a.concurrency, a.batch_size, a.fifo_groups)
                fat = asyncio.run(drain_async(url, a.n, a.concurrency, a.batch_size, a.fifo_groups))
                print(f"       FIFO, {a.fifo_groups} groups: threads {ft:,.0f} msgs/s   asyncio {fat:,.0f} msgs/s")
        if a.latency:
            p50, p99 = latency_sync(url, a.latency)
            print(f"latency threads: p50 {p50:.2f} ms  p99 {p99:.2f} ms")
            p50, p99 = asyncio.run(latency_async(url, a.latency))
            print(f"latency asyncio: p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    finally:
        if server:
            server.close()


if __name__ == "__main__":
    main()
