"""A consumer's options and texts, without I/O: what both runners check and derive alike.

The consumer's I/O-free parts: ``core`` (options, validation, reasons),
``flush`` (work for the queue and its calls), ``jobs`` (what is held per
message), ``ledger`` (held messages, slots, leases, outcomes), ``groups``
(FIFO queues: a line and a slot per held group), ``lifecycle`` (the one
state machine and its transition table), ``control`` (every decision of a
running consumer),
``programs`` (what receivers, maintainer and shutdown do, in order) and
``base`` (what both consumer classes share). The runners (``threads``,
``tasks``) only run threads or tasks, do the I/O and wait.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rqueue._consumer.handlers import Handler, Router, all_async, resolver
from rqueue._consumer.metrics import Hook
from rqueue._protocol import operations as _core
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.models import Message

log = logging.getLogger("rqueue.consumer")

#: Extend a lease when less than this share of it is left.
HEARTBEAT_SHARE = 0.5
#: The shortest lease (seconds) a consumer takes, whatever the visibility timeout (0 is allowed):
#: it asks the server for exactly this lease on every receive and every extension, so its own
#: clock and the server's agree and a heartbeat can never make a held message visible.
LEASE_FLOOR = 1.0
#: Dead-letter reasons are cut to this many characters.
MAX_REASON = 4000
DEFAULT_REJECT_REASON = "rejected by the handler"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**(n-1)))."""

    base: float = 0.5
    cap: float = 60.0

    def __post_init__(self) -> None:
        _core.seconds_ms("retry_base", self.base, 0, _core.MAX_VISIBILITY)
        _core.seconds_ms("retry_cap", self.cap, 0, _core.MAX_VISIBILITY)

    def delay(self, attempt: int, rnd: Callable[[], float] = random.random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 1)."""
        return rnd() * min(self.cap, self.base * 2.0 ** min(max(attempt, 1) - 1, 60))


@dataclass(frozen=True, slots=True)
class Settings:
    """A consumer's options, validated once."""

    concurrency: int
    batch_size: int
    backoff: Backoff
    flush_interval: float
    shutdown_timeout: float
    visibility_timeout: float | None

    @classmethod
    def of(
        cls,
        concurrency: int,
        batch_size: int,
        retry_base: float,
        retry_cap: float,
        flush_interval: float,
        shutdown_timeout: float,
        visibility_timeout: float | None,
    ) -> Settings:
        _core.integer("concurrency", concurrency, 1, 10_000)
        _core.integer("batch_size", batch_size, 1, _core.MAX_BATCH)
        _core.seconds_ms("flush_interval", flush_interval, 0, 1)
        _core.seconds_ms("shutdown_timeout", shutdown_timeout, 0, 86400)
        if visibility_timeout is not None:
            _core.seconds_ms("visibility_timeout", visibility_timeout, 0.001, _core.MAX_VISIBILITY)
        return cls(
            concurrency,
            batch_size,
            Backoff(retry_base, retry_cap),
            float(flush_interval),
            float(shutdown_timeout),
            visibility_timeout,
        )


def queue_list(queue_or_queues: Any, kind: type) -> list[Any]:
    """One queue or a list of distinct queues, all of ``kind``."""
    queues = [queue_or_queues] if isinstance(queue_or_queues, kind) else list(queue_or_queues or [])
    if not queues or not all(isinstance(q, kind) for q in queues):
        raise InvalidParameter(f"queue_or_queues must be a {kind.__name__} or a list of them, got {queue_or_queues!r}")
    if len(set(queues)) != len(queues):
        raise InvalidParameter("queue_or_queues lists a queue twice")
    return queues


_WRONG_HANDLERS = {
    False: "async handlers need rqueue.asyncio.Consumer; this one runs sync handlers",
    True: "rqueue.asyncio.Consumer runs async handlers; use rqueue.Consumer for sync ones",
}


@dataclass(frozen=True, slots=True)
class Setup:
    """What the sync and asyncio consumers check and derive from their arguments alike."""

    queues: list[Any]
    client: Any
    settings: Settings
    resolve: Callable[[Message], Handler]
    hooks: list[Hook]
    keys: list[QueueKeys]
    names: list[str]


def setup(
    queue_or_queues: Any,
    handler: Callable[..., Any] | Router,
    kind: type,
    async_handlers: bool,
    hooks: Sequence[Hook],
    options: tuple[Any, ...],
) -> Setup:
    """Validate a consumer's arguments (raising InvalidParameter) and derive its parts."""
    queues = queue_list(queue_or_queues, kind)
    client = queues[0].client
    if any(q.client is not client for q in queues):
        raise InvalidParameter("all queues of a consumer must come from one client")
    if all_async(handler) is not async_handlers:
        raise InvalidParameter(_WRONG_HANDLERS[async_handlers])
    return Setup(
        queues,
        client,
        Settings.of(*options),
        resolver(handler),
        list(hooks),
        [q._keys for q in queues],
        [q.name for q in queues],
    )


def clean(text: str) -> str:
    """``text`` cut to MAX_REASON characters that encode as UTF-8 (lone surrogates escaped)."""
    text = text[:MAX_REASON]
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_REASON]
    return text


def _text(value: object) -> str:
    """Any object as a bounded str; never raises (an unprintable one gives its type)."""
    try:
        if isinstance(value, str):
            return clean(value)
        if isinstance(value, BaseException):
            return failure_reason(value)
        text = str(value)
        if not isinstance(text, str):
            raise TypeError("__str__ returned a non-string")
        return clean(text)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the consumer
        return f"<unprintable {type(value).__name__}>"


def failure_reason(e: BaseException) -> str:
    """``Type: message`` of an exception, one line, bounded, UTF-8 safe."""
    try:
        text = " ".join(str(e)[: MAX_REASON * 2].split())
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the consumer
        text = "<unprintable>"
    return clean(f"{type(e).__name__}: {text}" if text else type(e).__name__)


def reject_reason(error: BaseException) -> str:
    """The dead-letter reason of a ``Reject``: its ``reason`` (any object) as a bounded str."""
    reason = getattr(error, "reason", None)
    if reason is None or (isinstance(reason, str) and not reason):
        return DEFAULT_REJECT_REASON
    return _text(reason)
