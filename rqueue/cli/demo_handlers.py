"""Handlers that ``rqueue demo`` and the docker-compose stack run in their workers.

``rqueue worker rqueue.demo_handlers:process_order --queue orders`` is a
working consumer for what ``rqueue produce`` sends: it "ships" an order in a
few milliseconds and returns a reply (what a sync request gets back), and it
fails on orders marked poison, so those are retried and then dead-lettered.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

log = logging.getLogger("rqueue.demo")


class UnknownSku(Exception):
    """A poison order: its handler always fails, so it ends as a dead letter."""


def process_order(order: Any) -> dict[str, Any]:
    """Ship an order (1-5 ms of "work"); poison orders raise."""
    if isinstance(order, dict) and order.get("poison"):
        raise UnknownSku(f"order {order.get('order')}: sku {order.get('sku')} is not in the catalogue")
    time.sleep(random.uniform(0.001, 0.005))
    number = order.get("order") if isinstance(order, dict) else None
    return {"order": number, "status": "shipped"}


def audit(event: Any) -> None:
    """A topic subscriber: write the event to the audit log."""
    log.debug("audit", extra={"event": event})


def email(event: Any) -> None:
    """Another topic subscriber: "send" a confirmation e-mail."""
    time.sleep(0.001)
    log.debug("email", extra={"event": event})


#: Checks, in Redis (every worker process shares it), that each customer's orders are
#: processed in the order they were placed: KEYS last (hash customer -> last seq), skipped
#: (counter: an order ran before an earlier one of its customer), checked (counter). A seq
#: at or below the last is a redelivery, not a skip.
_CHECK_ORDER = """
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
redis.call('INCR', KEYS[3])
if seq > last + 1 then redis.call('INCR', KEYS[2]) end
if seq > last then redis.call('HSET', KEYS[1], ARGV[1], seq) end
return last
"""


class _Checker:
    """One connection per worker process, made at the first order."""

    client: Any = None
    keys: tuple[str, ...] = ()


def order_check_keys(prefix: str) -> list[str]:
    """The keys customer_order writes (one hash tag: one script, also on Redis Cluster)."""
    base = f"{prefix}:{{demo-fifo-check}}"
    return [f"{base}:last", f"{base}:skipped", f"{base}:checked"]


def customer_order(order: dict[str, Any]) -> None:
    """A FIFO handler: a customer's orders must run in the order they were placed (the demo's
    FIFO queue groups them by customer); each run is checked against the last one seen."""
    if _Checker.client is None:
        import rqueue

        _Checker.client = rqueue.connect()
        _Checker.keys = tuple(order_check_keys(os.environ.get("RQUEUE_PREFIX", "rqueue")))
    time.sleep(random.uniform(0.001, 0.004))
    _Checker.client.redis.eval(_CHECK_ORDER, 3, *_Checker.keys, order["customer"], order["seq"])
