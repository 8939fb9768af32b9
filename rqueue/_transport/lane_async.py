"""What the asyncio waiter and lane driver (``rqueue._async.waiter``,
``lane_driver``) do with tasks: the lane's connection, read by a task of its
own into futures, and the primitives the source awaits where the generated sync
copies block. The twin of ``lane_sync``; every decision is in ``lanes`` and
``blpop``, the drivers' control flow in ``rqueue._async.lane_driver``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from rqueue._transport.lanes import ASYNC_SPREAD, LaneWait

#: Lanes per server before waits share blocked lanes (see ``lanes.ASYNC_SPREAD``).
SPREAD = ASYNC_SPREAD
#: The lock of a node's control connection.
AsyncLock = asyncio.Lock


def state_lock() -> contextlib.nullcontext[None]:
    """The waiter's lock: none, one event loop runs its tasks one at a time."""
    return contextlib.nullcontext()


def new_handle() -> asyncio.Future[None]:
    """A new wait's handle, set when it finishes or is to drive its lane."""
    return asyncio.get_running_loop().create_future()


def rearm(w: LaneWait) -> asyncio.Future[None]:
    """The future ``w`` sleeps on until its value comes or it is to drive."""
    assert isinstance(w.handle, asyncio.Future)
    if w.handle.done():  # a call to drive that another driver took first
        w.handle = asyncio.get_running_loop().create_future()
    return w.handle


async def sleep_on(fut: asyncio.Future[None], timeout: float) -> None:
    timer = asyncio.get_running_loop().call_later(timeout, _Wake(fut), None)
    try:
        await fut
    finally:
        timer.cancel()


class AsyncBackgroundWork:
    """Tasks that run on after their caller (settling what a cancelled call left,
    handing a token on, closing a lane); the waiter's ``aclose`` waits for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def run(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in a task of its own (a lane's background driver)."""
        self.run(fn(*args))

    def later(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """``fn(*args)`` in the background: a cancelled caller must not wait on it."""
        self.run(fn(*args))

    async def settle(self, timeout: float) -> None:
        """Let what runs finish (up to ``timeout``)."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def end(self, timeout: float) -> None:
        """Let what runs finish (up to ``timeout``), then cancel the rest."""
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for t in late:
                t.cancel()


class _Wake:
    """A done-callback / timer callback that completes ``fut`` (once); equal
    for one future, so it can be removed again."""

    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut

    def __call__(self, _: object) -> None:
        if not self.fut.done():
            self.fut.set_result(None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Wake) and other.fut is self.fut

    def __hash__(self) -> int:
        return id(self.fut)


def honour_cancel() -> None:
    """Raise CancelledError if this task was cancelled but the cancellation got lost.

    Python 3.11's wait_for (redis-py sends through it) swallows a cancellation
    that lands just as the send it guards finishes; a wait that went on would
    run its whole timeout (a stopping consumer would hang that long). So each
    step of a wait looks at Task.cancelling().
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _Failed:
    """An error the reader met, handed to the driver as the BLPOP's answer."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class AsyncLaneLink:
    """How a lane's driver waits on its connection on asyncio (see
    ``rqueue._async.lane_driver``): a task of its own reads the connection and
    puts each answer into the in-flight BLPOP's future, so a driver that is
    cancelled leaves that future to the next driver instead of breaking the
    connection. ``poke`` completes a future the driver sleeps on.
    """

    def __init__(self) -> None:
        #: The answer of the BLPOP in flight (a reply, or _Failed).
        self.answer: asyncio.Future[Any] | None = None
        self._reading: asyncio.Future[None] | None = None
        self._poked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def poke(self) -> None:
        if not self._poked.done():
            self._poked.set_result(None)

    def attach(self, conn: Any) -> None:
        """Start reading ``conn`` (just connected)."""
        self._reading = asyncio.ensure_future(self._read(conn))

    def lost(self) -> bool:
        """Whether the connection's reader ended (the connection was lost)."""
        return self._reading is None or self._reading.done()

    def detach(self) -> None:
        """Stop reading the connection (it is dropped)."""
        self.answer = None
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
        self._reading = None

    async def _read(self, conn: Any) -> None:
        """Put every answer of ``conn`` into the in-flight BLPOP's future."""
        while True:
            try:
                # No socket_timeout: a BLPOP may block for long; the driver bounds the wait.
                got: Any = await conn.read_response(timeout=1e9)
            except ResponseError as e:  # MOVED/ASK: the connection itself is fine
                got = _Failed(e)
            except BaseException as e:  # lost (or closed): so is the BLPOP in flight
                if self.answer is not None and not self.answer.done():
                    self.answer.set_result(_Failed(e if isinstance(e, Exception) else RedisConnectionError("closed")))
                if not isinstance(e, Exception):
                    raise
                return
            if self.answer is not None and not self.answer.done():
                self.answer.set_result(got)

    async def send(self, conn: Any, blpop: bytes) -> None:
        """Send the BLPOP; its answer will come into a new future."""
        self.answer = asyncio.get_running_loop().create_future()
        try:
            await conn.send_packed_command([blpop], check_health=False)
        except BaseException:
            self.answer = None  # not sent, or lost with the connection
            raise

    def answered(self) -> bool:
        """Whether the BLPOP's answer came."""
        assert self.answer is not None
        return self.answer.done()

    async def answer_within(self, timeout: float) -> bool:
        """Whether the BLPOP's answer comes within ``timeout`` (pokes do not count)."""
        answer = self.answer
        assert answer is not None
        await asyncio.wait([answer], timeout=timeout)
        return answer.done()

    async def sleep(self, timeout: float) -> bool:
        """Until poked, the answer came, or ``timeout`` (one future and one timer:
        cheaper than asyncio.wait, and this runs on every BLPOP); whether it came."""
        answer = self.answer
        assert answer is not None
        poked = self._poked
        if not poked.done():
            answer.add_done_callback(_Wake(poked))
            timer = asyncio.get_running_loop().call_later(timeout, _Wake(poked), None)
            try:
                await poked  # cancelled with this task: harmless, a fresh one is made
            finally:
                timer.cancel()
                answer.remove_done_callback(_Wake(poked))
        if poked.done():
            self._poked = asyncio.get_running_loop().create_future()
        return answer.done()

    async def read(self) -> Any:
        """The BLPOP's answer (it came): [key, value] or None; raises what the reader met."""
        answer, self.answer = self.answer, None
        assert answer is not None
        got = answer.result()
        if isinstance(got, _Failed):
            raise got.error
        return got
