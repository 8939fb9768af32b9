"""The values rqueue hands back: frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rqueue._protocol.codec import AttrValue


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a message in a dead-letter queue died.

    reason: ``max_receives``, ``expired`` or ``rejected``; detail: the receive
    count for the first two, the rejection reason for the last. ``unknown``
    (dead_at: its sent_at) for an entry without a record, e.g. one an older
    version let ``send`` put into a dead-letter queue.
    """

    reason: str
    detail: str
    dead_at: int
    source_queue: str


@dataclass(frozen=True, slots=True)
class Message:
    """A received message. Times are server times in ms since the epoch."""

    id: str
    body: Any
    attributes: dict[str, AttrValue]
    receipt: str
    receive_count: int
    sent_at: int
    first_received_at: int
    queue: str
    dead_letter: DeadLetter | None = field(default=None)
    #: A FIFO queue's message group (and a dead letter's from one); None elsewhere.
    group: str | None = field(default=None)


@dataclass(frozen=True, slots=True)
class QueueAttributes:
    """A queue's stored attributes (seconds and bytes); ``q.set_attributes`` changes them.

    deduplication_window: how long a ``dedup_id`` is remembered; fifo: per-group order
    (fixed at creation); content_based_deduplication: a send without ``dedup_id`` is
    deduplicated by its content; rate_limit: messages handed out per second across every
    consumer (None = off); max_in_flight: messages received and not yet finished, at most.
    """

    visibility_timeout: float
    delay: float
    retention: float
    max_message_size: int
    max_receive_count: int | None
    deduplication_window: float = 300.0
    fifo: bool = False
    content_based_deduplication: bool = False
    rate_limit: float | None = None
    max_in_flight: int | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts now and counters since creation.

    visible: receivable now; in_flight: received and hidden; delayed: hidden and
    never received; dead: in the dead-letter queue. oldest_age: seconds since
    the oldest stored message was sent (0.0 when empty). paused: receives hand
    out nothing until ``resume()``.
    """

    name: str
    visible: int
    in_flight: int
    delayed: int
    dead: int
    sent_total: int
    received_total: int
    deleted_total: int
    dead_lettered_total: int
    expired_total: int
    oldest_age: float
    attributes: QueueAttributes
    paused: bool = False
    #: FIFO queues: groups with a message visible or in flight, and those with one in flight.
    groups: int = 0
    groups_in_flight: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a tracked message (``send(on_event=...)``).

    kind: ``received`` (detail: the receive count), ``processed`` (reply: what
    the consumer passed to ``delete(reply=...)`` or its handler returned),
    ``dead_lettered`` (reason: ``max_receives`` or ``rejected``, detail: the
    receive count or rejection reason), ``expired``, or ``missed``: the
    client's event listener lost its connection, so events may have been
    missed; no further events follow for that message.
    """

    kind: str
    message_id: str
    reply: Any = None
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    """A live subscription of a topic: its name, how many messages it holds
    (visible, delayed and in flight) and seconds until it expires unless
    refreshed."""

    name: str
    depth: int
    expires_in: float


_new = object.__new__
_set_id, _set_body, _set_attributes, _set_receipt, _set_receive_count, _set_sent_at, _set_first, _set_queue, _set_dl = (
    Message.__dict__[name].__set__
    for name in (
        "id",
        "body",
        "attributes",
        "receipt",
        "receive_count",
        "sent_at",
        "first_received_at",
        "queue",
        "dead_letter",
    )
)
_set_group = Message.__dict__["group"].__set__


def make_message(
    id: str,  # noqa: A002 - the field's name
    body: Any,
    attributes: dict[str, AttrValue],
    receipt: str,
    receive_count: int,
    sent_at: int,
    first_received_at: int,
    queue: str,
    dead_letter: DeadLetter | None,
    group: str | None = None,
) -> Message:
    """A ``Message`` equal to ``Message(...)``, built through its slots.

    The receive path builds one per message; a frozen dataclass's ``__init__``
    costs ~2.4 us there, the slot setters half that.
    """
    m = _new(Message)
    _set_id(m, id)
    _set_body(m, body)
    _set_attributes(m, attributes)
    _set_receipt(m, receipt)
    _set_receive_count(m, receive_count)
    _set_sent_at(m, sent_at)
    _set_first(m, first_received_at)
    _set_queue(m, queue)
    _set_dl(m, dead_letter)
    _set_group(m, group)
    return m
