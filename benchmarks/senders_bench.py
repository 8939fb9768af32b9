"""Senders and topics on loopback: request/reply round trip, tracked-send
event latency, topic publish throughput.

    python benchmarks/senders_bench.py [--url redis://...] [--requests 3000]

Without --url it starts a private valkey-server (rqueue._transport.embedded). The
consumer runs in another process (a plain receive/delete(reply=...) loop with
a waiting long poll), as a real deployment would.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import platform
import statistics
import time
import uuid

import rqueue
from rqueue._transport.embedded import ServerProcess


def consumer(url: str, prefix: str, queue: str, ready: mp.synchronize.Event, stop: mp.synchronize.Event) -> None:
    client = rqueue.connect(url, prefix=prefix)
    q = client.queue(queue)
    ready.set()
    while not stop.is_set():
        ms = q.receive(10, wait_time=1)
        if ms:
            q.delete_batch([m.receipt for m in ms], replies=[m.body for m in ms])
    client.close()


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


def bench_request(client: rqueue.Client, url: str, prefix: str, n: int) -> dict[str, float]:
    q = client.create_queue("rr")
    ready, stop = mp.Event(), mp.Event()
    p = mp.Process(target=consumer, args=(url, prefix, "rr", ready, stop))
    p.start()
    ready.wait(30)
    for i in range(200):  # warm up
        q.request(i, timeout=5)
    rtt: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        assert q.request(i, timeout=5) == i
        rtt.append(time.perf_counter() - t0)
    ev: list[float] = []
    for i in range(n // 2):
        t0 = time.perf_counter()
        t = q.send_tracked(i)
        assert t.wait("processed", timeout=5).reply == i
        ev.append(time.perf_counter() - t0)
    plain: list[float] = []
    for i in range(n // 2):  # baseline: send + the same consumer, no reply wait
        t0 = time.perf_counter()
        q.send(i)
        plain.append(time.perf_counter() - t0)
    stop.set()
    p.join(10)
    return {
        "request p50 ms": pct(rtt, 0.5),
        "request p99 ms": pct(rtt, 0.99),
        "request mean ms": statistics.mean(rtt) * 1000,
        "tracked send->processed p50 ms": pct(ev, 0.5),
        "tracked send->processed p99 ms": pct(ev, 0.99),
        "plain send p50 ms": pct(plain, 0.5),
    }


def bench_topic(client: rqueue.Client, subs: int, batch: int, seconds: float) -> dict[str, float]:
    topic = client.topic(f"t{subs}")
    handles = [topic.subscribe(f"s{i}") for i in range(subs)]
    bodies = [{"event": "order.created", "id": i} for i in range(batch)]
    topic.publish_batch(bodies)  # warm up (reads the subscription list once)
    published = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        topic.publish_batch(bodies)
        published += batch
    dt = time.perf_counter() - t0
    single = 0
    t1 = time.perf_counter()
    while time.perf_counter() - t1 < seconds / 2:
        topic.publish(bodies[0])
        single += 1
    dt1 = time.perf_counter() - t1
    for h in handles:
        h.purge()
    for i in range(subs):
        topic.unsubscribe(f"s{i}")
    return {
        f"publish_batch({batch}) to {subs} subs: deliveries/s": published * subs / dt,
        f"publish() to {subs} subs: publishes/s": single / dt1,
        f"publish() to {subs} subs: deliveries/s": single * subs / dt1,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        server = ServerProcess().start()
        url = server.url
    prefix = "bench" + uuid.uuid4().hex[:6]
    client = rqueue.connect(url, prefix=prefix)
    try:
        machine = platform.processor() or platform.machine()
        print(f"# {machine}, Python {platform.python_version()}, {rqueue.mask_url(url)}")
        for k, v in bench_request(client, url, prefix, args.requests).items():
            print(f"{k:45s} {v:12.3f}")
        for subs in (1, 10, 100):
            for k, v in bench_topic(client, subs, 100, args.seconds).items():
                print(f"{k:45s} {v:12.0f}")
        client.delete_queue("rr")
    finally:
        client.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
