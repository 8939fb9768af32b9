"""A load generator: what ``rqueue produce`` runs and what drives ``rqueue demo``.

Sends orders to a queue at a steady rate. A share of them go as sync
requests (waiting for the consumer's reply, on a small thread pool so the
pace holds), a share as tracked sends (counting the events that come back),
the rest as plain batched sends; optionally each order is also published to
a topic. A share can be "poison": the demo handler fails on them, so they are
retried and end in the dead-letter queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rqueue._protocol.errors import RQueueError
from rqueue._protocol.models import Event
from rqueue._sync.client import Client

log = logging.getLogger("rqueue.load")

#: The pace is kept by sending what is due every tick.
TICK = 0.02


@dataclass
class LoadCounts:
    """What the generator did so far (a snapshot)."""

    sent: int = 0
    plain: int = 0
    poison: int = 0
    requests: int = 0
    replies: int = 0
    request_timeouts: int = 0
    request_errors: int = 0
    tracked: int = 0
    events: dict[str, int] = field(default_factory=dict)
    published: int = 0
    send_errors: int = 0
    reply_ms: list[float] = field(default_factory=list)

    def reply_p50(self) -> float | None:
        if not self.reply_ms:
            return None
        return sorted(self.reply_ms)[len(self.reply_ms) // 2]


def order(i: int, poison: bool) -> dict[str, Any]:
    """The body of order ``i``."""
    body: dict[str, Any] = {"order": i, "sku": f"SKU-{i % 97:04d}", "qty": 1 + i % 5}
    if poison:
        body["poison"] = True
    return body


class LoadGenerator:
    """Sends to ``queue`` (and publishes to ``topic``) at ``rate`` per second."""

    def __init__(
        self,
        client: Client,
        queue: str,
        *,
        rate: float,
        requests_pct: float = 0,
        tracked_pct: float = 0,
        poison_pct: float = 0,
        topic: str | None = None,
        request_timeout: float = 10.0,
        max_pending_requests: int = 16,
    ) -> None:
        self.client = client
        self.queue = client.queue(queue)
        self.topic = client.topic(topic) if topic else None
        self.rate = rate
        self.requests_pct = requests_pct
        self.tracked_pct = tracked_pct
        self.poison_pct = poison_pct
        self.request_timeout = request_timeout
        self.max_pending = max_pending_requests
        self._counts = LoadCounts()
        self._events: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pending = 0
        self._pool = ThreadPoolExecutor(max_workers=max_pending_requests, thread_name_prefix="rqueue-request")
        self.stopped = threading.Event()

    # -- what was done

    def counts(self) -> LoadCounts:
        with self._lock:
            c = self._counts
            return LoadCounts(
                c.sent,
                c.plain,
                c.poison,
                c.requests,
                c.replies,
                c.request_timeouts,
                c.request_errors,
                c.tracked,
                dict(self._events),
                c.published,
                c.send_errors,
                list(c.reply_ms[-2000:]),
            )

    # -- the loop

    def kind_of(self, i: int) -> str:
        """request, tracked or plain: a fixed pattern, so a short run has each."""
        slot = (i * 7) % 100
        if slot < self.requests_pct:
            return "request"
        if slot < self.requests_pct + self.tracked_pct:
            return "tracked"
        return "plain"

    def is_poison(self, i: int) -> bool:
        return (i * 37 + 11) % 100 < self.poison_pct

    def produce(self, stop: threading.Event, seconds: float | None = None) -> None:
        """Send until ``stop`` is set or ``seconds`` pass; then wait for pending requests."""
        start = time.monotonic()
        i = 0
        try:
            while not stop.is_set():
                elapsed = time.monotonic() - start
                if seconds is not None and elapsed >= seconds:
                    break
                due = int(elapsed * self.rate) + 1 - i
                if due > 0:
                    self._send(range(i, i + due))
                    i += due
                stop.wait(TICK if self.rate * TICK >= 1 else min(TICK * 5, 1 / self.rate))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=False)
            self.stopped.set()

    def _send(self, numbers: range) -> None:
        plain: list[dict[str, Any]] = []
        for i in numbers:
            kind = self.kind_of(i)
            if kind == "request" and self._pending < self.max_pending:
                self._request(order(i, False))
            elif kind == "tracked":
                self._tracked(order(i, self.is_poison(i)))
            else:
                plain.append(order(i, self.is_poison(i)))
        try:
            if plain:
                self.queue.send_batch(plain)
                with self._lock:
                    self._counts.sent += len(plain)
                    self._counts.plain += len(plain)
                    self._counts.poison += sum(1 for b in plain if b.get("poison"))
            if self.topic is not None:
                events = [{"event": "order_placed", "order": i} for i in numbers]
                self.topic.publish_batch(events)
                with self._lock:
                    self._counts.published += len(events)
        except RQueueError as e:
            with self._lock:
                self._counts.send_errors += 1
            log.warning("send failed: %s", e, extra={"queue": self.queue.name})

    def _request(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._pending += 1
            self._counts.requests += 1
            self._counts.sent += 1
        self._pool.submit(self._do_request, body)

    def _do_request(self, body: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            self.queue.request(body, timeout=self.request_timeout)
        except TimeoutError:
            with self._lock:
                self._counts.request_timeouts += 1
        except Exception as e:  # noqa: BLE001 - counted and logged, the generator goes on
            with self._lock:
                self._counts.request_errors += 1
            log.warning("request failed: %s", e, extra={"queue": self.queue.name})
        else:
            with self._lock:
                self._counts.replies += 1
                self._counts.reply_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            with self._lock:
                self._pending -= 1

    def _tracked(self, body: dict[str, Any]) -> None:
        def on_event(event: Event) -> None:
            with self._lock:
                self._events[str(event.kind)] += 1

        try:
            self.queue.send(body, on_event=on_event)
        except RQueueError as e:
            with self._lock:
                self._counts.send_errors += 1
            log.warning("tracked send failed: %s", e, extra={"queue": self.queue.name})
            return
        with self._lock:
            self._counts.tracked += 1
            self._counts.sent += 1
            if body.get("poison"):
                self._counts.poison += 1
