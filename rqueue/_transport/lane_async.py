"""What the asyncio waiter (``rqueue._async.waiter``) does with tasks: its
lanes' driver (a reader task per lane connection, answers in futures), and the
primitives its source awaits where the generated sync waiter blocks. The twin
of ``lane_sync``; every decision both drivers make is in ``lanes.Lanes``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from rqueue._transport.blpop import PROBE, RELEASE, Watch, blpop_command, release_delays
from rqueue._transport.lanes import (
    _BACKGROUND,
    _STOP,
    AGAIN,
    ASYNC_SPREAD,
    Lane,
    Wait,
)

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


def rearm(w: Wait) -> asyncio.Future[None]:
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


def node_connection(node: Any) -> tuple[Any, dict[str, Any]]:
    """How to connect to a cluster node: its connection class and options."""
    return node.connection_class, node.connection_kwargs


class AsyncBackground:
    """Tasks that run on after their caller (settling what a cancelled call left,
    handing a token on, closing a lane); the waiter's ``aclose`` waits for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def run(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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


class AsyncLaneDriver:
    """The I/O of one lane, run by whichever task drives it (see ``lane_sync.LaneDriver``).

    The lane's connection is read by a task of its own, which puts each answer
    into the in-flight BLPOP's future: a driver that is cancelled leaves that
    future to the next driver instead of breaking the connection.
    """

    def __init__(self, hub: Any, lane: Lane, node: Any) -> None:
        self.hub = hub
        self.lane = lane
        self.node = node
        self.conn: Any = None
        self.client_id = 0
        #: The answer of the BLPOP in flight (a reply, or _Failed).
        self.answer: asyncio.Future[Any] | None = None
        self._reading: asyncio.Future[None] | None = None
        self._poked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def poke(self) -> None:
        if not self._poked.done():
            self._poked.set_result(None)

    async def _sleep(self, timeout: float, answer: asyncio.Future[Any]) -> None:
        """Until poked, ``answer`` is done, or ``timeout`` (one future and one
        timer: cheaper than asyncio.wait, and this runs on every BLPOP)."""
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

    async def _connect(self) -> None:
        conn, self.client_id = await self.node.lane_connection()
        self.conn = conn
        self._reading = asyncio.ensure_future(self._read(conn))

    async def _read(self, conn: Any) -> None:
        """Put every answer of ``conn`` into the in-flight BLPOP's future."""
        while True:
            try:
                # No socket_timeout: a BLPOP may block for long; _answer bounds the wait.
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

    def _drop_connection(self) -> Any:
        conn, self.conn = self.conn, None
        self.answer = None
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()
        self._reading = None
        return conn

    def discard(self) -> None:
        """Close the lane in the background (retired while idle)."""
        self.hub.background.run(self.close())

    async def close(self) -> None:
        """Close the connection (the lane is retired, nobody drives it)."""
        conn = self._drop_connection()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def drive(self, me: Wait | None) -> None:
        """Run the lane's BLPOPs in this task until ``me`` has finished (None:
        until the lane is idle), then hand the lane on."""
        core, lane = self.hub.core, self.lane
        try:
            while (step := core.next_step(lane, me, bool(self.node.can_unblock))) != "stop":
                if me is not None:
                    honour_cancel()
                if lane.blocked is None:
                    if self.conn is not None and (self._reading is None or self._reading.done()):
                        self.hub.background.run(_disconnect(self._drop_connection()))  # it was lost while idle
                    if self.conn is None:
                        await self._connect()
                        continue  # (a step: the cancellation may have been lost in it)
                    keys = core.plan(lane, time.monotonic())
                    if not keys:
                        continue
                    blpop = blpop_command(self.conn, keys, lane.block_until - time.monotonic())
                    self.answer = asyncio.get_running_loop().create_future()
                    try:
                        await self.conn.send_packed_command([blpop], check_health=False)
                    except BaseException:
                        lane.blocked, self.answer = None, None  # not sent, or lost with the connection
                        raise
                reply = await self._answer(None if step == "last" else me)
                if reply is _STOP:
                    continue
                orphan = core.popped(lane, reply, time.monotonic())
                if orphan is False:
                    self.hub.hand_on_later(reply[0])  # a wake-up nobody here waits for any more
        except Exception as e:  # noqa: BLE001 - the connection failed: so do the lane's waits
            core.fail(lane, e)
        except BaseException:  # this task was cancelled: the answer (if any) goes on for the next driver
            if self.conn is not None and not self.conn.is_connected:
                lane.blocked = None
                self.hub.background.run(_disconnect(self._drop_connection()))
            raise
        finally:
            self._after(me)

    def _after(self, me: Wait | None) -> None:
        core, lane = self.hub.core, self.lane
        nxt = core.hand_over(lane, me, time.monotonic())
        if isinstance(nxt, Wait):
            nxt.signal()
        elif nxt is _BACKGROUND:
            self.hub.background.run(self.drive(None))
        elif lane.retired:
            self.hub.background.run(self.close())

    async def _answer(self, me: Wait | None) -> Any:
        """What the BLPOP in flight got (see ``lane_sync.LaneDriver._answer``)."""
        answer = self.answer
        assert answer is not None
        watch = Watch(self.hub.core, self.lane, me)
        while not answer.done():
            now = time.monotonic()
            step = watch.next(now, bool(self.node.can_unblock))
            if step is _STOP:
                return _STOP
            if me is not None:
                honour_cancel()
            if step == PROBE:
                if not await self.node.alive(self.client_id):
                    raise RedisConnectionError("the connection of a blocked BLPOP was lost")
                watch.alive(now)
                continue
            if step == RELEASE:
                await self._release(answer)
                watch.released()
                continue
            assert isinstance(step, float)
            await self._sleep(step, answer)
        self.answer = None
        got = answer.result()
        if isinstance(got, _Failed):
            if isinstance(got.error, ResponseError):
                return AGAIN  # MOVED/ASK during a resharding: look again
            raise got.error
        return got

    async def _release(self, answer: asyncio.Future[Any]) -> None:
        """CLIENT UNBLOCK until it works or the BLPOP answers (see ``release_delays``)."""
        for delay in release_delays():
            if await self.node.unblock(self.client_id) or not self.node.can_unblock:
                return
            await asyncio.wait([answer], timeout=delay)
            if answer.done():
                return


async def _disconnect(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.disconnect()
