"""Blocking waits of one client, multiplexed over a few connections ("lanes").

The asyncio waiter is the source: ``scripts/unasync`` generates the sync one
(``rqueue._sync.waiter``). The bookkeeping is in ``rqueue._transport.lanes``
(no I/O), the lanes' driver in the ``lane_driver`` module beside this one (generated
too), what tasks and threads do differently in ``rqueue._transport.lane_*``.

Why: a long poll, or a request waiting for its reply, used to hold a pool
connection each, so about a hundred waiters exhausted redis-py's pool and the
client's ordinary calls failed. Now the waits of a client share lanes: a lane
is one connection of its own (never one of the pool's) blocked in one BLPOP on
the keys of its waiters, up to ``LANE_KEYS`` of them. When a wake-up token or a
reply is popped, it goes to the first waiter on that key and the lane blocks
again on the keys still waited for. Any number of waiters costs a few
connections, and ordinary calls keep the whole pool.

Who drives a lane: one of its own waiters (leader/follower). A waiter whose
lane has no driver drives it in its own thread or task, and the others wait
until it hands them their value; when the driver's own wait ends it hands the
lane to another of its waiters, or, if a BLPOP is still on the way with nobody
left to read it, to a short-lived background driver. So a lone waiter (a
request, a consumer's long poll) pays no thread or task switch at all.

Exact timeouts: a server times out a blocked BLPOP only on its periodic tick
(100 ms at the default ``hz 10``), so the driver keeps its waiters' deadlines
itself. At the earliest one, or when a waiter joins on a key the BLPOP in
flight does not name, it releases the BLPOP with ``CLIENT UNBLOCK`` sent on a
small control connection per server, reads what it got (a value popped just
before still goes to its waiter) and blocks again. Where ACLs forbid CLIENT
UNBLOCK, a blocked lane takes no new key (a waiter gets a lane that is not
blocked, or a new one, up to the limit) and its waiters time out on the
server's tick.

On Redis Cluster one BLPOP names keys of one hash slot only, so a lane serves
one slot of one node at a time. Lanes idle for ``LINGER`` seconds are closed.

``pop`` is a wait that returns the popped value: a request's sender waits for
its reply this way.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rqueue._async.lane_driver import AsyncLaneDriver
from rqueue._transport import lane_async as lane_io
from rqueue._transport.lanes import AGAIN, DEFAULT_MAX_LANES, GRACE, Lanes, LaneWait, connection_maker, unbounded


class _AsyncNode:
    """One server of a client: how to make lane connections, and the control
    connection that sends CLIENT UNBLOCK (never one of the pool's)."""

    def __init__(self, cls: Any, kwargs: dict[str, Any]) -> None:
        self._class = cls
        self._kwargs = unbounded(kwargs)
        self._lock = lane_io.AsyncLock()
        self._probing = lane_io.AsyncLock()
        self._control: Any = None
        #: None until probed: whether ACLs allow CLIENT UNBLOCK.
        self.can_unblock: bool | None = None

    async def connection(self) -> Any:
        conn = self._class(**self._kwargs)
        try:
            await conn.connect()  # explicitly: a Sentinel connection finds the master here
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise
        return conn

    async def lane_connection(self) -> tuple[Any, int]:
        """A new connection for a lane, and its client id (what CLIENT UNBLOCK names)."""
        conn = await self.connection()
        try:
            await conn.send_command("CLIENT", "ID")
            return conn, int(await conn.read_response(timeout=GRACE))
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise

    async def _command(self, *args: Any) -> Any:
        async with self._lock:
            conn = self._control
            try:
                if conn is None:
                    conn = self._control = await self.connection()
                lane_io.honour_cancel()  # unasync: remove
                await conn.send_command(*args)
                reply = await conn.read_response(timeout=GRACE)
            except ResponseError:
                raise
            except BaseException:
                self._control = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.disconnect()
                raise
            if reply is None:  # asyncio's read_response timed out (the sync one raises)
                self._control = None
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                raise RedisTimeoutError("no answer on the control connection")
            return reply

    async def probe(self) -> None:
        """Learn once whether CLIENT UNBLOCK is allowed (unblocking oneself is a no-op;
        many first waiters ask once)."""
        async with self._probing:
            if self.can_unblock is None:
                own = await self._command("CLIENT", "ID")
                try:
                    await self._command("CLIENT", "UNBLOCK", own)
                    self.can_unblock = True
                except ResponseError:  # NOPERM: lanes time out on the server's tick
                    self.can_unblock = False

    async def unblock(self, client_id: int) -> bool:
        try:
            return bool(await self._command("CLIENT", "UNBLOCK", client_id))
        except ResponseError:
            self.can_unblock = False
            return False

    async def alive(self, client_id: int) -> bool:
        """Whether the server still has the lane's connection (where ACLs let us ask)."""
        try:
            return bool(await self._command("CLIENT", "LIST", "ID", client_id))
        except ResponseError:
            return True

    async def close(self) -> None:
        conn, self._control = self._control, None  # unasync: with self._lock: conn, self._control = self._control, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()


class AsyncWaiter:
    """Blocking waits for a ``Redis`` or ``RedisCluster`` client, multiplexed over lanes."""

    def __init__(self, client: Any, url: str = "", max_lanes: int = DEFAULT_MAX_LANES) -> None:
        self.client = client
        self._cluster = hasattr(client, "get_node_from_key")
        self._nodes: dict[str, _AsyncNode] = {}
        self._start(Lanes(url, max_lanes, lane_io.SPREAD))

    def _start(self, core: Lanes) -> None:
        #: Guards ``core`` and the lanes (the sync waiter's threads share them; asyncio needs none).
        self.lock = lane_io.state_lock()
        self.core = core
        self.background = lane_io.AsyncBackgroundWork()
        self._pid = os.getpid()

    async def _node(self, key: str) -> tuple[str, int | None, _AsyncNode]:
        if self._cluster:
            n = self.client.get_node_from_key(key)
            name, slot = n.name, self.client.keyslot(key)
            maker = connection_maker(n)
        else:
            maker = self.client.connection_pool
            name, slot = "", None
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes.setdefault(name, _AsyncNode(maker.connection_class, maker.connection_kwargs))
        if node.can_unblock is None:
            await node.probe()
        return name, slot, node

    async def join(self, key: str, timeout: float, pop: bool) -> LaneWait:
        """Start a wait on ``key`` (``pop``: for the value pushed on it); nothing
        is awaited once it is registered."""
        if os.getpid() != self._pid:  # forked: the parent's lanes (and lock holders) are not this process's
            self._nodes = {}
            self._start(Lanes(self.core.url, self.core.max_lanes, lane_io.SPREAD))
        if self.core.closed:
            raise self.core.closed_error()
        name, slot, node = await self._node(key)
        lane_io.honour_cancel()  # unasync: remove
        now = time.monotonic()
        w = LaneWait(key, now + timeout, pop, lane_io.new_handle())
        with self.lock:
            idle = self.core.reap(now)
            lane, new = self.core.place(w, name, slot, bool(node.can_unblock))
            if new:
                lane.runner = AsyncLaneDriver(self, lane, node)
            driven = lane.driver is not None
        for old in idle:
            old.runner.discard()
        if driven:
            lane.runner.poke()
        return w

    async def result(self, w: LaneWait, timeout: float) -> Any:
        """The wait's value (bytes, AGAIN or None), driving its lane whenever
        nobody else does. An interrupted caller must ``leave``."""
        assert w.lane is not None
        fail_at = time.monotonic() + timeout + 2 * GRACE  # a lane always answers well before this
        while True:
            with self.lock:
                if w.done:
                    break
                lane = w.lane
                lead = lane.driver is None and not lane.retired
                if lead:
                    lane.driver = w
                else:
                    handle = lane_io.rearm(w)
            if lead:
                await lane.runner.drive(w)
                continue
            now = time.monotonic()
            if now >= fail_at:
                self.leave(w)
                raise RedisTimeoutError("no answer from the connection waiting for it")
            # Woken by its value or a call to drive; past its deadline it looks at the lane again.
            await lane_io.sleep_on(handle, min(fail_at, max(w.deadline, now) + 0.25) - now)
        if w.error is not None:
            raise w.error
        return w.value

    def waiting(self) -> int:
        """How many waits are registered (for tests and diagnostics)."""
        with self.lock:
            return self.core.waiting()

    def leave(self, w: LaneWait) -> Any:
        """End a wait early; the value it got if it had already finished."""
        with self.lock:
            got = self.core.leave(w)
            lane = w.lane
            runner = lane.runner if lane is not None and lane.driver is not None else None
        if runner is not None:
            runner.poke()  # its driver re-plans (or, if it was this wait, hands the lane on)
        return got

    async def wait(
        self, key: str, timeout: float, *, on_block: Callable[[Callable[[], None]], None] | None = None
    ) -> bool:
        """True when a token was popped, False on timeout (or when ended early).

        ``on_block`` is called once the wait is registered with a function that
        ends it early (from another thread; on asyncio, in the event loop's).
        """
        w = await self.join(key, timeout, False)
        try:
            if on_block is not None:

                def unblock() -> None:
                    self.leave(w)

                on_block(unblock)
            return await self.result(w, timeout) is not None
        except BaseException:
            if self.leave(w) is not None:  # interrupted after a token came: it is not ours to keep
                self.hand_on_later(key)
            raise

    def hand_on_later(self, key: str | bytes) -> None:
        """hand_on in the background: a cancelled caller must not wait on it (sync: now)."""
        self.background.later(self.hand_on, key)

    async def hand_on(self, key: str | bytes) -> None:
        """Push a wake-up token for another waiter (best effort).

        A waiter that leaves abnormally, or wakes when it will not receive,
        may hold the token a send pushed; without this the other waiters would
        sleep on while a message is visible. At worst it is one spurious wake-up.
        """
        with contextlib.suppress(Exception):
            await self.client.rpush(key, 1)
            await self.client.ltrim(key, 0, 0)

    async def pop(self, key: str, timeout: float) -> bytes | None:
        """The value popped from ``key``, or None on timeout."""
        w = await self.join(key, timeout, True)
        try:
            value = await self.result(w, timeout)
        except BaseException:
            self.leave(w)
            raise
        return None if value is AGAIN else value

    async def aclose(self, timeout: float = GRACE) -> None:
        """Let background work finish (settling what cancelled callers left),
        end every wait ('client is closed'), close the lanes."""
        await self.background.settle(timeout)  # unasync: remove
        with self.lock:
            lanes = self.core.close()
            idle = [ln for ln in lanes if ln.driver is None and ln.runner is not None]
        for lane in lanes:
            if lane.runner is not None:
                lane.runner.poke()  # its driver sees the lane retired and closes it
        for lane in idle:
            await lane.runner.close()
        await self.background.end(timeout)
        for node in list(self._nodes.values()):
            await node.close()
