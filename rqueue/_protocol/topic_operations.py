"""The I/O-free core of topics: every subscription is a queue in the topic's
hash slot; publish copies a batch into all live ones in one script.

The client keeps the subscription list it last read with its version and
passes their keys to publish; the script checks the version (any subscribe
or unsubscribe bumps it), so a stale list writes nothing and is read again.
Expired subscriptions are reaped by the next publish or subscribe.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys, TopicKeys, check_name
from rqueue._protocol.models import SubscriptionInfo
from rqueue._protocol.operations import Call, Op, create_queue, encode_batch, seconds_ms, upgrade_flow
from rqueue._protocol.scripts import script
from rqueue._protocol.sending import ids_of

MIN_TTL, MAX_TTL = 0.05, 30 * 86400
DEFAULT_TTL = 86400.0
#: Re-reads of the subscription list before publish gives up on a topic
#: whose subscriptions churn faster than it can publish.
MAX_STALE = 20


@dataclass(frozen=True, slots=True)
class Members:
    """The subscriptions as last read, with the version publish checks."""

    version: bytes
    names: list[str]
    expires_at: list[int]
    now: int

    def expired(self) -> list[str]:
        return [n for n, e in zip(self.names, self.expires_at, strict=True) if e <= self.now]


class MemberCache:
    """The last ``Members`` a topic handle read (shared by its threads/tasks)."""

    __slots__ = ("members",)

    def __init__(self) -> None:
        self.members: Members | None = None


def all_keys(keys: QueueKeys) -> list[str]:
    """The 12 keys of a subscription and its dead-letter queue, as the scripts take them."""
    d = keys.dlq()
    return [
        keys.meta,
        keys.msgs,
        keys.vis,
        keys.state,
        keys.wake,
        keys.why,
        d.meta,
        d.msgs,
        d.vis,
        d.state,
        d.wake,
        d.why,
    ]


def read(topic: TopicKeys) -> Call[Members]:
    def parse(reply: list[Any]) -> Members:
        version, flat, now = reply
        return Members(version, [n.decode() for n in flat[::2]], [int(float(s)) for s in flat[1::2]], int(now))

    return Call(script("topic_read"), [topic.subs, topic.version], [], parse, topic.name)


def unsubscribe(topic: TopicKeys, names: Iterable[str], only_expired: bool) -> Call[list[str]]:
    """Remove subscriptions (only expired ones when ``only_expired``) with their messages."""
    names = [check_name(n) for n in names]
    keys = [topic.subs, topic.version]
    for n in names:
        keys += all_keys(topic.subscription(n))
    return Call(
        script("unsubscribe"),
        keys,
        ["expired" if only_expired else "all", *names],
        lambda r: [x.decode() for x in r],
        topic.name,
    )


def publish_flow(topic: TopicKeys, cache: MemberCache, bodies: Iterable[Any]) -> Generator[Op, Any, list[str]]:
    """Publish a batch to every live subscription; returns the message ids."""
    encoded = encode_batch(bodies, None)
    n = len(encoded)
    for _ in range(MAX_STALE):
        members = cache.members
        if members is None:
            members = cache.members = yield read(topic)
        keys = [topic.subs, topic.version, topic.seq]
        for name in members.names:
            sub = topic.subscription(name)
            keys += (sub.meta, sub.msgs, sub.vis, sub.wake)
        reply = yield Call(
            script("publish"),
            keys,
            [members.version, len(members.names), *members.names, *encoded],
            _identity,
            topic.name,
        )
        if reply[0] == b"stale":
            cache.members = None
            continue
        last = int(reply[1])
        expired = [x.decode() for x in reply[3]]
        if expired:
            yield unsubscribe(topic, expired, only_expired=True)
            cache.members = None
        return ids_of(last, n)
    raise RuntimeError(f"topic {topic.name!r}: its subscriptions changed {MAX_STALE} times during one publish")


def _identity(reply: Any) -> Any:
    return reply


def subscribe_flow(
    topic: TopicKeys,
    name: str,
    ttl: float,
    *,
    refresh: bool = False,
    **attributes: Any,
) -> Generator[Op, Any, bool]:
    """Create or refresh a subscription; True when it joined now. ``attributes``: a queue's
    (QueueAttributes' fields but ``fifo``). With ``refresh`` an existing subscription keeps its
    stored attributes (``set_attributes`` may have changed them) and only its expiry moves."""
    sub = topic.subscription(name)
    ttl_ms = seconds_ms("ttl", ttl, MIN_TTL, MAX_TTL)
    if attributes.get("fifo"):
        raise InvalidParameter("a subscription cannot be a FIFO queue (fifo must be False)")
    # Validation and the attribute arguments are the queue's own.
    created = create_queue(sub, attributes)
    members: Members = yield read(topic)
    expired = members.expired()
    keys = [topic.subs, topic.version, topic.seq, sub.meta, sub.dlq().meta]
    for n in expired:
        keys += all_keys(topic.subscription(n))
    joined: int = yield Call(
        script("subscribe"),
        keys,
        [*created.args, ttl_ms, sub.name.split("/", 1)[1], "r" if refresh else "", *expired],
        int,
        sub.name,
    )
    if joined == 2:  # made by rqueue 0.1
        yield from upgrade_flow(sub)
    return joined == 1


def subscriptions_flow(topic: TopicKeys) -> Generator[Op, Any, list[SubscriptionInfo]]:
    """The live subscriptions with their depth."""
    members: Members = yield read(topic)
    live = [(n, e) for n, e in zip(members.names, members.expires_at, strict=True) if e > members.now]
    if not live:
        return []
    depths = yield Call(
        script("topic_depths"),
        [topic.subscription(n).msgs for n, _ in live],
        [],
        lambda r: [int(x) for x in r],
        topic.name,
    )
    return [SubscriptionInfo(n, d, (e - members.now) / 1000) for (n, e), d in zip(live, depths, strict=True)]
