"""The driver of one lane: runs its BLPOPs in the thread or task of whichever
waiter drives it (see the waiter module), written once for both sides.

Written for asyncio; ``scripts/unasync`` generates the thread one
(``rqueue._sync.lane_driver``). Every decision is in the I/O-free core
(``lanes.Lanes``, ``blpop.Watch``). How the driver waits for the BLPOP's answer
is what threads and tasks do differently, in ``rqueue._transport.lane_*``: a
thread reads the connection itself, on a selector that a socketpair pokes; on
asyncio a reader task puts each answer into a future, so a cancelled driver
leaves it to the next one.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from rqueue._transport import lane_async as lane_io
from rqueue._transport.blpop import PROBE, RELEASE, Watch, blpop_command, release_delays
from rqueue._transport.lanes import _BACKGROUND, _STOP, AGAIN, Lane, LaneWait


class AsyncLaneDriver:
    """The I/O of one lane, run by whichever waiter drives it."""

    def __init__(self, hub: Any, lane: Lane, node: Any) -> None:
        self.hub = hub
        self.lane = lane
        self.node = node
        #: How the driver waits on the lane's connection.
        self.link = lane_io.AsyncLaneLink()
        #: The lane's connection (None until made, or after it was lost), and its
        #: client id (what CLIENT UNBLOCK names).
        self.conn: Any = None
        self.client_id = 0

    def poke(self) -> None:
        """Make the driver look at the lane's waiters again (from any thread)."""
        self.link.poke()

    def discard(self) -> None:
        """Close the lane (retired while idle; on asyncio in the background)."""
        self.hub.background.later(self.close)

    async def close(self) -> None:
        """Close the lane's connection (the lane is retired, nobody drives it): on
        asyncio its reader stops, on threads the selector and poke sockets close."""
        conn, self.conn = self.conn, None
        self.link.detach()  # unasync: self.link.close()
        await _disconnect(conn)

    def _drop(self) -> Any:
        """Let go of the lane's connection; returns it (to disconnect)."""
        conn, self.conn = self.conn, None
        self.link.detach()  # unasync: remove
        return conn

    async def drive(self, me: LaneWait | None) -> None:
        """Run the lane's BLPOPs until ``me`` has finished (None: until the lane
        is idle), then hand the lane on."""
        hub, core, lane, link = self.hub, self.hub.core, self.lane, self.link
        try:
            while True:
                keys = None
                with hub.lock:
                    step = core.next_step(lane, me, bool(self.node.can_unblock))
                    if step == "stop":
                        break
                    if me is not None:  # unasync: remove
                        lane_io.honour_cancel()  # unasync: remove
                    if lane.blocked is None and self.conn is not None and link.lost():  # unasync: remove
                        hub.background.later(_disconnect, self._drop())  # unasync: remove
                    connect = lane.blocked is None and self.conn is None
                    if lane.blocked is None and not connect:
                        now = time.monotonic()
                        keys = core.plan(lane, now)
                        timeout = lane.block_until - now
                if connect:
                    self.conn, self.client_id = await self.node.lane_connection()
                    link.attach(self.conn)  # unasync: remove
                    continue  # (a step: on asyncio the cancellation may have been lost in it)
                if keys is not None:
                    if not keys:
                        continue
                    conn = self.conn
                    blpop = blpop_command(conn, keys, timeout)
                    await link.send(conn, blpop)  # unasync: conn.send_packed_command([blpop], check_health=False)
                reply = await self._answer(None if step == "last" else me, keys is not None)
                if reply is _STOP:
                    continue
                with hub.lock:
                    orphan = core.popped(lane, reply, time.monotonic())
                if orphan is False:
                    hub.hand_on_later(reply[0])  # a wake-up nobody here waits for any more
        except Exception as e:  # noqa: BLE001 - the connection failed: so do the lane's waits
            with hub.lock:
                core.fail(lane, e)
        except BaseException:  # interrupted (cancelled, KeyboardInterrupt): hand the lane on
            with hub.lock:
                lost = self._interrupted()
            for key in lost or ():
                if key.endswith(":wake"):  # whatever it popped is gone: at worst a spurious wake-up
                    hub.hand_on_later(key)
            raise
        finally:
            self._after(me)

    def _interrupted(self) -> frozenset[str] | None:
        """The driver was interrupted (under the lock). If that broke the connection
        (mid-send; on threads also mid-read), let it go; returns the keys of the
        BLPOP whose popped value went with it. A task loses none: its reader reads."""
        if self.conn is None or self.conn.is_connected:
            return None
        lost = None  # unasync: lost = self.lane.blocked
        self.lane.blocked = None
        self.hub.background.later(_disconnect, self._drop())
        return lost

    def _after(self, me: LaneWait | None) -> None:
        """Hand the lane to the next driver (or close it once retired)."""
        hub, lane = self.hub, self.lane
        with hub.lock:
            nxt = hub.core.hand_over(lane, me, time.monotonic())
            if isinstance(nxt, LaneWait):
                nxt.signal()
        if nxt is _BACKGROUND:
            hub.background.start(self.drive, None)
        elif lane.retired:
            hub.background.later(self.close)

    async def _answer(self, me: LaneWait | None, fresh: bool) -> Any:
        """What the BLPOP in flight got: [key, value], None, or AGAIN; _STOP when
        ``me`` finished first (the BLPOP is left for the next driver). ``fresh``:
        it was just sent, so nothing of its answer can be there yet."""
        hub, link = self.hub, self.link
        watch = Watch(hub.core, self.lane, me)
        while fresh or not link.answered():  # unasync: while fresh or not self.conn.can_read(0):
            fresh = False
            now = time.monotonic()
            with hub.lock:
                step = watch.next(now, bool(self.node.can_unblock))
            if step is _STOP:
                return _STOP
            if me is not None:  # unasync: remove
                lane_io.honour_cancel()  # unasync: remove
            if step == PROBE:
                if not await self.node.alive(self.client_id):
                    raise RedisConnectionError("the connection of a blocked BLPOP was lost")
                watch.alive(now)
            elif step == RELEASE:
                await self._release()
                watch.released()
            else:
                assert isinstance(step, float)
                if await link.sleep(step):  # unasync: if link.select(self.conn, step):
                    break
        try:
            return await link.read()  # unasync: return self.conn.read_response()
        except ResponseError:  # MOVED/ASK during a resharding: look again
            return AGAIN

    async def _release(self) -> None:
        """CLIENT UNBLOCK until it works or the BLPOP answers (see ``release_delays``)."""
        for delay in release_delays():
            if await self.node.unblock(self.client_id) or not self.node.can_unblock:
                return
            if await self.link.answer_within(delay):  # unasync: if self.conn.can_read(delay):
                return


async def _disconnect(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.disconnect()
