"""Call admission: how many calls of one client may use its connection pool
at once, and the slots the others wait for (threads, tasks)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import queue
from collections.abc import Callable
from typing import Any

#: Pool connections a client leaves to what runs beside its calls (the sync event
#: listener's connection, handing a wake-up token on).
CALL_RESERVE = 4


def call_limit(redis: Any) -> int:
    """How many calls of one client may use its pool at once.

    redis-py's pool fails with "Too many connections" past its size (100 unless
    ``max_connections`` says otherwise; per node on a cluster) instead of
    waiting; the clients let at most this many calls in, so more concurrent
    calls (threads, tasks, a consumer's handlers) wait for a free connection.
    """
    size = getattr(getattr(redis, "connection_pool", None), "max_connections", None)
    if size is None:
        kwargs = getattr(getattr(redis, "nodes_manager", None), "connection_kwargs", None) or {}
        size = kwargs.get("max_connections") or 100
    return max(1, int(size) - CALL_RESERVE)


class CallSlots:
    """At most ``n`` sync calls at once (see ``call_limit``); the rest wait.

    Tokens in a SimpleQueue (``take``/``give`` around a call): 0.07 us a call
    where a BoundedSemaphore costs 1.3.
    """

    __slots__ = ("give", "take")

    def __init__(self, n: int) -> None:
        tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(n):
            tokens.put(None)
        self.take: Callable[[], None] = tokens.get
        self.give: Callable[[], None] = functools.partial(tokens.put, None)


class AsyncCallSlots:
    """At most ``n`` asyncio calls at once; the rest wait, first come first served.

    ``take_now()`` is the synchronous fast path (no coroutine, unlike ``async
    with asyncio.Semaphore``); ``take()`` waits; ``give()`` hands a slot to
    the longest waiting caller, else frees it.
    """

    __slots__ = ("_free", "_waiting")

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_now(self) -> bool:
        if self._free and not self._waiting:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give()  # handed a slot just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(fut)
            raise

    def give(self) -> None:
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1
