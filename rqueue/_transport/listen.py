"""One pub/sub connection per client that fans tracked messages' events out.

The listener (a daemon thread for the sync client, a task for asyncio)
subscribes to a queue's events channel before the first tracked send to that
queue, so no event can be published before it listens. It holds its own
connection (never one of the pool's), answers silence with a PING so a dead
connection is noticed within seconds, and reconnects by itself with backoff.
A lost connection may have lost events: every waiting tracker then gets a
``missed`` event (see ``rqueue._protocol.events``), never silence.

The listener itself never runs a user's code: a tracker records its events at
once (so ``wait()`` sees them) and the sync client's ``on_event`` callbacks run
in order on a callback thread of their own, the asyncio client's in a task per
tracker. So a callback may call the client, even send tracked messages (which
needs the listener to confirm a subscription) or wait for another tracker.

On Redis Cluster a script's PUBLISH reaches every node, so any node will do.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from rqueue._protocol import events as _events
from rqueue._protocol.errors import ConnectionError, InvalidParameter, WaitTimeout
from rqueue._protocol.events import Router, Sink
from rqueue._protocol.models import Event
from rqueue._transport.base import map_error

log = logging.getLogger("rqueue.events")

#: Seconds of silence after which the listener PINGs; as long again without
#: an answer and the connection counts as lost.
HEALTH_INTERVAL = 5.0
SUBSCRIBE_TIMEOUT = 10.0
MAX_BACKOFF = 2.0


def _deliver(due: list[tuple[Sink, Event]]) -> None:
    for sink, event in due:
        try:
            sink(event)
        except Exception:  # a sink that is not a tracker (a plugin's): it must not kill the listener
            log.exception("rqueue: event sink failed for %s of message %s", event.kind, event.message_id)


class _Callbacks:
    """One thread that runs the sync trackers' ``on_event`` callbacks, one job at a time.

    Not the listener's thread: a callback that calls the client (a tracked
    send waits for the listener to confirm a subscription) must not block it.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rqueue-events-callbacks", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def close(self, timeout: float) -> None:
        """Run what was submitted, then end the thread (not waiting for it from a callback)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout)


class _SyncRouter(Router):
    """The sync listener's router: hands each registered tracker the callback thread."""

    def __init__(self, callbacks: _Callbacks) -> None:
        super().__init__()
        self.callbacks = callbacks

    def register(self, channel: str, message_id: str, sink: Sink, generation: int) -> list[tuple[Sink, Event]]:
        owner = getattr(sink, "__self__", None)
        if isinstance(owner, Tracker):
            owner._callbacks = self.callbacks
        return super().register(channel, message_id, sink, generation)


def _check_kind(kind: str) -> None:
    if kind not in _events.KINDS:
        raise InvalidParameter(f"kind must be one of {sorted(_events.KINDS)}, got {kind!r}")


def _match(events: list[Event], kind: str) -> Event | None:
    for e in events:
        if e.kind == kind or e.kind in _events.FINAL:
            return e
    return None


class _Base:
    def __init__(self, redis: Any, url: str) -> None:
        self._redis = redis
        self._url = url
        self.router = Router()
        self._closed = False
        self._attempt = 0
        self._wanted: dict[str, Any] = {}  # channel -> its threading.Event / asyncio.Event
        #: Channels whose SUBSCRIBE the server refused, and why (an ACL without the channel).
        self._refusals: dict[str, BaseException] = {}
        #: Why the last connection attempt failed, for a subscribe that times out.
        self._last_error: BaseException | None = None

    def _refused(self, err: BaseException) -> None:
        """An error reply on the listener's connection: a SUBSCRIBE was refused, so every
        subscription not confirmed yet fails with it (the connection itself is fine)."""
        for channel, ev in list(self._wanted.items()):
            if not ev.is_set():
                self._refusals[channel] = err
                del self._wanted[channel]
                ev.set()

    def _check_subscribed(self, channel: str, ev: Any) -> None:
        """After ``ev`` was set: raise why, if the subscription was refused."""
        if self._wanted.get(channel) is not ev and channel in self._refusals:
            raise map_error(self._refusals[channel], self._url, "") from self._refusals[channel]

    def _timed_out(self) -> ConnectionError:
        why = self._last_error
        reason = f": {map_error(why, self._url, '')}" if why is not None else ""
        return ConnectionError(f"cannot subscribe to events at {self._url} within {SUBSCRIBE_TIMEOUT:g} s{reason}")

    def _handle(self, msg: Any) -> list[tuple[Sink, Event]]:
        """Act on one pushed reply; returns deliveries."""
        if not isinstance(msg, list) or not msg:
            return []
        kind = msg[0]
        if kind == b"message":
            try:
                return self.router.dispatch(msg[1].decode(), msg[2])
            except (ValueError, UnicodeDecodeError):
                log.warning("rqueue: ignoring a malformed event on %r", msg[1])
                return []
        if kind == b"subscribe":
            self._confirmed(msg[1].decode())
        return []

    def _confirmed(self, channel: str) -> None:
        raise NotImplementedError


class SyncListener(_Base):
    """The sync client's listener thread."""

    def __init__(self, redis: Any, url: str) -> None:
        super().__init__(redis, url)
        self._callbacks = _Callbacks()
        self.router = _SyncRouter(self._callbacks)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._thread: threading.Thread | None = None

    def _confirmed(self, channel: str) -> None:
        ev = self._wanted.get(channel)
        if ev is not None:
            ev.set()

    def ensure(self, channel: str) -> int:
        """Subscribe to ``channel`` (once) and wait until the server confirmed.

        Returns the router generation to register trackers with.
        """
        with self._lock:
            if self._closed:
                raise ConnectionError("the client is closed")
            ev = self._wanted.get(channel)
            if ev is None:
                ev = self._wanted[channel] = threading.Event()
                self._refusals.pop(channel, None)
                if self._conn is not None:
                    with contextlib.suppress(Exception):  # the listener will notice and resubscribe
                        self._conn.send_command("SUBSCRIBE", channel)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rqueue-events", daemon=True)
                self._thread.start()
        if not ev.wait(SUBSCRIBE_TIMEOUT):
            raise self._timed_out()
        with self._lock:
            self._check_subscribed(channel, ev)
        return self.router.generation

    def _make_connection(self) -> Any:
        r = self._redis
        self._attempt += 1
        if hasattr(r, "get_nodes"):  # cluster: any node hears every PUBLISH
            nodes = r.get_nodes()
            pool = nodes[self._attempt % len(nodes)].redis_connection.connection_pool
        else:
            pool = r.connection_pool
        # Not pool.make_connection(): the pool would count it against max_connections for
        # good, and every reconnect would use up one more.
        return pool.connection_class(**pool.connection_kwargs)

    def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            conn = None
            try:
                conn = self._make_connection()
                conn.connect()
                with self._lock:
                    if self._closed:
                        break
                    self._conn = conn
                    self._last_error = None
                    channels = list(self._wanted)
                    if channels:
                        conn.send_command("SUBSCRIBE", *channels)
                backoff = 0.05
                pinged = False
                while not self._closed:
                    if not conn.can_read(HEALTH_INTERVAL):
                        if pinged:
                            raise TimeoutError("no answer to PING")
                        with self._lock:
                            conn.send_command("PING")
                        pinged = True
                        continue
                    pinged = False
                    try:
                        reply = conn.read_response(push_request=True)
                    except ResponseError as e:
                        with self._lock:
                            self._refused(e)
                        continue
                    _deliver(self._handle(reply))
            except Exception as e:  # noqa: BLE001 - any failure: reconnect
                if self._closed:
                    break
                self._last_error = e
                log.warning("rqueue: event listener lost its connection (%s); reconnecting", type(e).__name__)
            finally:
                with self._lock:
                    self._conn = None
                    for ev in self._wanted.values():
                        ev.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.disconnect()
            _deliver(self.router.lost())
            if self._closed:
                break
            threading.Event().wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, thread = self._conn, self._thread
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()  # wakes the thread's read
        if thread is not None and thread is not threading.current_thread():
            thread.join(HEALTH_INTERVAL * 2 + 1)
        self._callbacks.close(HEALTH_INTERVAL)  # after the listener's last "missed" events


class AsyncListener(_Base):
    """The asyncio client's listener task."""

    def __init__(self, redis: Any, url: str) -> None:
        super().__init__(redis, url)
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    def _confirmed(self, channel: str) -> None:
        ev = self._wanted.get(channel)
        if ev is not None:
            ev.set()

    async def ensure(self, channel: str) -> int:
        """Subscribe to ``channel`` (once) and wait until the server confirmed."""
        if self._closed:
            raise ConnectionError("the client is closed")
        ev = self._wanted.get(channel)
        if ev is None:
            ev = self._wanted[channel] = asyncio.Event()
            self._refusals.pop(channel, None)
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.send_command("SUBSCRIBE", channel)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        try:
            await asyncio.wait_for(ev.wait(), SUBSCRIBE_TIMEOUT)
        except TimeoutError:
            raise self._timed_out() from None
        self._check_subscribed(channel, ev)
        return self.router.generation

    def _make_connection(self) -> Any:
        r = self._redis
        self._attempt += 1
        if hasattr(r, "get_nodes"):
            nodes = r.get_nodes()
            node = nodes[self._attempt % len(nodes)]
            return node.connection_class(**node.connection_kwargs)
        return r.connection_pool.make_connection()

    async def _run(self) -> None:
        backoff = 0.05
        while not self._closed:
            conn = None
            try:
                conn = self._make_connection()
                await conn.connect()
                self._conn = conn
                self._last_error = None
                if self._wanted:
                    await conn.send_command("SUBSCRIBE", *self._wanted)
                backoff = 0.05
                pinged = False
                while not self._closed:
                    try:
                        msg = await conn.read_response(timeout=HEALTH_INTERVAL, push_request=True)
                    except ResponseError as e:
                        self._refused(e)
                        continue
                    if msg is None:
                        if pinged:
                            raise TimeoutError("no answer to PING")
                        await conn.send_command("PING")
                        pinged = True
                        continue
                    pinged = False
                    _deliver(self._handle(msg))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure: reconnect
                if not self._closed:
                    self._last_error = e
                    log.warning("rqueue: event listener lost its connection (%s); reconnecting", type(e).__name__)
            finally:
                self._conn = None
                for ev in self._wanted.values():
                    ev.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.disconnect()
                _deliver(self.router.lost())
            if self._closed:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class Tracker:
    """The events of one tracked message, for the sync client.

    ``on_event`` runs on the client's callback thread, in the order of the
    events; it may call the client (a slow one delays the client's other
    callbacks, never its events or ``wait()``).
    """

    def __init__(self, message_id: str, on_event: Callable[[Event], Any] | None = None) -> None:
        self.message_id = message_id
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._on_event = on_event
        #: Set by the listener's router when it registers this tracker.
        self._callbacks: _Callbacks | None = None
        self._called = 0  # how many events on_event has been given
        self._calling = threading.Lock()

    def __repr__(self) -> str:
        return f"<rqueue.Tracker {self.message_id} {[e.kind for e in self.events]}>"

    @property
    def events(self) -> list[Event]:
        """The events so far, in order."""
        with self._cond:
            return list(self._events)

    def _deliver(self, event: Event) -> None:
        """Record ``event`` (from the listener, or the sender for events that came first)."""
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()
        if self._on_event is not None:
            if self._callbacks is not None:
                self._callbacks.submit(self._call_back)
            else:  # not registered through a listener: on the caller's thread
                self._call_back()

    def _call_back(self) -> None:
        """Give ``on_event`` every recorded event it has not had yet, in order."""
        assert self._on_event is not None
        with self._calling:
            while True:
                with self._cond:
                    if self._called >= len(self._events):
                        return
                    event = self._events[self._called]
                    self._called += 1
                try:
                    self._on_event(event)
                except Exception:  # a user's callback must not stop the others
                    log.exception("rqueue: on_event callback failed for %s of message %s", event.kind, event.message_id)

    def wait(self, kind: str = "processed", timeout: float | None = None) -> Event:
        """The first event of ``kind``, or the final event if the message ended
        without one (``dead_lettered``, ``expired``, ``missed``): check ``.kind``.

        Raises WaitTimeout (a TimeoutError) after ``timeout`` seconds.
        """
        _check_kind(kind)
        with self._cond:
            if not self._cond.wait_for(lambda: _match(self._events, kind) is not None, timeout):
                raise WaitTimeout(f"no {kind!r} event for message {self.message_id} within {timeout:g} s")
            found = _match(self._events, kind)
        assert found is not None
        return found


#: Callback tasks of asyncio trackers that may be dropped (``send(on_event=...)`` keeps none).
_CALLING: set[asyncio.Task[None]] = set()


class AsyncTracker:
    """The events of one tracked message, for the asyncio client.

    ``on_event`` (a function or a coroutine function) runs in a task of this
    tracker's, once per event and in order (a coroutine is awaited before the
    next event's call), never in the listener's task.
    """

    def __init__(self, message_id: str, on_event: Callable[[Event], Any] | None = None) -> None:
        self.message_id = message_id
        self.events: list[Event] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._on_event = on_event
        self._called = 0  # how many events on_event has been given
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<rqueue.asyncio.AsyncTracker {self.message_id} {[e.kind for e in self.events]}>"

    def _deliver(self, event: Event) -> None:
        self.events.append(event)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        if self._on_event is not None and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._call_back())
            _CALLING.add(self._task)  # the loop keeps only weak references to tasks
            self._task.add_done_callback(_CALLING.discard)

    async def _call_back(self) -> None:
        """Give ``on_event`` every recorded event it has not had yet, in order."""
        assert self._on_event is not None
        while self._called < len(self.events):
            event = self.events[self._called]
            self._called += 1
            try:
                result = self._on_event(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a user's callback must not stop the others
                log.exception("rqueue: on_event callback failed for %s of message %s", event.kind, event.message_id)

    async def wait(self, kind: str = "processed", timeout: float | None = None) -> Event:
        """The first event of ``kind``, or the final event if the message ended
        without one (``dead_lettered``, ``expired``, ``missed``): check ``.kind``.

        Raises WaitTimeout (a TimeoutError) after ``timeout`` seconds.
        """
        _check_kind(kind)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while (found := _match(self.events, kind)) is None:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(f"no {kind!r} event for message {self.message_id} within {timeout:g} s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fut, remaining)
        return found
