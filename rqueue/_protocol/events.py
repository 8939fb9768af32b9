"""Routing published events to the trackers of one client, and the listener's bookkeeping; no I/O.

Scripts publish ``<kind>|<id>|<data>`` on a queue's events channel. A
listener (``rqueue._async.listener``) hands each pushed reply to
``Subscriptions.handle``, which confirms subscriptions and has
``EventRouter.dispatch`` return the (sink, event) pairs to deliver. An event
can arrive before its sender has registered a tracker (the consumer was
quicker than the send's reply), so unclaimed events wait in a bounded
buffer. When the listener loses its connection, ``EventRouter.lost`` turns
every tracker's wait into a ``missed`` event, and a generation number
catches trackers that register across a reconnect.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from rqueue._protocol import codec as _codec
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.models import Event

log = logging.getLogger("rqueue.events")

Sink = Callable[[Event], None]

#: Kinds after which no more events come for a message.
FINAL = frozenset({"processed", "dead_lettered", "expired", "missed"})
KINDS = frozenset({"received", *FINAL})
#: Events kept for ids nobody has claimed yet (other clients' messages, or a
#: send whose tracker is about to register).
UNCLAIMED_MAX = 10_000


def parse(payload: bytes) -> Event:
    """The Event in a published payload."""
    kind_b, mid_b, rest = payload.split(b"|", 2)
    kind, mid = kind_b.decode(), mid_b.decode()
    if kind == "processed":
        return Event(kind, mid, _codec.decode_body(rest))
    if kind == "dead_lettered":
        reason, _, detail = rest.decode().partition("|")
        return Event(kind, mid, None, reason, detail)
    if kind == "received":
        return Event(kind, mid, None, "", rest.decode())
    return Event(kind, mid)


def check_kind(kind: str) -> None:
    """A kind ``wait`` can wait for, or InvalidParameter."""
    if kind not in KINDS:
        raise InvalidParameter(f"kind must be one of {sorted(KINDS)}, got {kind!r}")


def match(events: list[Event], kind: str) -> Event | None:
    """The first event of ``kind``, or the final event if one came first."""
    for e in events:
        if e.kind == kind or e.kind in FINAL:
            return e
    return None


def deliver(due: list[tuple[Sink, Event]]) -> None:
    """Hand each event to its sink; one failing sink does not stop the others."""
    for sink, event in due:
        try:
            sink(event)
        except Exception:  # a sink that is not a tracker (a plugin's): it must not kill the listener
            log.exception("rqueue: event sink failed for %s of message %s", event.kind, event.message_id)


class EventRouter:
    """Trackers by (channel, message id); thread-safe.

    (Not ``rqueue.Router``, the consumer's router of messages to handlers.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sinks: dict[tuple[str, str], Sink] = {}
        self._unclaimed: OrderedDict[tuple[str, str], list[Event]] = OrderedDict()
        self.generation = 0

    def dispatch(self, channel: str, payload: bytes) -> list[tuple[Sink, Event]]:
        """Deliveries for one published payload."""
        event = parse(payload)
        key = (channel, event.message_id)
        with self._lock:
            sink = self._sinks.get(key)
            if sink is None:
                self._unclaimed.setdefault(key, []).append(event)
                self._unclaimed.move_to_end(key)
                while len(self._unclaimed) > UNCLAIMED_MAX:
                    self._unclaimed.popitem(last=False)
                return []
            if event.kind in FINAL:
                del self._sinks[key]
        return [(sink, event)]

    def register(self, channel: str, message_id: str, sink: Sink, generation: int) -> list[tuple[Sink, Event]]:
        """Track a message sent while the listener was at ``generation``.

        Returns deliveries due at once: events that came first, or ``missed``
        when the listener reconnected since.
        """
        key = (channel, message_id)
        with self._lock:
            early = self._unclaimed.pop(key, [])
            if generation != self.generation:
                early.append(Event("missed", message_id))
            if not any(e.kind in FINAL for e in early):
                self._sinks[key] = sink
        due: list[tuple[Sink, Event]] = []
        for e in early:
            due.append((sink, e))
            if e.kind in FINAL:
                break
        return due

    def lost(self) -> list[tuple[Sink, Event]]:
        """The listener lost its connection: every tracker gets ``missed``."""
        with self._lock:
            self.generation += 1
            sinks, self._sinks = self._sinks, {}
            self._unclaimed.clear()
        return [(sink, Event("missed", mid)) for (_, mid), sink in sinks.items()]

    def pending(self) -> int:
        """How many messages are tracked and not finished."""
        with self._lock:
            return len(self._sinks)


class Settable(Protocol):
    """What ``Subscriptions`` needs of a ``threading.Event`` or ``asyncio.Event``-like flag."""

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...


F = TypeVar("F", bound=Settable)


class Subscriptions(Generic[F]):
    """The listener's channels, each with a flag set once the server confirmed it.

    The listener guards it with its own lock (on the sync side) where
    another thread may look at it too.
    """

    def __init__(self) -> None:
        self.wanted: dict[str, F] = {}
        #: Channels whose SUBSCRIBE the server refused, and why (an ACL without the channel).
        self.refusals: dict[str, BaseException] = {}
        #: Why the last connection attempt failed, for a subscribe that times out.
        self.last_error: BaseException | None = None

    def want(self, channel: str, flag: F) -> F:
        """Wait for ``channel`` with ``flag`` from now on (forgetting an earlier refusal)."""
        self.wanted[channel] = flag
        self.refusals.pop(channel, None)
        return flag

    def confirmed(self, channel: str) -> None:
        flag = self.wanted.get(channel)
        if flag is not None:
            flag.set()

    def refused(self, err: BaseException) -> None:
        """An error reply on the listener's connection: a SUBSCRIBE was refused, so every
        subscription not confirmed yet fails with it (the connection itself is fine)."""
        for channel, flag in list(self.wanted.items()):
            if not flag.is_set():
                self.refusals[channel] = err
                del self.wanted[channel]
                flag.set()

    def refusal(self, channel: str, flag: F) -> BaseException | None:
        """After ``flag`` was set: why the subscription was refused, or None."""
        if self.wanted.get(channel) is not flag:
            return self.refusals.get(channel)
        return None

    def reset(self) -> None:
        """The connection is gone: no channel is confirmed any more."""
        for flag in self.wanted.values():
            flag.clear()

    def handle(self, msg: Any, router: EventRouter) -> list[tuple[Sink, Event]]:
        """Act on one pushed reply; returns the deliveries due."""
        if not isinstance(msg, list) or not msg:
            return []
        kind = msg[0]
        if kind == b"message":
            try:
                return router.dispatch(msg[1].decode(), msg[2])
            except (ValueError, UnicodeDecodeError):
                log.warning("rqueue: ignoring a malformed event on %r", msg[1])
                return []
        if kind == b"subscribe":
            self.confirmed(msg[1].decode())
        return []
