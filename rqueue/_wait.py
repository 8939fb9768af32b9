"""Blocking waits of one client, multiplexed over a few connections ("lanes").

Why: a long poll, or a request waiting for its reply, used to hold a pool
connection each, so about a hundred waiters exhausted redis-py's pool and the
client's ordinary calls failed. Now the waits of a client share lanes: a lane
is one connection of its own (never one of the pool's) blocked in one BLPOP on
the keys of its waiters, up to ``LANE_KEYS`` of them. When a wake-up token or a
reply is popped, the lane hands it to the first waiter on that key and blocks
again on the keys still waited for. Any number of waiters costs a few
connections, and ordinary calls keep the whole pool.

Exact timeouts: a server times out a blocked BLPOP only on its periodic tick
(100 ms at the default ``hz 10``), so a lane keeps its waiters' deadlines
itself. At the earliest one, or when a waiter joins on a key it does not block
on, it releases its BLPOP with ``CLIENT UNBLOCK`` sent on a small control
connection per server, reads what the BLPOP got (a value popped just before
still goes to its waiter) and blocks again. Where ACLs forbid CLIENT UNBLOCK, a
blocked lane is never extended (a new waiter gets a lane that is not blocked,
or a new one, up to the limit) and its waiters time out on the server's tick.

On Redis Cluster one BLPOP names keys of one hash slot only, so a lane serves
one slot of one node at a time. Lanes idle for ``LINGER`` seconds close.

``pop`` is a wait that returns the popped value: a request's sender waits for
its reply this way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ._errors import ConnectionError, InvalidParameter

#: Keys one lane blocks on before waits spread to another lane.
LANE_KEYS = 64
#: Lanes per server opened before new waiters join lanes that are blocked (and must be released).
SPREAD = 4
#: Connections a client may hold for waiting, unless ``max_wait_connections`` says otherwise.
DEFAULT_MAX_LANES = 256
#: An idle lane keeps its connection this long for the next waiter.
LINGER = 10.0
#: How long a lane waits for its BLPOP's answer after releasing it before it counts as lost.
GRACE = 5.0


def _server_timeout(timeout: float) -> float:
    # 0 would mean "forever"; the server counts whole milliseconds.
    return max(0.001, math.ceil(timeout * 1000) / 1000)


def check_max_lanes(value: object) -> int:
    """``max_wait_connections`` of ``connect()``: an int from 1 to 100000."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise InvalidParameter(f"max_wait_connections must be an integer from 1 to 100000, got {value!r}")
    return value


class _Again:
    """What a wait gets when its slot moved (MOVED/ASK): look again."""


AGAIN = _Again()


class Waiter:
    """One waiting call: its key, deadline and outcome."""

    __slots__ = ("deadline", "done", "error", "handle", "key", "lane", "pop", "value")

    def __init__(self, key: str, deadline: float, pop: bool, handle: threading.Event | asyncio.Future[None]) -> None:
        self.key = key
        self.deadline = deadline
        self.pop = pop
        #: What the waiting thread or task blocks on: set when it finishes.
        self.handle = handle
        self.lane: Lane | None = None
        self.done = False
        #: The popped value (bytes), AGAIN, or None (timed out or left).
        self.value: Any = None
        self.error: BaseException | None = None

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        if not self.done:
            self.done = True
            self.value = value
            self.error = error
            if isinstance(self.handle, threading.Event):
                self.handle.set()
            elif not self.handle.done():
                self.handle.set_result(None)


class Lane:
    """The bookkeeping of one lane (no I/O): its waiters and what it blocks on."""

    __slots__ = ("block_until", "blocked", "node", "orphans", "replan", "retired", "runner", "slot", "waiters")

    def __init__(self, node: str) -> None:
        self.node = node
        #: The hash slot of its waiters' keys on a cluster (None: any).
        self.slot: int | None = None
        self.waiters: dict[str, collections.deque[Waiter]] = {}
        #: The keys of the BLPOP in flight, or None when not blocked.
        self.blocked: frozenset[str] | None = None
        #: When the server times the BLPOP in flight out by itself.
        self.block_until = 0.0
        #: Keys of the BLPOP in flight nobody waits on any more: key -> was a pop.
        self.orphans: dict[str, bool] = {}
        #: The BLPOP in flight names other keys than the waiters' now.
        self.replan = False
        self.retired = False
        self.runner: Any = None

    def size(self) -> int:
        return len(self.waiters)

    def deadline(self) -> float:
        return min((w.deadline for q in self.waiters.values() for w in q), default=math.inf)


class Lanes:
    """Which lane each waiter goes to, and what a lane does next. No I/O: the
    sync and asyncio runners below share it (the sync one under a lock)."""

    def __init__(self, url: str, max_lanes: int) -> None:
        self.url = url
        self.max_lanes = max_lanes
        self.by_node: dict[str, list[Lane]] = {}
        self.by_key: dict[str, Lane] = {}
        self.count = 0
        self.closed = False

    def waiting(self) -> int:
        """How many waits are registered (for tests and diagnostics)."""
        return sum(len(q) for lanes in self.by_node.values() for ln in lanes for q in ln.waiters.values())

    def closed_error(self) -> ConnectionError:
        return ConnectionError(f"the client of {self.url} is closed; its waiting calls ended")

    def place(self, w: Waiter, node: str, slot: int | None, can_unblock: bool) -> tuple[Lane, bool]:
        """Add ``w`` to a lane: (lane, whether the lane is new and must be started)."""
        if self.closed:
            raise self.closed_error()
        lane = self.by_key.get(w.key)
        new = False
        if lane is None or (
            # Without CLIENT UNBLOCK a blocked lane cannot take a new key or an earlier deadline.
            not can_unblock
            and lane.blocked is not None
            and (w.key not in lane.blocked or w.deadline < lane.block_until)
        ):
            lane, new = self._choose(node, slot, can_unblock)
        q = lane.waiters.get(w.key)
        if q is None:
            q = lane.waiters[w.key] = collections.deque()
            if lane.blocked is not None and w.key not in lane.blocked:
                lane.replan = True
        q.append(w)
        lane.slot = slot
        lane.orphans.pop(w.key, None)
        self.by_key[w.key] = lane
        w.lane = lane
        return lane, new

    def _choose(self, node: str, slot: int | None, can_unblock: bool) -> tuple[Lane, bool]:
        lanes = self.by_node.setdefault(node, [])
        fits = [ln for ln in lanes if not ln.retired and (not ln.waiters or ln.slot == slot)]
        roomy = [ln for ln in fits if ln.size() < LANE_KEYS]
        # Not blocked, so joining costs no CLIENT UNBLOCK.
        free = [ln for ln in roomy if ln.blocked is None]
        if free:
            return min(free, key=Lane.size), False
        if len(lanes) < SPREAD and self.count < self.max_lanes:
            return self._new(node), True
        if can_unblock and roomy:
            return min(roomy, key=Lane.size), False
        if self.count < self.max_lanes:
            return self._new(node), True
        # At the limit: lanes that can take the key just get longer.
        takers = [ln for ln in fits if can_unblock or ln.blocked is None]
        if takers:
            return min(takers, key=Lane.size), False
        raise ConnectionError(
            f"cannot wait: all {self.max_lanes} connections for waiting calls of the client for {self.url} are "
            "in use (one per hash slot waited on at once on Redis Cluster; one per waiter where ACLs deny "
            "CLIENT UNBLOCK); raise the limit with connect(..., max_wait_connections=N)"
        )

    def _new(self, node: str) -> Lane:
        lane = Lane(node)
        self.by_node.setdefault(node, []).append(lane)
        self.count += 1
        return lane

    def _drop_key(self, lane: Lane, key: str) -> None:
        del lane.waiters[key]
        if self.by_key.get(key) is lane:
            del self.by_key[key]

    def leave(self, w: Waiter) -> Any:
        """End ``w`` early; returns the value it got if it had already finished, else None."""
        if w.done:
            return w.value
        lane = w.lane
        if lane is not None:
            q = lane.waiters.get(w.key)
            if q is not None:
                with contextlib.suppress(ValueError):
                    q.remove(w)
                if not q:
                    self._drop_key(lane, w.key)
                    if lane.blocked is not None and w.key in lane.blocked:
                        lane.orphans[w.key] = w.pop
                        lane.replan = True
        w.finish(None)
        return None

    def plan(self, lane: Lane, now: float) -> list[str] | None:
        """The keys to block on next ([] when idle); None when the lane must stop."""
        lane.blocked = None
        lane.orphans.clear()
        lane.replan = False
        if self.closed or lane.retired:
            return None
        keys = list(lane.waiters)
        if keys:
            lane.blocked = frozenset(keys)
            lane.block_until = now + _server_timeout(max(0.0, lane.deadline() - now))
        return keys

    def must_release(self, lane: Lane, now: float) -> bool:
        """Whether the BLPOP in flight must end now: a deadline came, or its keys are out of date."""
        return self.closed or lane.replan or lane.deadline() <= now

    def popped(self, lane: Lane, key: str, value: Any) -> bool | None:
        """Give a popped value to the first waiter on ``key``.

        Returns None when a waiter took it, else whether the orphan key was a
        pop (its value is dropped) or a wake-up (its token must be handed on).
        """
        q = lane.waiters.get(key)
        if not q:
            return lane.orphans.get(key, False)
        w = q.popleft()
        if not q:
            self._drop_key(lane, key)
        w.finish(value)
        return None

    def again(self, lane: Lane) -> None:
        """The lane's slot moved: every waiter looks again."""
        for key in list(lane.waiters):
            for w in lane.waiters[key]:
                w.finish(AGAIN)
            self._drop_key(lane, key)

    def expire(self, lane: Lane, now: float) -> None:
        """Finish the waiters whose deadline has come (nothing was popped for them)."""
        for key in list(lane.waiters):
            q = lane.waiters[key]
            if any(w.deadline <= now for w in q):
                for w in [w for w in q if w.deadline <= now]:
                    q.remove(w)
                    w.finish(None)
                if not q:
                    self._drop_key(lane, key)

    def retire(self, lane: Lane, error: BaseException | None = None) -> None:
        """Take the lane out; its waiters (if any) end with ``error``."""
        if not lane.retired:
            lane.retired = True
            self.count -= 1
            with contextlib.suppress(ValueError):
                self.by_node[lane.node].remove(lane)
        for key in list(lane.waiters):
            for w in lane.waiters[key]:
                w.finish(None, error or self.closed_error())
            self._drop_key(lane, key)

    def retire_if_idle(self, lane: Lane) -> bool:
        if lane.waiters and not self.closed:
            return False
        self.retire(lane)
        return True

    def close(self) -> list[Lane]:
        """End every wait with a 'client is closed' error; returns the lanes to stop."""
        self.closed = True
        lanes = [ln for nodes in self.by_node.values() for ln in nodes]
        for lane in lanes:
            self.retire(lane)
        return lanes


def _hand_on_sync(client: Any, key: str | bytes) -> None:
    with contextlib.suppress(Exception):
        client.rpush(key, 1)
        client.ltrim(key, 0, 0)


def _popped_key(reply: list[Any]) -> str:
    key = reply[0]
    return key.decode() if isinstance(key, bytes) else str(key)


# ---------------------------------------------------------------- sync


class _SyncNode:
    """One server of a sync client: how to make lane connections, and the
    control connection that sends CLIENT UNBLOCK (never one of the pool's)."""

    def __init__(self, redis: Any) -> None:
        pool = redis.connection_pool
        self._kwargs = pool.connection_kwargs
        self._class = pool.connection_class
        self._lock = threading.Lock()
        self._control: Any = None
        #: None until probed: whether ACLs allow CLIENT UNBLOCK.
        self.can_unblock: bool | None = None

    def connection(self) -> Any:
        return self._class(**self._kwargs)

    def _command(self, *args: Any) -> Any:
        with self._lock:
            conn = self._control
            try:
                if conn is None:
                    conn = self.connection()
                    conn.connect()  # explicitly: a Sentinel connection finds the master here
                    self._control = conn
                conn.send_command(*args)
                return conn.read_response(timeout=GRACE)
            except ResponseError:
                raise
            except BaseException:
                self._control = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.disconnect()
                raise

    def probe(self) -> None:
        """Learn once whether CLIENT UNBLOCK is allowed (unblocking oneself is a no-op)."""
        if self.can_unblock is None:
            own = self._command("CLIENT", "ID")
            try:
                self._command("CLIENT", "UNBLOCK", own)
                self.can_unblock = True
            except ResponseError:  # NOPERM: lanes time out on the server's tick
                self.can_unblock = False

    def unblock(self, client_id: int) -> bool:
        try:
            return bool(self._command("CLIENT", "UNBLOCK", client_id))
        except ResponseError:
            self.can_unblock = False
            return False

    def alive(self, client_id: int) -> bool:
        """Whether the server still has the lane's connection (where ACLs let us ask)."""
        try:
            return bool(self._command("CLIENT", "LIST", "ID", client_id))
        except ResponseError:
            return True

    def close(self) -> None:
        with self._lock:
            conn, self._control = self._control, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()


class _SyncLane:
    """The thread of one lane: blocks in BLPOP, hands out what it pops."""

    def __init__(self, hub: SyncWaiter, lane: Lane, node: _SyncNode) -> None:
        self.hub = hub
        self.lane = lane
        self.node = node
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self.thread = threading.Thread(target=self._run, name="rqueue-wait", daemon=True)

    def poke(self) -> None:
        """Make the lane look at its waiters again (from any thread)."""
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._r.recv(4096):
                pass

    def _run(self) -> None:
        hub, core, lane = self.hub, self.hub.core, self.lane
        conn: Any = None
        sel = selectors.DefaultSelector()
        sel.register(self._r, selectors.EVENT_READ)
        try:
            conn = self.node.connection()
            conn.connect()
            conn.send_command("CLIENT", "ID")
            client_id = int(conn.read_response(timeout=GRACE))
            sel.register(conn._sock, selectors.EVENT_READ)
            while True:
                with hub.lock:
                    keys = core.plan(lane, time.monotonic())
                    timeout = lane.block_until - time.monotonic()
                if keys is None:
                    break
                if not keys:
                    sel.select(LINGER)
                    self._drain()
                    if conn.can_read(0):  # the server closed it: raises
                        conn.read_response(timeout=GRACE)
                    with hub.lock:
                        if core.retire_if_idle(lane):
                            break
                    continue
                blpop = conn.pack_command("BLPOP", *keys, _server_timeout(timeout))
                conn.send_packed_command(blpop, check_health=False)
                reply = self._answer(conn, client_id, sel)
                orphan: bool | None = None
                with hub.lock:
                    if reply is AGAIN:
                        core.again(lane)
                    elif isinstance(reply, list):
                        orphan = core.popped(lane, _popped_key(reply), reply[1])
                    core.expire(lane, time.monotonic())
                if orphan is False and isinstance(reply, list):
                    _hand_on_sync(hub.client, reply[0])  # a wake-up nobody here waits for any more
        except BaseException as e:  # noqa: BLE001 - the lane's waiters get the error
            with hub.lock:
                core.retire(lane, None if core.closed else e)
        finally:
            with hub.lock:
                core.retire(lane)
            sel.close()
            self._r.close()
            self._w.close()
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.disconnect()

    def _answer(self, conn: Any, client_id: int, sel: selectors.BaseSelector) -> Any:
        """What the BLPOP in flight got: [key, value], None, or AGAIN."""
        hub, core, lane = self.hub, self.hub.core, self.lane
        released = False
        check = lane.block_until + GRACE  # the server's own timeout has long passed by then
        while not conn.can_read(0):
            now = time.monotonic()
            with hub.lock:
                release = core.must_release(lane, now)
                deadline = lane.deadline()
            if core.closed:
                raise ConnectionError("closed")
            if now >= check:
                if not self.node.alive(client_id):
                    raise RedisConnectionError("the connection of a blocked BLPOP was lost")
                check, released = now + GRACE, False  # held by a paused server (a failover): try again
            if release and not released and self.node.can_unblock:
                released = self._release(conn, client_id)
                continue
            sel.select(max(0.0, (check if release else min(deadline, check)) - now))
            self._drain()
        try:
            return conn.read_response(timeout=GRACE)
        except ResponseError:  # MOVED/ASK during a resharding: look again
            return AGAIN

    def _release(self, conn: Any, client_id: int) -> bool:
        """CLIENT UNBLOCK until it works or the BLPOP answers: it may not have
        reached the server yet, or its answer may be on the way. A server
        with writes paused holds a BLPOP sent meanwhile: then give up for now."""
        delay = 0.0005
        give_up = time.monotonic() + 1.0
        while not self.node.unblock(client_id):
            if not self.node.can_unblock or conn.can_read(delay) or time.monotonic() > give_up:
                break
            delay = min(delay * 2, 0.05)
        return True


class SyncWaiter:
    """Blocking waits for a sync ``Redis`` or ``RedisCluster``, multiplexed over lanes."""

    def __init__(self, client: Any, url: str = "", max_lanes: int = DEFAULT_MAX_LANES) -> None:
        self.client = client
        self._cluster = hasattr(client, "get_node_from_key")
        self.lock = threading.Lock()
        self._node_lock = threading.Lock()
        self.core = Lanes(url, max_lanes)
        self._nodes: dict[str, _SyncNode] = {}
        self._pid = os.getpid()

    def _node(self, key: str) -> tuple[str, int | None, _SyncNode]:
        if self._cluster:
            n = self.client.get_node_from_key(key)
            name, slot, redis = n.name, self.client.keyslot(key), n.redis_connection
        else:
            name, slot, redis = "", None, self.client
        node = self._nodes.get(name)
        if node is None or node.can_unblock is None:
            with self._node_lock:
                node = self._nodes.get(name)
                if node is None:
                    node = self._nodes[name] = _SyncNode(redis)
                node.probe()
        return name, slot, node

    def _join(self, key: str, timeout: float, pop: bool) -> Waiter:
        if os.getpid() != self._pid:  # forked: the parent's lanes are not this process's
            with self.lock:
                self.core = Lanes(self.core.url, self.core.max_lanes)
                self._nodes = {}
                self._pid = os.getpid()
        if self.core.closed:
            raise self.core.closed_error()
        name, slot, node = self._node(key)
        w = Waiter(key, time.monotonic() + timeout, pop, threading.Event())
        with self.lock:
            lane, new = self.core.place(w, name, slot, bool(node.can_unblock))
            if new:
                lane.runner = _SyncLane(self, lane, node)
                lane.runner.thread.start()
        lane.runner.poke()
        return w

    def _result(self, w: Waiter, timeout: float) -> Any:
        assert isinstance(w.handle, threading.Event)
        if not w.handle.wait(timeout + 2 * GRACE):  # a lane always answers well before this
            self.leave(w)
            raise RedisTimeoutError("no answer from the connection waiting for it")
        if w.error is not None:
            raise w.error
        return w.value

    def waiting(self) -> int:
        """How many waits are registered (for tests and diagnostics)."""
        with self.lock:
            return self.core.waiting()

    def leave(self, w: Waiter) -> Any:
        """End a wait early (from any thread); the value it got if it had already finished."""
        with self.lock:
            got = self.core.leave(w)
        lane = w.lane
        if lane is not None and lane.replan and lane.runner is not None:
            lane.runner.poke()
        return got

    def wait(self, key: str, timeout: float, *, on_block: Callable[[Callable[[], None]], None] | None = None) -> bool:
        """True when a token was popped, False on timeout (or when ended early).

        ``on_block`` is called once the wait is registered with a function that
        ends it early from another thread (a stopping consumer uses it).
        """
        w = self._join(key, timeout, False)
        try:
            if on_block is not None:

                def unblock() -> None:
                    self.leave(w)

                on_block(unblock)
            return self._result(w, timeout) is not None
        except BaseException:
            if self.leave(w) is not None:  # interrupted after a token came: it is not ours to keep
                self.hand_on(key)
            raise

    def hand_on(self, key: str) -> None:
        """Push a wake-up token for another waiter (best effort).

        A waiter that leaves abnormally, or wakes when it will not receive,
        may hold the token a send pushed; without this the other waiters would
        sleep on while a message is visible. At worst it is one spurious wake-up.
        """
        _hand_on_sync(self.client, key)

    def join_pop(self, key: str, timeout: float) -> Waiter:
        """Start waiting for the value pushed on ``key``; see ``pop``."""
        return self._join(key, timeout, True)

    def result(self, w: Waiter, timeout: float) -> bytes | None:
        """The value a ``join_pop`` waiter got, or None on timeout."""
        value = self._result(w, timeout)
        return None if value is AGAIN else value

    def pop(self, key: str, timeout: float) -> bytes | None:
        """The value popped from ``key``, or None on timeout."""
        w = self.join_pop(key, timeout)
        try:
            return self.result(w, timeout)
        except BaseException:
            self.leave(w)
            raise

    def close(self) -> None:
        """End every wait ('client is closed') and stop the lanes."""
        with self.lock:
            lanes = self.core.close()
        for lane in lanes:
            if lane.runner is not None:
                lane.runner.poke()
        for lane in lanes:
            if lane.runner is not None and lane.runner.thread is not threading.current_thread():
                lane.runner.thread.join(GRACE)
        for node in list(self._nodes.values()):
            node.close()


# ---------------------------------------------------------------- asyncio


class _AsyncNode:
    """One server of an asyncio client (see ``_SyncNode``)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.connection = make
        self._lock = asyncio.Lock()
        self._probing = asyncio.Lock()
        self._control: Any = None
        self.can_unblock: bool | None = None

    async def _command(self, *args: Any) -> Any:
        async with self._lock:
            conn = self._control
            try:
                if conn is None:
                    conn = self.connection()
                    await conn.connect()  # explicitly: a Sentinel connection finds the master here
                    self._control = conn
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
            if reply is None:  # read_response's timeout
                self._control = None
                with contextlib.suppress(Exception):
                    await conn.disconnect()
                raise RedisTimeoutError("no answer on the control connection")
            return reply

    async def probe(self) -> None:
        """Learn once whether CLIENT UNBLOCK is allowed (many first waiters ask once)."""
        async with self._probing:
            if self.can_unblock is None:
                own = await self._command("CLIENT", "ID")
                try:
                    await self._command("CLIENT", "UNBLOCK", own)
                    self.can_unblock = True
                except ResponseError:
                    self.can_unblock = False

    async def unblock(self, client_id: int) -> bool:
        try:
            return bool(await self._command("CLIENT", "UNBLOCK", client_id))
        except ResponseError:
            self.can_unblock = False
            return False

    async def alive(self, client_id: int) -> bool:
        try:
            return bool(await self._command("CLIENT", "LIST", "ID", client_id))
        except ResponseError:
            return True

    async def close(self) -> None:
        conn, self._control = self._control, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()


class _AsyncLane:
    """The task of one lane (see ``_SyncLane``)."""

    def __init__(self, hub: AsyncWaiter, lane: Lane, node: _AsyncNode) -> None:
        self.hub = hub
        self.lane = lane
        self.node = node
        self._poked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._run())

    def poke(self) -> None:
        if not self._poked.done():
            self._poked.set_result(None)

    async def _sleep(self, timeout: float, reader: asyncio.Future[Any] | None = None) -> None:
        """Until poked, ``reader`` is done, or ``timeout``."""
        if not self._poked.done():
            waits = [self._poked] if reader is None else [self._poked, reader]
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._poked.done():
            self._poked = asyncio.get_running_loop().create_future()

    async def _run(self) -> None:
        core, lane = self.hub.core, self.lane
        conn: Any = None
        reader: asyncio.Future[Any] | None = None
        try:
            conn = self.node.connection()
            await conn.connect()
            await conn.send_command("CLIENT", "ID")
            client_id = int(await conn.read_response(timeout=GRACE))
            while True:
                keys = core.plan(lane, time.monotonic())
                if keys is None:
                    break
                if not keys:
                    await self._sleep(LINGER)
                    if core.retire_if_idle(lane):
                        break
                    continue
                timeout = _server_timeout(lane.block_until - time.monotonic())
                await conn.send_packed_command(conn.pack_command("BLPOP", *keys, timeout), check_health=False)
                # Bounded by _answer, not by the client's socket_timeout (a wait may be longer).
                reader = asyncio.ensure_future(conn.read_response(timeout=1e9))
                reply = await self._answer(reader, client_id)
                reader = None
                orphan: bool | None = None
                if reply is AGAIN:
                    core.again(lane)
                elif isinstance(reply, list):
                    orphan = core.popped(lane, _popped_key(reply), reply[1])
                core.expire(lane, time.monotonic())
                if orphan is False and isinstance(reply, list):
                    self.hub.hand_on_later(reply[0])  # a wake-up nobody here waits for any more
        except BaseException as e:  # the lane's waiters get the error
            core.retire(lane, None if core.closed or not isinstance(e, Exception) else e)
            if not isinstance(e, Exception):
                raise
        finally:
            core.retire(lane)
            if reader is not None and not reader.done():
                reader.cancel()
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.disconnect()

    async def _answer(self, reader: asyncio.Future[Any], client_id: int) -> Any:
        """What the BLPOP in flight got (see ``_SyncLane._answer``)."""
        core, lane = self.hub.core, self.lane
        released = False
        check = lane.block_until + GRACE
        while not reader.done():
            now = time.monotonic()
            release = core.must_release(lane, now)
            if core.closed:
                raise ConnectionError("closed")
            if now >= check:
                if not await self.node.alive(client_id):
                    raise RedisConnectionError("the connection of a blocked BLPOP was lost")
                check, released = now + GRACE, False
            if release and not released and self.node.can_unblock:
                released = await self._release(reader, client_id)
                continue
            await self._sleep(max(0.0, (check if release else min(lane.deadline(), check)) - now), reader)
        try:
            return await reader
        except ResponseError:  # MOVED/ASK during a resharding: look again
            return AGAIN

    async def _release(self, reader: asyncio.Future[Any], client_id: int) -> bool:
        delay = 0.0005
        give_up = time.monotonic() + 1.0
        while not await self.node.unblock(client_id):
            if not self.node.can_unblock or time.monotonic() > give_up:
                break
            await asyncio.wait([reader], timeout=delay)
            if reader.done():
                break
            delay = min(delay * 2, 0.05)
        return True


class AsyncWaiter:
    """Blocking waits for an asyncio ``Redis`` or ``RedisCluster``, multiplexed over lanes."""

    def __init__(self, client: Any, url: str = "", max_lanes: int = DEFAULT_MAX_LANES) -> None:
        self.client = client
        self._cluster = hasattr(client, "get_node_from_key")
        self.core = Lanes(url, max_lanes)
        self._nodes: dict[str, _AsyncNode] = {}
        self._background: set[asyncio.Future[Any]] = set()

    async def _node(self, key: str) -> tuple[str, int | None, _AsyncNode]:
        if self._cluster:
            n = self.client.get_node_from_key(key)
            name, slot = n.name, self.client.keyslot(key)
            cls, kwargs = n.connection_class, n.connection_kwargs
        else:
            pool = self.client.connection_pool
            name, slot = "", None
            cls, kwargs = pool.connection_class, pool.connection_kwargs
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = _AsyncNode(lambda: cls(**kwargs))
        if node.can_unblock is None:
            await node.probe()
        return name, slot, node

    async def join(self, key: str, timeout: float, pop: bool) -> Waiter:
        """Start a wait on ``key``; nothing is awaited once it is registered."""
        if self.core.closed:
            raise self.core.closed_error()
        name, slot, node = await self._node(key)
        w = Waiter(key, time.monotonic() + timeout, pop, asyncio.get_running_loop().create_future())
        lane, new = self.core.place(w, name, slot, bool(node.can_unblock))
        if new:
            lane.runner = _AsyncLane(self, lane, node)
        lane.runner.poke()
        return w

    async def result(self, w: Waiter, timeout: float) -> Any:
        """The waiter's value (bytes, AGAIN or None). A cancelled caller must ``leave``."""
        assert isinstance(w.handle, asyncio.Future)
        await asyncio.wait([w.handle], timeout=timeout + 2 * GRACE)  # a lane always answers well before this
        if not w.done:
            self.leave(w)
            raise RedisTimeoutError("no answer from the connection waiting for it")
        if w.error is not None:
            raise w.error
        return w.value

    def waiting(self) -> int:
        """How many waits are registered (for tests and diagnostics)."""
        return self.core.waiting()

    def leave(self, w: Waiter) -> Any:
        """End a wait early; the value it got if it had already finished."""
        got = self.core.leave(w)
        lane = w.lane
        if lane is not None and lane.replan and lane.runner is not None:
            lane.runner.poke()
        return got

    async def wait(self, key: str, timeout: float) -> bool:
        """True when a token was popped, False on timeout."""
        w = await self.join(key, timeout, False)
        try:
            return await self.result(w, timeout) is not None
        except BaseException:
            if self.leave(w) is not None:  # cancelled after a token came: hand it on
                self.hand_on_later(key)
            raise

    def hand_on_later(self, key: str | bytes) -> None:
        """hand_on in the background: a cancelled caller must not wait on it."""
        self.background(self.hand_on(key))

    def background(self, coro: Any) -> asyncio.Future[Any]:
        """Run ``coro`` as a task that ``aclose`` waits for."""
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def hand_on(self, key: str | bytes) -> None:
        """Push a wake-up token for another waiter (best effort; see ``SyncWaiter.hand_on``)."""
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
        """End every wait ('client is closed'), let background work finish, stop the lanes."""
        pending = [t for t in self._background if not t.done()]
        if pending:  # settling what cancelled callers left (withdraws, releases)
            await asyncio.wait(pending, timeout=timeout)
        lanes = self.core.close()
        for lane in lanes:
            if lane.runner is not None:
                lane.runner.poke()
        tasks = [ln.runner.task for ln in lanes if ln.runner is not None and not ln.runner.task.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for t in late:
                t.cancel()
        for node in list(self._nodes.values()):
            await node.close()
