"""``rqueue bench``: a short throughput measurement on a throwaway queue.

Sends N messages in batches, then receives and deletes them in batches, from
one thread, and reports messages per second for each phase. It measures the
client, the scripts and the round trip to this server, nothing else.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rqueue._protocol.keys import QueueKeys
from rqueue._sync.client import Client


@dataclass(frozen=True, slots=True)
class BenchResult:
    messages: int
    batch: int
    body_bytes: int
    send_seconds: float
    drain_seconds: float

    @property
    def send_rate(self) -> float:
        return self.messages / self.send_seconds if self.send_seconds else 0.0

    @property
    def drain_rate(self) -> float:
        return self.messages / self.drain_seconds if self.drain_seconds else 0.0


def body_of(size: int, i: int) -> dict[str, object]:
    """A JSON order of about ``size`` bytes."""
    return {"order": i, "sku": "SKU-0042", "qty": 3, "note": "x" * max(0, size - 60)}


def measure(
    client: Client,
    *,
    messages: int,
    batch: int,
    body_bytes: int,
    progress: Callable[[str, int], None] = lambda _phase, _n: None,
) -> BenchResult:
    """Send then drain ``messages`` on a new queue, deleted afterwards."""
    name = "bench-" + uuid.uuid4().hex[:12]
    q = client.create_queue(name, visibility_timeout=60)
    try:
        bodies = [body_of(body_bytes, i) for i in range(batch)]
        t0 = time.perf_counter()
        sent = 0
        while sent < messages:
            n = min(batch, messages - sent)
            q.send_batch(bodies[:n])
            sent += n
            progress("send", n)
        t1 = time.perf_counter()
        drained = 0
        while drained < messages:
            got = q.receive(batch)
            if not got:
                break
            q.delete_batch([m.receipt for m in got])
            drained += len(got)
            progress("drain", len(got))
        t2 = time.perf_counter()
    finally:
        client.delete_queue(name)
        # A deleted queue keeps its id counter (for a queue made again under its name); no
        # queue will ever have this throwaway name again.
        client.redis.delete(QueueKeys.for_queue(client.prefix, name).seq)
    return BenchResult(messages, batch, body_bytes, t1 - t0, t2 - t1)
