"""Handlers that worker processes in the consumer tests run (configured by env).

Each call appends ``<event> <id> <receive_count> <pid>`` to RQ_TEST_LOG with one
O_APPEND write (atomic for short lines), so the test reads what happened.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import rqueue

LOG = os.environ.get("RQ_TEST_LOG", "/dev/null")
SLEEP = float(os.environ.get("RQ_TEST_SLEEP", "0"))
FAIL_RATE = float(os.environ.get("RQ_TEST_FAIL_RATE", "0"))
_fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def note(event: str, m: rqueue.Message) -> None:
    os.write(_fd, f"{event} {m.body['i']} {m.receive_count} {os.getpid()}\n".encode())


def fails(i: int, receive_count: int, rate: float | None = None) -> bool:
    """Deterministic 'random' failure, seeded per message and attempt."""
    return random.Random(f"{i}:{receive_count}").random() < (FAIL_RATE if rate is None else rate)


def record(m: rqueue.Message) -> None:
    note("start", m)
    if SLEEP:
        time.sleep(SLEEP)
    if fails(m.body["i"], m.receive_count):
        note("fail", m)
        raise RuntimeError(f"planned failure of {m.body['i']}")
    note("done", m)


async def record_async(m: rqueue.Message) -> None:
    note("start", m)
    if SLEEP:
        await asyncio.sleep(SLEEP)
    if fails(m.body["i"], m.receive_count):
        note("fail", m)
        raise RuntimeError(f"planned failure of {m.body['i']}")
    note("done", m)
