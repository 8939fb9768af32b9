"""Every Redis key name rqueue uses, built here and nowhere else.

A queue's keys and its dead-letter queue's keys share one hash tag, the
queue name in braces, so one script can touch both on Redis Cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rqueue._protocol.errors import InvalidParameter, InvalidQueueName

DLQ_SUFFIX = ":dlq"
_WAKE_SUFFIX = ":wake"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


def check_name(name: object) -> str:
    """Return a valid queue name or raise InvalidQueueName."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidQueueName(f"queue name must be 1-80 characters of A-Z, a-z, 0-9, '_' and '-', got {name!r}")
    return name


def check_prefix(prefix: object) -> str:
    """Return a key prefix that cannot break hash tags."""
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "{} "):
        raise InvalidParameter(f"prefix must be a non-empty string without braces or spaces, got {prefix!r}")
    return prefix


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue (``base``) and of its dead-letter queue."""

    name: str
    base: str
    is_dlq: bool = False
    #: A subscription's ids come from its topic's counter (one id per
    #: published message in every subscription); '' = the queue's own.
    shared_seq: str = ""

    @classmethod
    def for_queue(cls, prefix: str, name: str) -> QueueKeys:
        """Keys of the queue ``name``, or of its DLQ for ``name:dlq``."""
        if isinstance(name, str) and name.endswith(DLQ_SUFFIX):
            return cls.for_queue(prefix, check_name(name[: -len(DLQ_SUFFIX)])).dlq()
        return cls(check_name(name), f"{prefix}:{{{name}}}")

    def dlq(self) -> QueueKeys:
        """The keys of this queue's dead-letter queue."""
        if self.is_dlq:
            raise InvalidParameter(f"{self.name!r} is a dead-letter queue and has none of its own")
        return QueueKeys(self.name + DLQ_SUFFIX, self.base + DLQ_SUFFIX, True, self.shared_seq)

    def dead_letter_target(self) -> QueueKeys:
        """Where a receive moves what ran out of receives: this queue's dead-letter queue. A
        dead-letter queue has none (it never buries), so its scripts get unused keys in the
        same hash slot instead, and take one key layout for both."""
        if self.is_dlq:
            return QueueKeys(self.name + DLQ_SUFFIX, self.base + DLQ_SUFFIX, True)
        return self.dlq()

    def source(self) -> QueueKeys:
        """The queue a dead-letter queue belongs to."""
        return QueueKeys(self.name[: -len(DLQ_SUFFIX)], self.base[: -len(DLQ_SUFFIX)], False, self.shared_seq)

    @property
    def meta(self) -> str:
        return self.base + ":meta"

    @property
    def msgs(self) -> str:
        return self.base + ":msgs"

    @property
    def vis(self) -> str:
        return self.base + ":vis"

    @property
    def state(self) -> str:
        """Per-message receive state of the layout of rqueue 0.1: read only by the upgrade
        (lua/upgrade.lua), deleted with the queue. Layout 0.2 keeps it in message headers."""
        return self.base + ":state"

    @property
    def wake(self) -> str:
        """The list a receive's long poll blocks on; a send (or a message becoming visible) pushes to it."""
        return self.base + _WAKE_SUFFIX

    @property
    def why(self) -> str:
        return self.base + ":why"

    @property
    def fifo_waiting(self) -> str:
        """FIFO queues: sorted set of the messages waiting their turn, '<len>:<group><id>' by lex order."""
        return self.base + ":gm"

    @property
    def fifo_ready(self) -> str:
        """FIFO queues: sorted set of the groups that may deliver now, scored by their head's number."""
        return self.base + ":gr"

    @property
    def fifo_busy(self) -> str:
        """FIFO queues: hash of group -> its messages in flight."""
        return self.base + ":gf"

    @property
    def fifo_delayed(self) -> str:
        """FIFO queues: hash of group -> when its latest delayed message becomes visible (a later
        message of the group becomes visible no earlier)."""
        return self.base + ":gd"

    def fifo(self) -> list[str]:
        """The three keys of a FIFO queue's groups (touched by scripts only when meta says fifo)."""
        return [self.fifo_waiting, self.fifo_ready, self.fifo_busy]

    @property
    def seq(self) -> str:
        """The id counter, shared by a queue and its DLQ so receipts never collide."""
        if self.shared_seq:
            return self.shared_seq
        return (self.source() if self.is_dlq else self).base + ":seq"

    @property
    def events(self) -> str:
        """The pub/sub channel of tracked messages' events (carries the hash tag)."""
        return self.base + ":events"

    def reply(self, message_id: str) -> str:
        """The list a request's sender blocks on for message ``message_id``'s reply."""
        return f"{self.base}:reply:{message_id}"

    @property
    def pattern(self) -> str:
        """A SCAN MATCH pattern for every key of this queue (and of its dead-letter queue)."""
        return glob_escape(self.base) + ":*"

    def own(self) -> list[str]:
        """Every key of this one queue except the shared seq."""
        return [self.meta, self.msgs, self.vis, self.state, self.wake, self.why]


@dataclass(frozen=True, slots=True)
class TopicKeys:
    """The keys of a topic. Its hash tag ``{topic:<name>}`` (no queue name has
    a colon) is shared by every subscription's queue, so one script can copy a
    message into all of them on Redis Cluster."""

    name: str
    base: str

    @classmethod
    def for_topic(cls, prefix: str, name: str) -> TopicKeys:
        return cls(check_name(name), f"{prefix}:{{topic:{name}}}")

    @property
    def subs(self) -> str:
        """Sorted set: subscription name -> expires-at (ms)."""
        return self.base + ":subs"

    @property
    def version(self) -> str:
        """Counter bumped whenever the set of subscriptions changes."""
        return self.base + ":ver"

    @property
    def seq(self) -> str:
        """Message ids and receipt tokens of every subscription."""
        return self.base + ":seq"

    @property
    def subscriptions_pattern(self) -> str:
        """A SCAN MATCH pattern for every key of every subscription of this topic."""
        return glob_escape(self.base) + ":sub:*"

    def subscription(self, name: str) -> QueueKeys:
        """The queue keys of subscription ``name``."""
        return QueueKeys(f"{self.name}/{check_name(name)}", f"{self.base}:sub:{name}", False, self.seq)


def registry(prefix: str) -> str:
    """The set of queue names, for list_queues (not touched by scripts)."""
    return f"{prefix}:queues"


def glob_escape(text: str) -> str:
    """``text`` matching only itself in a SCAN MATCH pattern (a prefix may hold ``*?[]``)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def is_wake_key(key: str) -> bool:
    """Whether ``key`` is a queue's wake-up list (``QueueKeys.wake``), not a request's reply list."""
    return key.endswith(_WAKE_SUFFIX)


def prefix_pattern(prefix: str) -> str:
    """A SCAN MATCH pattern for every key under ``prefix`` (how tools and tests find them all)."""
    return f"{glob_escape(prefix)}:*"


def reply_pattern(prefix: str) -> str:
    """A SCAN MATCH pattern for the reply lists of every queue under ``prefix``."""
    return f"{glob_escape(prefix)}:*:reply:*"
