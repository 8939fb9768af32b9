"""Routing published events to the trackers of one client; no I/O.

Scripts publish ``<kind>|<id>|<data>`` on a queue's events channel. A
listener (``rqueue._transport.listen``) hands each payload to ``Router.dispatch``,
which returns the (sink, event) pairs to deliver. An event can arrive before
its sender has registered a tracker (the consumer was quicker than the
send's reply), so unclaimed events wait in a bounded buffer. When the
listener loses its connection, ``Router.lost`` turns every tracker's wait
into a ``missed`` event, and a generation number catches trackers that
register across a reconnect.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from rqueue._protocol import codec as _codec
from rqueue._protocol.models import Event

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


class Router:
    """Trackers by (channel, message id); thread-safe."""

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
