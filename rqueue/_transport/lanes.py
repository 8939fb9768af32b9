"""The bookkeeping of a client's waits (no I/O): which lane (one connection
blocked in one BLPOP) each wait goes to, what a lane's driver does next, and
who drives it after. The waiters and their lane drivers
(``rqueue._async.waiter``, ``rqueue._async.lane_driver``, generated into
``rqueue._sync``) share it; see ``rqueue._async.waiter`` for the design.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
import time
from typing import Any

from rqueue._protocol.errors import ConnectionError, InvalidParameter

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


def server_timeout(timeout: float) -> float:
    # 0 would mean "forever"; the server counts whole milliseconds.
    return max(0.001, math.ceil(timeout * 1000) / 1000)


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


class LaneWait:
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
        self.waiters: dict[str, collections.deque[LaneWait]] = {}
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
    """Which lane each wait goes to, and what a lane's driver does next. No
    I/O: the sync and asyncio waiters share it (the sync one under a lock)."""

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

    def place(self, w: LaneWait, node: str, slot: int | None, can_unblock: bool) -> tuple[Lane, bool]:
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

    def leave(self, w: LaneWait) -> Any:
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
            lane.block_until = now + server_timeout(max(0.0, lane.deadline() - now))
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

    def next_step(self, lane: Lane, me: LaneWait | None, can_release: bool) -> str:
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

    def successor(self, lane: Lane, me: LaneWait | None) -> LaneWait | None:
        """A waiter of the lane, other than ``me``, to drive it next."""
        for q in lane.waiters.values():
            for w in q:
                if w is not me and not w.done:
                    return w
        return None

    def hand_over(self, lane: Lane, me: LaneWait | None, now: float) -> LaneWait | object | None:
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


def unbounded(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Connection options for lanes and control connections: no socket_timeout.

    Their reads are bounded here (a BLPOP may block far longer than any
    socket_timeout) and their commands are tiny; without one, redis-py also
    sends without wrapping each command in asyncio.wait_for (a task each).
    """
    return {**kwargs, "socket_timeout": None}


def connection_maker(node: Any) -> Any:
    """What makes the connections of a cluster node (its ``connection_class`` and
    ``connection_kwargs``): an asyncio ClusterNode itself, a sync one its client's pool."""
    client = getattr(node, "redis_connection", None)
    return node if client is None else client.connection_pool
