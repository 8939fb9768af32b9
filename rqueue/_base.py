"""What the sync and asyncio clients share besides the core: error mapping
and the queue handle's identity."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
from collections.abc import Callable
from typing import Any, NoReturn

from redis import exceptions as rx

from . import _errors
from ._keys import QueueKeys

#: redis-py errors that mean "the server is unreachable or failing over".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ClusterDownError,
    rx.TryAgainError,
    rx.MasterNotFoundError if hasattr(rx, "MasterNotFoundError") else rx.ConnectionError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,
)


def raise_mapped(e: BaseException, url: str, queue: str) -> NoReturn:
    """Re-raise a redis-py error as the rqueue error it means."""
    if isinstance(e, rx.ResponseError) and not isinstance(e, rx.ReadOnlyError):
        mapped = _errors.from_lua(str(e), queue)
        if mapped is not None:
            raise mapped from None
        raise e
    if isinstance(e, CONNECTION_ERRORS):
        raise _errors.ConnectionError(f"cannot reach {url}: {e}") from e
    raise e


class QueueHandle:
    """Identity of a queue handle: name and keys. No I/O."""

    __slots__ = ("_keys",)

    def __init__(self, keys: QueueKeys) -> None:
        self._keys = keys

    @property
    def name(self) -> str:
        """The queue's name (``<source>:dlq`` for a dead-letter queue)."""
        return self._keys.name

    @property
    def is_dead_letter_queue(self) -> bool:
        return self._keys.is_dlq

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueueHandle) and type(other) is type(self) and other._keys == self._keys

    def __hash__(self) -> int:
        return hash(self._keys)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def policy_from(reply: Any) -> str | None:
    """maxmemory-policy out of a CONFIG GET reply (dict, or dict per node)."""
    if isinstance(reply, dict):
        for k, v in reply.items():
            if isinstance(v, dict):
                return policy_from(v)
            if (k.decode() if isinstance(k, bytes) else k) == "maxmemory-policy":
                return v.decode() if isinstance(v, bytes) else str(v)
    return None


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
        self.give: Callable[[None], None] = tokens.put


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
