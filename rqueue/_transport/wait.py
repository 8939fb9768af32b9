"""Blocking waits of one client, multiplexed over a few connections ("lanes").

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

from rqueue._protocol.errors import ConnectionError, InvalidParameter

#: Keys one lane blocks on before waits spread to another lane.
LANE_KEYS = 64
#: Lanes per server opened before new waiters join lanes that are blocked (and must be released
#: with a CLIENT UNBLOCK round trip). Threads join at scattered times, so a sync client is faster
#: with a lane per waiting thread up to 16; asyncio tasks join in bursts that one release serves,
#: and an event loop does better with few sockets (measured: 16 lanes cost an asyncio client
#: 50 us a request at 50 concurrent requests, 4 lanes cost a sync client 10-20 % at 16 threads).
SYNC_SPREAD = 16
ASYNC_SPREAD = 4
#: Connections a client may hold for waiting, unless ``max_wait_connections`` says otherwise.
DEFAULT_MAX_LANES = 256
#: An idle lane keeps its connection this long for the next waiter.
LINGER = 10.0
#: How long a blocked BLPOP may stay unanswered past its own timeout before we ask whether
#: its connection is still there; also the bound of a control command.
GRACE = 5.0


def _server_timeout(timeout: float) -> float:
    # 0 would mean "forever"; the server counts whole milliseconds.
    return max(0.001, math.ceil(timeout * 1000) / 1000)


def _blpop_command(conn: Any, keys: list[str], timeout: float) -> bytes:
    """``BLPOP key... timeout`` in RESP: a lane sends it again after every answer,
    and redis-py's pack_command costs about 1 us a key where this costs 0.3."""
    encode = conn.encoder.encode
    out = [b"*%d\r\n$5\r\nBLPOP\r\n" % (len(keys) + 2)]
    for key in keys:
        raw = encode(key)
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    seconds = b"%.3f" % _server_timeout(timeout)
    out.append(b"$%d\r\n%b\r\n" % (len(seconds), seconds))
    return b"".join(out)


def check_max_lanes(value: object) -> int:
    """``max_wait_connections`` of ``connect()``: an int from 1 to 100000."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise InvalidParameter(f"max_wait_connections must be an integer from 1 to 100000, got {value!r}")
    return value


class _Again:
    """What a wait gets when its slot moved (MOVED/ASK) or its lane was lost: look again."""


AGAIN = _Again()
#: ``_answer``: the driver's own wait ended while the BLPOP is still on the way.
_STOP = object()
#: ``Lane.driver`` while a background driver finishes a lane nobody else drives.
_BACKGROUND = object()


class Wait:
    """One waiting call: its key, deadline and outcome."""

    __slots__ = ("deadline", "done", "error", "handle", "key", "lane", "pop", "value")

    def __init__(
        self, key: str, deadline: float, pop: bool, handle: threading.Event | asyncio.Future[None] | None
    ) -> None:
        self.key = key
        self.deadline = deadline
        self.pop = pop
        #: What the waiting thread or task blocks on: set when it finishes, or
        #: (still not done) when it is to drive its lane. A sync waiter makes
        #: its Event only if it has to wait for another driver.
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
            self.signal()

    def signal(self) -> None:
        if isinstance(self.handle, threading.Event):
            self.handle.set()
        elif self.handle is not None and not self.handle.done():
            self.handle.set_result(None)


class Lane:
    """The bookkeeping of one lane (no I/O): its waiters and what it blocks on."""

    __slots__ = (
        "block_until",
        "blocked",
        "driver",
        "idle_since",
        "node",
        "orphans",
        "replan",
        "retired",
        "runner",
        "slot",
        "waiters",
    )

    def __init__(self, node: str) -> None:
        self.node = node
        #: The hash slot of its waiters' keys on a cluster (None: any).
        self.slot: int | None = None
        self.waiters: dict[str, collections.deque[Wait]] = {}
        #: The keys of the BLPOP in flight, or None when none is.
        self.blocked: frozenset[str] | None = None
        #: When the server times the BLPOP in flight out by itself.
        self.block_until = 0.0
        #: Keys of the BLPOP in flight nobody waits on any more: key -> was a pop.
        self.orphans: dict[str, bool] = {}
        #: The BLPOP in flight names other keys than the waiters' now.
        self.replan = False
        self.retired = False
        #: The waiter driving the lane, _BACKGROUND, or None.
        self.driver: object = None
        self.idle_since = time.monotonic()
        self.runner: Any = None

    def size(self) -> int:
        return len(self.waiters)

    def deadline(self) -> float:
        return min((w.deadline for q in self.waiters.values() for w in q), default=math.inf)


class Lanes:
    """Which lane each waiter goes to, and what a lane's driver does next. No
    I/O: the sync and asyncio runners below share it (the sync one under a lock)."""

    def __init__(self, url: str, max_lanes: int, spread: int) -> None:
        self.url = url
        self.max_lanes = max_lanes
        self.spread = spread
        self.by_node: dict[str, list[Lane]] = {}
        self.by_key: dict[str, Lane] = {}
        self.count = 0
        self.closed = False
        self._reaped = time.monotonic()

    def waiting(self) -> int:
        """How many waits are registered (for tests and diagnostics)."""
        return sum(len(q) for lanes in self.by_node.values() for ln in lanes for q in ln.waiters.values())

    def closed_error(self) -> ConnectionError:
        return ConnectionError(f"the client of {self.url} is closed; its waiting calls ended")

    def place(self, w: Wait, node: str, slot: int | None, can_unblock: bool) -> tuple[Lane, bool]:
        """Add ``w`` to a lane: (lane, whether the lane is new)."""
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
        if len(lanes) < self.spread and self.count < self.max_lanes:
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

    def leave(self, w: Wait) -> Any:
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
        if lane is not None and lane.driver is None and (nxt := self.successor(lane, w)) is not None:
            nxt.signal()  # ``w`` may have been the one the lane was handed to
        return None

    def plan(self, lane: Lane, now: float) -> list[str]:
        """The keys the next BLPOP names (none: nothing to wait for)."""
        lane.orphans.clear()
        lane.replan = False
        keys = list(lane.waiters)
        lane.blocked = frozenset(keys) if keys else None
        if keys:
            lane.block_until = now + _server_timeout(max(0.0, lane.deadline() - now))
        return keys

    def must_release(self, lane: Lane, now: float) -> bool:
        """Whether the BLPOP in flight must end now: a deadline came, or its keys are out of date."""
        return self.closed or lane.replan or lane.deadline() <= now

    def popped(self, lane: Lane, reply: Any, now: float) -> bool | None:
        """Take the BLPOP's answer: give a popped value to the first waiter on
        its key, end the waiters whose deadline has come.

        Returns None, or for a value nobody here waits for any more whether it
        was a pop (it is dropped) or a wake-up (its token must be handed on).
        """
        lane.blocked = None
        orphan: bool | None = None
        if reply is AGAIN:  # the slot moved: every waiter looks again
            for key in list(lane.waiters):
                for w in lane.waiters[key]:
                    w.finish(AGAIN)
                self._drop_key(lane, key)
        elif isinstance(reply, list):
            key = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            q = lane.waiters.get(key)
            if q:
                w = q.popleft()
                if not q:
                    self._drop_key(lane, key)
                w.finish(reply[1])
            else:
                orphan = lane.orphans.get(key, False)
        for key in list(lane.waiters):
            q = lane.waiters[key]
            if any(w.deadline <= now for w in q):
                for w in [w for w in q if w.deadline <= now]:
                    q.remove(w)
                    w.finish(None)
                if not q:
                    self._drop_key(lane, key)
        return orphan

    def next_step(self, lane: Lane, me: Wait | None, can_release: bool) -> str:
        """What the driver ``me`` (None: a background driver) does next: 'stop',
        'last' (its own wait is over, but it finishes the BLPOP in flight that
        nobody else waits for: a CLIENT UNBLOCK away), or 'drive'."""
        if lane.retired:
            return "stop"
        if me is None:
            return "stop" if not lane.waiters and lane.blocked is None else "drive"
        if not me.done:
            return "drive"
        if lane.blocked is None or self.successor(lane, me) is not None or not can_release:
            return "stop"  # (without CLIENT UNBLOCK a background driver waits out the BLPOP)
        return "last"

    def successor(self, lane: Lane, me: Wait | None) -> Wait | None:
        """A waiter of the lane, other than ``me``, to drive it next."""
        for q in lane.waiters.values():
            for w in q:
                if w is not me and not w.done:
                    return w
        return None

    def hand_over(self, lane: Lane, me: Wait | None, now: float) -> Wait | object | None:
        """The driver ``me`` stops: who drives next. A waiter (to be signalled),
        _BACKGROUND (start one: a BLPOP is on the way and nobody else waits), or None."""
        lane.driver = None
        if lane.retired:
            return None
        nxt = self.successor(lane, me)
        if nxt is not None:
            return nxt
        if lane.blocked is not None:
            lane.driver = _BACKGROUND
            return _BACKGROUND
        lane.idle_since = now
        return None

    def fail(self, lane: Lane, error: BaseException) -> None:
        """The lane's connection failed: its waiters end with ``error``."""
        self.retire(lane, error)

    def retire(self, lane: Lane, error: BaseException | None = None) -> None:
        """Take the lane out; its waiters (if any) end with ``error`` (default: closed)."""
        if not lane.retired:
            lane.retired = True
            self.count -= 1
            with contextlib.suppress(ValueError):
                self.by_node[lane.node].remove(lane)
        for key in list(lane.waiters):
            for w in lane.waiters[key]:
                w.finish(None, error or self.closed_error())
            self._drop_key(lane, key)

    def reap(self, now: float) -> list[Lane]:
        """Retire the lanes idle for LINGER (looked for at most once a second);
        returns them (to close their connections)."""
        if now - self._reaped < 1.0:
            return []
        self._reaped = now
        idle = [
            ln
            for lanes in self.by_node.values()
            for ln in lanes
            if not ln.waiters and ln.driver is None and ln.blocked is None and now - ln.idle_since > LINGER
        ]
        for lane in idle:
            self.retire(lane)
        return idle

    def close(self) -> list[Lane]:
        """End every wait with a 'client is closed' error; returns the lanes."""
        self.closed = True
        lanes = [ln for nodes in self.by_node.values() for ln in nodes]
        for lane in lanes:
            self.retire(lane)
        return lanes


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


def _unbounded(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Connection options for lanes and control connections: no socket_timeout.

    Their reads are bounded here (a BLPOP may block far longer than any
    socket_timeout) and their commands are tiny; without one, redis-py also
    sends without wrapping each command in asyncio.wait_for (a task each).
    """
    return {**kwargs, "socket_timeout": None}


def _hand_on_sync(client: Any, key: str | bytes) -> None:
    with contextlib.suppress(Exception):
        client.rpush(key, 1)
        client.ltrim(key, 0, 0)


# ---------------------------------------------------------------- sync


class _SyncNode:
    """One server of a sync client: how to make lane connections, and the
    control connection that sends CLIENT UNBLOCK (never one of the pool's)."""

    def __init__(self, redis: Any) -> None:
        pool = redis.connection_pool
        self._kwargs = _unbounded(pool.connection_kwargs)
        self._class = pool.connection_class
        self._lock = threading.Lock()
        self._control: Any = None
        #: None until probed: whether ACLs allow CLIENT UNBLOCK.
        self.can_unblock: bool | None = None

    def connection(self) -> Any:
        conn = self._class(**self._kwargs)
        conn.connect()  # explicitly: a Sentinel connection finds the master here
        return conn

    def _command(self, *args: Any) -> Any:
        with self._lock:
            conn = self._control
            try:
                if conn is None:
                    conn = self._control = self.connection()
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
    """The I/O of one lane, run by whichever thread drives it."""

    def __init__(self, hub: SyncWaiter, lane: Lane, node: _SyncNode) -> None:
        self.hub = hub
        self.lane = lane
        self.node = node
        self.conn: Any = None
        self.client_id = 0
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._r, selectors.EVENT_READ)

    def poke(self) -> None:
        """Make the driver look at the lane's waiters again (from any thread)."""
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._r.recv(4096):
                pass

    def _connect(self) -> None:
        conn = self.node.connection()
        try:
            conn.send_command("CLIENT", "ID")
            self.client_id = int(conn.read_response(timeout=GRACE))
            self._sel.register(conn._sock, selectors.EVENT_READ)
        except BaseException:
            conn.disconnect()
            raise
        self.conn = conn

    def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                self._sel.unregister(conn._sock)
            with contextlib.suppress(Exception):
                conn.disconnect()

    def close(self) -> None:
        """Close the connection and the poke sockets (the lane is retired, nobody drives it)."""
        self._drop_connection()
        self._sel.close()
        self._r.close()
        self._w.close()

    def drive(self, me: Wait | None) -> None:
        """Run the lane's BLPOPs in this thread until ``me`` has finished (None:
        until the lane is idle), then hand the lane on."""
        hub, core, lane = self.hub, self.hub.core, self.lane
        try:
            while True:
                keys = None
                with hub.lock:
                    step = core.next_step(lane, me, bool(self.node.can_unblock))
                    connect = lane.blocked is None and self.conn is None
                    if step != "stop" and lane.blocked is None and not connect:
                        now = time.monotonic()
                        keys = core.plan(lane, now)
                        timeout = lane.block_until - now
                if step == "stop":
                    break
                if connect:
                    self._connect()
                    continue
                if keys is not None:
                    if not keys:
                        continue
                    self.conn.send_packed_command([_blpop_command(self.conn, keys, timeout)], check_health=False)
                reply = self._answer(None if step == "last" else me, keys is not None)
                if reply is _STOP:
                    continue
                with hub.lock:
                    orphan = core.popped(lane, reply, time.monotonic())
                if orphan is False:
                    _hand_on_sync(hub.client, reply[0])  # a wake-up nobody here waits for any more
        except Exception as e:  # noqa: BLE001 - the connection failed: so do the lane's waits
            with hub.lock:
                core.fail(lane, e)
        except BaseException:  # this thread was interrupted (KeyboardInterrupt): hand the lane on
            lost: frozenset[str] | None = None
            with hub.lock:
                if self.conn is not None and not self.conn._sock:  # interrupted mid-read or mid-send: lost
                    lost, lane.blocked, self.conn = lane.blocked, None, None
            for key in lost or ():
                if key.endswith(":wake"):  # whatever it popped is gone: at worst a spurious wake-up
                    _hand_on_sync(hub.client, key)
            raise
        finally:
            self._after(me)

    def _after(self, me: Wait | None) -> None:
        """Hand the lane to the next driver (or close it once retired)."""
        hub, core, lane = self.hub, self.hub.core, self.lane
        with hub.lock:
            nxt = core.hand_over(lane, me, time.monotonic())
            if isinstance(nxt, Wait):
                nxt.signal()
        if nxt is _BACKGROUND:
            t = threading.Thread(target=self.drive, args=(None,), name="rqueue-wait", daemon=True)
            hub.background.add(t)
            t.start()
        elif lane.retired:
            self.close()
        if me is None:
            hub.background.discard(threading.current_thread())

    def _answer(self, me: Wait | None, fresh: bool) -> Any:
        """What the BLPOP in flight got: [key, value], None, or AGAIN; _STOP when
        ``me`` finished first (the BLPOP is left for the next driver). ``fresh``:
        it was just sent, so nothing of its answer can be buffered yet."""
        hub, core, lane = self.hub, self.hub.core, self.lane
        conn = self.conn
        released = False
        check = lane.block_until + GRACE  # the server's own timeout has long passed by then
        while fresh or not conn.can_read(0):
            fresh = False
            now = time.monotonic()
            with hub.lock:
                if (me is not None and me.done) or lane.retired:
                    return _STOP
                release = core.must_release(lane, now)
                deadline = lane.deadline()
            if now >= check:
                if not self.node.alive(self.client_id):
                    raise RedisConnectionError("the connection of a blocked BLPOP was lost")
                check, released = now + GRACE, False  # held by a paused server (a failover): try again
            if release and not released and self.node.can_unblock:
                released = self._release()
                continue
            ready = False
            for key, _ in self._sel.select(max(0.0, (check if release else min(deadline, check)) - now)):
                if key.fileobj is self._r:
                    self._drain()
                else:
                    ready = True
            if ready:
                break
        try:
            return conn.read_response()
        except ResponseError:  # MOVED/ASK during a resharding: look again
            return AGAIN

    def _release(self) -> bool:
        """CLIENT UNBLOCK until it works or the BLPOP answers: it may not have
        reached the server yet, or its answer may be on the way. A server with
        writes paused holds a BLPOP sent meanwhile: then give up for now."""
        delay = 0.0005
        give_up = time.monotonic() + 1.0
        while not self.node.unblock(self.client_id):
            if not self.node.can_unblock or self.conn.can_read(delay) or time.monotonic() > give_up:
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
        self.core = Lanes(url, max_lanes, SYNC_SPREAD)
        self._nodes: dict[str, _SyncNode] = {}
        self.background: set[threading.Thread] = set()
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

    def join(self, key: str, timeout: float, pop: bool) -> Wait:
        """Start a wait on ``key`` (``pop``: for the value pushed on it)."""
        if os.getpid() != self._pid:  # forked: the parent's lanes (and lock holders) are not this process's
            self.lock, self._node_lock = threading.Lock(), threading.Lock()
            self.core = Lanes(self.core.url, self.core.max_lanes, SYNC_SPREAD)
            self._nodes, self.background = {}, set()
            self._pid = os.getpid()
        if self.core.closed:
            raise self.core.closed_error()
        name, slot, node = self._node(key)
        now = time.monotonic()
        w = Wait(key, now + timeout, pop, None)
        with self.lock:
            idle = self.core.reap(now)
            lane, new = self.core.place(w, name, slot, bool(node.can_unblock))
            if new:
                lane.runner = _SyncLane(self, lane, node)
            driven = lane.driver is not None
        for old in idle:
            old.runner.close()
        if driven:
            lane.runner.poke()
        return w

    def result(self, w: Wait, timeout: float) -> Any:
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
                elif w.handle is None:
                    w.handle = event = threading.Event()
                else:
                    assert isinstance(w.handle, threading.Event)
                    event = w.handle
                    event.clear()
            if lead:
                lane.runner.drive(w)
                continue
            now = time.monotonic()
            if now >= fail_at:
                self.leave(w)
                raise RedisTimeoutError("no answer from the connection waiting for it")
            # Woken by its value or a call to drive; past its deadline it looks at the lane again.
            event.wait(min(fail_at, max(w.deadline, now) + 0.25) - now)
        if w.error is not None:
            raise w.error
        return w.value

    def waiting(self) -> int:
        """How many waits are registered (for tests and diagnostics)."""
        with self.lock:
            return self.core.waiting()

    def leave(self, w: Wait) -> Any:
        """End a wait early (from any thread); the value it got if it had already finished."""
        with self.lock:
            got = self.core.leave(w)
            lane = w.lane
            runner = lane.runner if lane is not None and lane.driver is not None else None
        if runner is not None:
            runner.poke()  # its driver re-plans (or, if it was this waiter, hands the lane on)
        return got

    def wait(self, key: str, timeout: float, *, on_block: Callable[[Callable[[], None]], None] | None = None) -> bool:
        """True when a token was popped, False on timeout (or when ended early).

        ``on_block`` is called once the wait is registered with a function that
        ends it early from another thread (a stopping consumer uses it).
        """
        w = self.join(key, timeout, False)
        try:
            if on_block is not None:

                def unblock() -> None:
                    self.leave(w)

                on_block(unblock)
            return self.result(w, timeout) is not None
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

    def pop(self, key: str, timeout: float) -> bytes | None:
        """The value popped from ``key``, or None on timeout."""
        w = self.join(key, timeout, True)
        try:
            value = self.result(w, timeout)
        except BaseException:
            self.leave(w)
            raise
        return None if value is AGAIN else value

    def close(self) -> None:
        """End every wait ('client is closed') and close the lanes."""
        with self.lock:
            lanes = self.core.close()
            idle = [ln for ln in lanes if ln.driver is None and ln.runner is not None]
        for lane in lanes:
            if lane.runner is not None:
                lane.runner.poke()  # its driver sees the lane retired and closes it
        for lane in idle:
            lane.runner.close()
        for t in list(self.background):
            if t is not threading.current_thread():
                t.join(GRACE)
        for node in list(self._nodes.values()):
            node.close()


# ---------------------------------------------------------------- asyncio


class _AsyncNode:
    """One server of an asyncio client (see ``_SyncNode``)."""

    def __init__(self, cls: Any, kwargs: dict[str, Any]) -> None:
        self._class = cls
        self._kwargs = _unbounded(kwargs)
        self._lock = asyncio.Lock()
        self._probing = asyncio.Lock()
        self._control: Any = None
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

    async def _command(self, *args: Any) -> Any:
        async with self._lock:
            conn = self._control
            try:
                if conn is None:
                    conn = self._control = await self.connection()
                _honour_cancel()
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


def _honour_cancel() -> None:
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


class _AsyncLane:
    """The I/O of one lane, run by whichever task drives it (see ``_SyncLane``).

    The lane's connection is read by a task of its own, which puts each answer
    into the in-flight BLPOP's future: a driver that is cancelled leaves that
    future to the next driver instead of breaking the connection.
    """

    def __init__(self, hub: AsyncWaiter, lane: Lane, node: _AsyncNode) -> None:
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
        conn = await self.node.connection()
        try:
            await conn.send_command("CLIENT", "ID")
            self.client_id = int(await conn.read_response(timeout=GRACE))
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise
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
                    _honour_cancel()
                if lane.blocked is None:
                    if self.conn is not None and (self._reading is None or self._reading.done()):
                        self.hub.background(_disconnect(self._drop_connection()))  # it was lost while idle
                    if self.conn is None:
                        await self._connect()
                        continue  # (a step: the cancellation may have been lost in it)
                    keys = core.plan(lane, time.monotonic())
                    if not keys:
                        continue
                    blpop = _blpop_command(self.conn, keys, lane.block_until - time.monotonic())
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
                self.hub.background(_disconnect(self._drop_connection()))
            raise
        finally:
            self._after(me)

    def _after(self, me: Wait | None) -> None:
        core, lane = self.hub.core, self.lane
        nxt = core.hand_over(lane, me, time.monotonic())
        if isinstance(nxt, Wait):
            nxt.signal()
        elif nxt is _BACKGROUND:
            self.hub.background(self.drive(None))
        elif lane.retired:
            self.hub.background(self.close())

    async def _answer(self, me: Wait | None) -> Any:
        """What the BLPOP in flight got (see ``_SyncLane._answer``)."""
        core, lane = self.hub.core, self.lane
        answer = self.answer
        assert answer is not None
        released = False
        check = lane.block_until + GRACE
        while not answer.done():
            if (me is not None and me.done) or lane.retired:
                return _STOP
            if me is not None:
                _honour_cancel()
            now = time.monotonic()
            release = core.must_release(lane, now)
            if now >= check:
                if not await self.node.alive(self.client_id):
                    raise RedisConnectionError("the connection of a blocked BLPOP was lost")
                check, released = now + GRACE, False
            if release and not released and self.node.can_unblock:
                released = await self._release(answer)
                continue
            await self._sleep(max(0.0, (check if release else min(lane.deadline(), check)) - now), answer)
        self.answer = None
        got = answer.result()
        if isinstance(got, _Failed):
            if isinstance(got.error, ResponseError):
                return AGAIN  # MOVED/ASK during a resharding: look again
            raise got.error
        return got

    async def _release(self, answer: asyncio.Future[Any]) -> bool:
        delay = 0.0005
        give_up = time.monotonic() + 1.0
        while not await self.node.unblock(self.client_id):
            if not self.node.can_unblock or time.monotonic() > give_up:
                break
            await asyncio.wait([answer], timeout=delay)
            if answer.done():
                break
            delay = min(delay * 2, 0.05)
        return True


async def _disconnect(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.disconnect()


class AsyncWaiter:
    """Blocking waits for an asyncio ``Redis`` or ``RedisCluster``, multiplexed over lanes."""

    def __init__(self, client: Any, url: str = "", max_lanes: int = DEFAULT_MAX_LANES) -> None:
        self.client = client
        self._cluster = hasattr(client, "get_node_from_key")
        self.core = Lanes(url, max_lanes, ASYNC_SPREAD)
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
            node = self._nodes[name] = _AsyncNode(cls, kwargs)
        if node.can_unblock is None:
            await node.probe()
        return name, slot, node

    async def join(self, key: str, timeout: float, pop: bool) -> Wait:
        """Start a wait on ``key``; nothing is awaited once it is registered."""
        if self.core.closed:
            raise self.core.closed_error()
        name, slot, node = await self._node(key)
        _honour_cancel()
        now = time.monotonic()
        w = Wait(key, now + timeout, pop, asyncio.get_running_loop().create_future())
        for old in self.core.reap(now):
            self.background(old.runner.close())
        lane, new = self.core.place(w, name, slot, bool(node.can_unblock))
        if new:
            lane.runner = _AsyncLane(self, lane, node)
        if lane.driver is not None:
            lane.runner.poke()
        return w

    async def result(self, w: Wait, timeout: float) -> Any:
        """The waiter's value (bytes, AGAIN or None), driving its lane whenever
        nobody else does. A cancelled caller must ``leave``."""
        assert w.lane is not None
        loop = asyncio.get_running_loop()
        fail_at = time.monotonic() + timeout + 2 * GRACE  # a lane always answers well before this
        while not w.done:
            lane = w.lane
            if lane.driver is None and not lane.retired:
                lane.driver = w
                await lane.runner.drive(w)
                continue
            assert isinstance(w.handle, asyncio.Future)
            if w.handle.done():  # a call to drive that another driver took first
                w.handle = loop.create_future()
            now = time.monotonic()
            if now >= fail_at:
                self.leave(w)
                raise RedisTimeoutError("no answer from the connection waiting for it")
            # Woken by its value or a call to drive; past its deadline it looks at the lane again.
            fut = w.handle
            timer = loop.call_later(min(fail_at, max(w.deadline, now) + 0.25) - now, _Wake(fut), None)
            try:
                await fut
            finally:
                timer.cancel()
        if w.error is not None:
            raise w.error
        return w.value

    def waiting(self) -> int:
        """How many waits are registered (for tests and diagnostics)."""
        return self.core.waiting()

    def leave(self, w: Wait) -> Any:
        """End a wait early; the value it got if it had already finished."""
        got = self.core.leave(w)
        lane = w.lane
        if lane is not None and lane.driver is not None and lane.runner is not None:
            lane.runner.poke()
        return got

    async def wait(
        self, key: str, timeout: float, *, on_block: Callable[[Callable[[], None]], None] | None = None
    ) -> bool:
        """True when a token was popped, False on timeout (or when ended early).

        ``on_block`` is called once the wait is registered with a function that
        ends it early (called in the event loop's thread).
        """
        w = await self.join(key, timeout, False)
        try:
            if on_block is not None:

                def unblock() -> None:
                    self.leave(w)

                on_block(unblock)
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
        """Let background work finish (settling what cancelled callers left),
        end every wait ('client is closed'), close the lanes."""
        pending = [t for t in self._background if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        lanes = self.core.close()
        for lane in lanes:
            if lane.runner is not None:
                lane.runner.poke()  # its driver sees the lane retired and closes it
                if lane.driver is None:
                    await lane.runner.close()
        pending = [t for t in self._background if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for t in late:
                t.cancel()
        for node in list(self._nodes.values()):
            await node.close()
