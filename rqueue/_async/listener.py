"""One pub/sub connection per client that fans tracked messages' events out.

The listener (a task for the asyncio client, a daemon thread for the sync one)
subscribes to a queue's events channel before the first tracked send to that
queue, so no event can be published before it listens. It holds its own
connection (never one of the pool's), answers silence with a PING so a dead
connection is noticed within seconds, and reconnects by itself with backoff.
A lost connection may have lost events: every waiting tracker then gets a
``missed`` event (see ``rqueue._protocol.events``), never silence; so does
every tracker still waiting when the client closes.

The listener itself never runs a user's code: a tracker records its events at
once (so ``wait()`` sees them) and the ``on_event`` callbacks run in order off
the listener (asyncio: in a task per tracker; sync: on one callback thread per
client). So a callback may call the client, even send tracked messages (which
needs the listener to confirm a subscription) or wait for another tracker.

On Redis Cluster a script's PUBLISH reaches every node, so any node will do.

The asyncio module is the source, the sync one its copy by ``scripts/unasync``;
where threads and tasks differ, ``rqueue._transport.concurrency`` and
``rqueue._transport.push`` hold the two hand-written sides.
"""

from __future__ import annotations

import contextlib
import inspect  # unasync: remove
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from rqueue._protocol.errors import ConnectionError, WaitTimeout
from rqueue._protocol.events import EventRouter, Sink, Subscriptions, check_kind, deliver, match
from rqueue._protocol.models import Event
from rqueue._transport.concurrency import (
    AsyncBackground,
    AsyncCallbacks,
    AsyncCondition,
    AsyncFlag,
    AsyncThreadLock,
)
from rqueue._transport.errors import map_error
from rqueue._transport.push import AsyncPushConnection

log = logging.getLogger("rqueue.events")

#: Seconds of silence after which the listener PINGs; as long again without
#: an answer and the connection counts as lost.
HEALTH_INTERVAL = 5.0
SUBSCRIBE_TIMEOUT = 10.0
MAX_BACKOFF = 2.0


class _TrackerRouter(EventRouter):
    """The listener's router: hands each tracker it registers the listener's callbacks."""

    def __init__(self, callbacks: AsyncCallbacks) -> None:
        super().__init__()
        self.callbacks = callbacks

    def register(self, channel: str, message_id: str, sink: Sink, generation: int) -> list[tuple[Sink, Event]]:
        owner = getattr(sink, "__self__", None)
        if isinstance(owner, AsyncTracker):
            owner._callbacks = self.callbacks
        return super().register(channel, message_id, sink, generation)


class AsyncListener:
    """The client's listener: subscribes, reads, reconnects, and routes events to trackers."""

    def __init__(self, redis: Any, url: str) -> None:
        self._redis = redis
        self._url = url
        self._callbacks = AsyncCallbacks()
        self.router = _TrackerRouter(self._callbacks)
        self._subs: Subscriptions[AsyncFlag] = Subscriptions()
        self._lock = AsyncThreadLock()
        self._conn: AsyncPushConnection | None = None
        self._background = AsyncBackground(self._run, "rqueue-events")
        self._closed = False
        self._attempt = 0

    async def ensure(self, channel: str) -> int:
        """Subscribe to ``channel`` (once) and wait until the server confirmed.

        Returns the router generation to register trackers with.
        """
        with self._lock:
            if self._closed:
                raise ConnectionError("the client is closed")
            flag = self._subs.wanted.get(channel)
            if flag is None:
                flag = self._subs.want(channel, AsyncFlag())
                if self._conn is not None:
                    with contextlib.suppress(Exception):  # the listener will notice and resubscribe
                        await self._conn.send("SUBSCRIBE", channel)
            self._background.start()
        confirmed = await flag.wait(SUBSCRIBE_TIMEOUT)
        if self._closed:  # closed meanwhile: aclose() set every flag
            raise ConnectionError("the client is closed")
        if not confirmed:
            why = self._subs.last_error
            reason = f": {map_error(why, self._url, '')}" if why is not None else ""
            raise ConnectionError(f"cannot subscribe to events at {self._url} within {SUBSCRIBE_TIMEOUT:g} s{reason}")
        with self._lock:
            refused = self._subs.refusal(channel, flag)
        if refused is not None:
            raise map_error(refused, self._url, "") from refused
        return self.router.generation

    async def _run(self) -> None:
        """Connect, subscribe, listen; on any failure every tracker gets ``missed``, then reconnect."""
        backoff = 0.05
        while not self._closed:
            conn = None
            try:
                self._attempt += 1
                conn = AsyncPushConnection(self._redis, self._attempt)
                await conn.connect()
                with self._lock:
                    if self._closed:
                        break
                    self._conn = conn
                    self._subs.last_error = None
                    if self._subs.wanted:
                        await conn.send("SUBSCRIBE", *self._subs.wanted)
                backoff = 0.05
                await self._listen(conn)
            except Exception as e:  # noqa: BLE001 - any failure: reconnect
                if self._closed:
                    break
                self._subs.last_error = e
                log.warning("rqueue: event listener lost its connection (%s); reconnecting", type(e).__name__)
            finally:
                with self._lock:
                    self._conn = None
                    self._subs.reset()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.disconnect()
                deliver(self.router.lost())
            if self._closed:
                break
            await self._background.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _listen(self, conn: AsyncPushConnection) -> None:
        """Read pushed replies until closed; PING after silence, raise when that goes unanswered."""
        pinged = False
        while not self._closed:
            try:
                reply = await conn.read(HEALTH_INTERVAL)
            except ResponseError as e:
                with self._lock:
                    self._subs.refused(e)
                continue
            if reply is None:
                if pinged:
                    raise TimeoutError("no answer to PING")
                with self._lock:
                    await conn.send("PING")
                pinged = True
                continue
            pinged = False
            deliver(self._subs.handle(reply, self.router))

    async def aclose(self) -> None:
        """Stop listening (waiting trackers get ``missed``), then finish the callbacks."""
        with self._lock:
            self._closed = True
            conn = self._conn
            waiting = list(self._subs.wanted.values())
        for flag in waiting:  # a tracked send waiting for its subscription ends now, as 'closed'
            flag.set()
        if conn is not None:
            conn.interrupt()
        await self._background.stop(HEALTH_INTERVAL * 2 + 1)
        await self._callbacks.aclose(HEALTH_INTERVAL)  # after the listener's last "missed" events


#: Where the callbacks of a tracker no listener registered run.
_DETACHED = AsyncCallbacks()  # unasync: _DETACHED = Callbacks(inline=True)


class AsyncTracker:
    """The events of one tracked message.

    ``on_event`` runs off the listener, once per event and in order (asyncio:
    in a task of this tracker's, a coroutine function's result awaited before
    the next call; sync: on the client's callback thread); it may call the
    client (a slow one delays the client's other callbacks, never its events
    or ``wait()``).
    """

    def __init__(self, message_id: str, on_event: Callable[[Event], Any] | None = None) -> None:
        self.message_id = message_id
        self._events: list[Event] = []
        self._changed = AsyncCondition()
        self._on_event = on_event
        #: Set by the listener's router when it registers this tracker.
        self._callbacks = _DETACHED
        self._called = 0  # how many events on_event has been given
        self._calling = AsyncThreadLock()

    _NAME = "rqueue.asyncio.AsyncTracker"  # unasync: _NAME = "rqueue.Tracker"

    def __repr__(self) -> str:
        return f"<{self._NAME} {self.message_id} {[e.kind for e in self.events]}>"

    @property
    def events(self) -> list[Event]:
        """The events so far, in order."""
        with self._changed:
            return self._events  # unasync: return list(self._events)

    def _deliver(self, event: Event) -> None:
        """Record ``event`` (from the listener, or the sender for events that came first)."""
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()
        if self._on_event is not None:
            self._callbacks.submit(self._call_back)

    async def _call_back(self) -> None:
        """Give ``on_event`` every recorded event it has not had yet, in order."""
        assert self._on_event is not None
        with self._calling:
            while True:
                with self._changed:
                    if self._called >= len(self._events):
                        return
                    event = self._events[self._called]
                    self._called += 1
                try:
                    result = self._on_event(event)  # unasync: self._on_event(event)
                    if inspect.isawaitable(result):  # unasync: remove
                        await result  # unasync: remove
                except Exception:  # a user's callback must not stop the others
                    log.exception("rqueue: on_event callback failed for %s of message %s", event.kind, event.message_id)

    async def wait(self, kind: str = "processed", timeout: float | None = None) -> Event:
        """The first event of ``kind``, or the final event if the message ended
        without one (``dead_lettered``, ``expired``, ``missed``): check ``.kind``.

        Raises WaitTimeout (a TimeoutError) after ``timeout`` seconds.
        """
        check_kind(kind)
        with self._changed:
            if not await self._changed.wait_for(lambda: match(self._events, kind) is not None, timeout):
                raise WaitTimeout(f"no {kind!r} event for message {self.message_id} within {timeout:g} s")
            found = match(self._events, kind)
        assert found is not None
        return found
