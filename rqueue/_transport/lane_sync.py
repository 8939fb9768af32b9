"""What the sync waiter (``rqueue._sync.waiter``, generated) does with threads:
its lanes' driver (a selector and a socketpair in the caller's thread), and the
primitives where the asyncio source awaits. The twin of ``lane_async``;
every decision both drivers make is in ``lanes.Lanes``."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from rqueue._transport.blpop import PROBE, RELEASE, Watch, blpop_command, release_delays
from rqueue._transport.lanes import (
    _BACKGROUND,
    _STOP,
    AGAIN,
    SYNC_SPREAD,
    Lane,
    Wait,
)

#: Lanes per server before waits share blocked lanes (see ``lanes.SYNC_SPREAD``).
SPREAD = SYNC_SPREAD
#: The lock of a node's control connection.
Lock = threading.Lock


def state_lock() -> threading.Lock:
    """The waiter's lock: threads share its lanes."""
    return threading.Lock()


def new_handle() -> threading.Event | None:
    """A new wait's handle: made only if it has to wait for another driver (``rearm``)."""
    return None


def rearm(w: Wait) -> threading.Event:
    """The Event ``w`` sleeps on until its value comes or it is to drive (under the lock)."""
    if w.handle is None:
        w.handle = threading.Event()
    else:
        assert isinstance(w.handle, threading.Event)
        w.handle.clear()
    return w.handle


def sleep_on(handle: threading.Event, timeout: float) -> None:
    handle.wait(timeout)


def honour_cancel() -> None:
    """Nothing: threads are not cancelled (see ``lane_async.honour_cancel``)."""


def node_connection(node: Any) -> tuple[Any, dict[str, Any]]:
    """How to connect to a cluster node: its connection class and options."""
    pool = node.redis_connection.connection_pool
    return pool.connection_class, pool.connection_kwargs


class Background:
    """The threads that finish a lane nobody else drives; ``end`` joins them."""

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()

    def start(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, name="rqueue-wait", daemon=True)
        self._threads.add(t)
        t.start()

    def done(self) -> None:
        """The calling background thread ends."""
        self._threads.discard(threading.current_thread())

    def later(self, fn: Callable[..., None], *args: Any) -> None:
        """``fn(*args)`` now: a thread is not cancelled half way."""
        fn(*args)

    def settle(self, timeout: float) -> None:
        """Nothing: sync callers settle what they started themselves."""

    def end(self, timeout: float) -> None:
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(timeout)


class LaneDriver:
    """The I/O of one lane, run by whichever thread drives it: a selector on its
    connection and a socketpair that ``poke`` writes to."""

    def __init__(self, hub: Any, lane: Lane, node: Any) -> None:
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
        conn, self.client_id = self.node.lane_connection()
        try:
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

    def discard(self) -> None:
        """Close the lane now (retired while idle)."""
        self.close()

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
                    self.conn.send_packed_command([blpop_command(self.conn, keys, timeout)], check_health=False)
                reply = self._answer(None if step == "last" else me, keys is not None)
                if reply is _STOP:
                    continue
                with hub.lock:
                    orphan = core.popped(lane, reply, time.monotonic())
                if orphan is False:
                    hub.hand_on(reply[0])  # a wake-up nobody here waits for any more
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
                    hub.hand_on(key)
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
            hub.background.start(self.drive, None)
        elif lane.retired:
            self.close()
        if me is None:
            hub.background.done()

    def _answer(self, me: Wait | None, fresh: bool) -> Any:
        """What the BLPOP in flight got: [key, value], None, or AGAIN; _STOP when
        ``me`` finished first (the BLPOP is left for the next driver). ``fresh``:
        it was just sent, so nothing of its answer can be buffered yet."""
        hub, conn = self.hub, self.conn
        watch = Watch(hub.core, self.lane, me)
        while fresh or not conn.can_read(0):
            fresh = False
            now = time.monotonic()
            with hub.lock:
                step = watch.next(now, bool(self.node.can_unblock))
            if step is _STOP:
                return _STOP
            if step == PROBE:
                if not self.node.alive(self.client_id):
                    raise RedisConnectionError("the connection of a blocked BLPOP was lost")
                watch.alive(now)
                continue
            if step == RELEASE:
                self._release()
                watch.released()
                continue
            assert isinstance(step, float)
            ready = False
            for key, _ in self._sel.select(step):
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

    def _release(self) -> None:
        """CLIENT UNBLOCK until it works or the BLPOP answers (see ``release_delays``)."""
        for delay in release_delays():
            if self.node.unblock(self.client_id) or not self.node.can_unblock or self.conn.can_read(delay):
                return
