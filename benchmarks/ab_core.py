"""Core throughput of this checkout beside another one and minimal_lua, rounds alternated.

On a shared VM one run's msgs/s move by +-30 %; comparing two versions needs both (and the
floor) in the same rounds, each on a fresh throwaway server, and medians.

    python benchmarks/ab_core.py --before /path/to/other/checkout/.venv/bin/python --rounds 11

Each round runs minimal_lua.py, then ``core_bench.throughput()`` under the other checkout's
Python (importing its rqueue) and under this one's, in an order that flips every round.
Prints the medians: send, receive+delete and end-to-end msgs/s, ratios to the floor, and
the client's CPU per message.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import floor as _floor
import redis

from rqueue._transport.embedded import free_port, server_binary

HERE = Path(__file__).resolve().parent

#: One measurement, run under either checkout's Python: core_bench's method, plus client CPU.
RUN = """
import json, sys, time
sys.path.insert(0, {bench!r})
import rqueue
print(rqueue.__file__, file=sys.stderr)
from bench_common import payload
url, total, batch = {url!r}, {total}, {batch}
c = rqueue.connect(url)
q = c.create_queue("ab", visibility_timeout=30)
bodies = [payload(i) for i in range(total)]
t0, c0 = time.perf_counter(), time.process_time()
for i in range(0, total, batch):
    q.send_batch(bodies[i:i + batch])
t1, c1 = time.perf_counter(), time.process_time()
got = 0
while got < total:
    msgs = q.receive(batch)
    got += len(msgs)
    q.delete_batch([m.receipt for m in msgs])
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({{"send": total / (t1 - t0), "rd": total / (t2 - t1), "e2e": total / (t2 - t0),
                  "cpu_send": (c1 - c0) / total * 1e6, "cpu_rd": (c2 - c1) / total * 1e6}}))
"""


def one(who: str, python: str, total: int, batch: int) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [server_binary(), "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        r = redis.Redis(port=port)
        deadline = time.monotonic() + 20
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        url = f"redis://127.0.0.1:{port}/0"
        if who == "floor":
            cmd = [sys.executable, str(_floor.MINIMAL), "--url", url, "--json"]
            cmd += ["--batches", str(batch), "--total", str(total)]
            out = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            d = json.loads(out)
            return {"send": d["send_per_s"], "rd": d["receive_delete_per_s"], "e2e": d["end_to_end_per_s"]}
        code = RUN.format(bench=str(HERE), url=url, total=total, batch=batch)
        # Not from this checkout's root: `python -c` puts the working directory first on
        # sys.path, and the other checkout's Python would import this rqueue.
        with tempfile.TemporaryDirectory() as cwd:
            done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, cwd=cwd)
        out = json.loads(done.stdout)
        out["rqueue"] = done.stderr.strip().splitlines()[0]  # which checkout it imported
        return out  # type: ignore[no-any-return]
    finally:
        server.terminate()
        server.wait(20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the Python (venv) of the other checkout")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--total", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=100)
    a = ap.parse_args()
    rows: dict[str, list[dict[str, Any]]] = {"floor": [], "before": [], "after": []}
    for i in range(a.rounds):
        order = ["floor", "before", "after"] if i % 2 == 0 else ["after", "before", "floor"]
        for who in order:
            rows[who].append(one(who, a.before if who == "before" else sys.executable, a.total, a.batch))
        print(f"round {i + 1}: " + "  ".join(f"{w} e2e {rows[w][-1]['e2e']:,.0f}" for w in rows), flush=True)
    med = {w: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "rqueue"} for w, rs in rows.items()}
    print(f"batch {a.batch}, {a.total} messages, medians of {a.rounds} rounds")
    print(f"before: {rows['before'][0]['rqueue']}\nafter:  {rows['after'][0]['rqueue']}")
    for k, label in (("send", "send"), ("rd", "receive+delete"), ("e2e", "end-to-end")):
        f, b, n = med["floor"][k], med["before"][k], med["after"][k]
        print(f"{label:15s} floor {f:9,.0f}  before {b:9,.0f} ({b / f:.2f}x)  after {n:9,.0f} ({n / f:.2f}x)")
    for k in ("cpu_send", "cpu_rd"):
        print(f"client CPU us/msg {k[4:]:5s}: before {med['before'][k]:.2f}  after {med['after'][k]:.2f}")


if __name__ == "__main__":
    main()
