"""Handlers that ``rqueue demo`` and the docker-compose stack run in their workers.

``rqueue worker rqueue.demo_handlers:process_order --queue orders`` is a
working consumer for what ``rqueue produce`` sends: it "ships" an order in a
few milliseconds and returns a reply (what a sync request gets back), and it
fails on orders marked poison, so those are retried and then dead-lettered.
"""

from __future__ import annotations

import logging
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
