"""The consumer's state, without I/O: shared by the thread and asyncio runners.

``Tracker`` owns every message a consumer holds: slots (backpressure),
leases (heartbeat), finished work waiting to be acknowledged (ack batching)
and what each outcome means for the queue (delete, retry after a backoff,
dead-letter). The runners only move messages between Redis and handlers and
call ``Tracker`` under their lock (threads) or on their loop (asyncio).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rqueue._consumer.handlers import Handler, Reject, Router, all_async, resolver
from rqueue._consumer.metrics import Hook, Outcome
from rqueue._protocol import codec as _codec
from rqueue._protocol import operations as _core
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.models import Message
from rqueue._protocol.operations import Call

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


@dataclass(slots=True)
class Job:
    """A message the consumer holds: queued for a slot, then running."""

    message: Message
    queue: int
    lease_end: float
    started: bool = False


@dataclass(slots=True)
class Flush:
    """Work for the queue: acks (with the handlers' replies), retries, dead letters, releases."""

    deletes: dict[int, list[tuple[str, Any]]] = field(default_factory=dict)
    retries: list[tuple[int, str, float]] = field(default_factory=list)
    rejects: list[tuple[int, str, str]] = field(default_factory=list)
    releases: dict[int, list[str]] = field(default_factory=dict)
    #: What each call of the last ``calls()`` carries, in order: (label, queue index).
    plan: list[tuple[str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.deletes or self.retries or self.rejects or self.releases)

    def calls(self, keys: Sequence[QueueKeys]) -> list[Call[Any]]:
        """The script calls that carry this flush out (one pipeline). Never raises.

        Acks go out here and only here; each carries its handler's return
        value (``reply``) so replies to waiting senders can ride along (as
        None when it cannot be encoded). Batches over the scripts' limit are
        split. An item no call can be built for is logged and left out of
        this flush (its message comes back after its lease): one bad item
        never holds back the others.
        """
        out: list[Call[Any]] = []
        plan: list[tuple[str, int]] = []
        self.plan = plan
        for qi, acks in list(self.deletes.items()):
            kept = _batches(out, plan, "acknowledging", qi, acks, functools.partial(_delete, keys[qi]))
            if kept is not acks:
                self._keep(self.deletes, qi, kept)
        if self.retries:
            self.retries = [
                i for i in self.retries if _one(out, plan, "retry", i[0], i[1], functools.partial(_retry, keys, i))
            ]
        if self.rejects:
            self.rejects = [
                i
                for i in self.rejects
                if _one(out, plan, "dead-letter", i[0], i[1], functools.partial(_reject, keys, i))
            ]
        for qi, receipts in list(self.releases.items()):
            kept = _batches(out, plan, "release", qi, receipts, functools.partial(_release, keys[qi]))
            if kept is not receipts:
                self._keep(self.releases, qi, kept)
        return out

    @staticmethod
    def _keep(groups: dict[int, list[Any]], qi: int, kept: list[Any]) -> None:
        if kept:
            groups[qi] = kept
        else:
            del groups[qi]

    def merge(self, other: Flush) -> None:
        """Put back work that could not be sent (connection lost), keeping order."""
        for qi, acks in other.deletes.items():
            self.deletes[qi] = acks + self.deletes.get(qi, [])
        self.retries[:0] = other.retries
        self.rejects[:0] = other.rejects
        for qi, receipts in other.releases.items():
            self.releases[qi] = receipts + self.releases.get(qi, [])


def _delete(keys: QueueKeys, acks: list[tuple[str, Any]]) -> Call[Any]:
    """Acks with their replies (None for a tracked reply that cannot be encoded)."""
    return _core.delete(keys, [r for r, _ in acks], [_sendable(r, reply) for r, reply in acks])


def _release(keys: QueueKeys, receipts: list[str]) -> Call[Any]:
    return _core.change_visibility(keys, receipts, 0)


def _retry(keys: Sequence[QueueKeys], item: tuple[int, str, float]) -> Call[Any]:
    qi, receipt, seconds = item
    return _core.change_visibility(keys[qi], [receipt], round(seconds, 3))


def _reject(keys: Sequence[QueueKeys], item: tuple[int, str, str]) -> Call[Any]:
    qi, receipt, reason = item
    return _core.reject(keys[qi], [receipt], reason)


_VERB = {"acknowledging": "acknowledge", "retry": "retry", "dead-letter": "dead-letter", "release": "release"}


def _one(
    out: list[Call[Any]],
    plan: list[tuple[str, int]],
    label: str,
    qi: int,
    receipt: str | None,
    make: Callable[[], Call[Any]],
) -> bool:
    """Append the call ``make()`` builds; False (logged if ``receipt`` names the item) if it cannot."""
    try:
        call = make()
    except Exception as e:  # noqa: BLE001 - one bad item must not hold back the rest
        if receipt is not None:
            log.error("cannot %s message %s (%s); left out, it comes back after its lease", _VERB[label], receipt, e)
        return False
    out.append(call)
    plan.append((label, qi))
    return True


def _batches(
    out: list[Call[Any]],
    plan: list[tuple[str, int]],
    label: str,
    qi: int,
    items: list[Any],
    make: Callable[[list[Any]], Call[Any]],
) -> list[Any]:
    """Calls for ``items`` in batches the scripts take; a batch that cannot be built goes item by item.

    Returns the items the calls carry: ``items`` itself in the usual case (one good batch).
    """
    if len(items) <= _core.MAX_BATCH and _one(out, plan, label, qi, None, functools.partial(make, items)):
        return items
    kept: list[Any] = []
    for i in range(0, len(items), _core.MAX_BATCH):
        chunk = items[i : i + _core.MAX_BATCH]
        if len(chunk) < len(items) and _one(out, plan, label, qi, None, functools.partial(make, chunk)):
            kept += chunk
            continue
        for item in chunk:
            receipt = item if isinstance(item, str) else item[0]
            if _one(out, plan, label, qi, receipt, functools.partial(make, [item])):
                kept.append(item)
    return kept


def _sendable(receipt: str, reply: Any) -> Any:
    """The reply for a tracked message (receipt ending r/e) if it can be encoded, else None.

    Untracked receipts never send their reply, so nothing is checked for them.
    """
    if reply is None or not receipt.endswith(("r", "e")):
        return reply
    try:
        _codec.encode_body(reply)
    except Exception as e:  # noqa: BLE001 - a lone surrogate, NaN, an object orjson refuses, ...
        log.warning("handler reply for %s cannot be sent (%s); the sender gets None", receipt, _clean(str(e)))
        return None
    return reply


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
        *,
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
    *,
    kind: type,
    async_handlers: bool,
    wrong_handlers: str,
    hooks: Sequence[Hook],
    **options: Any,
) -> Setup:
    """Validate a consumer's arguments (raising InvalidParameter) and derive its parts."""
    queues = queue_list(queue_or_queues, kind)
    client = queues[0].client
    if any(q.client is not client for q in queues):
        raise InvalidParameter("all queues of a consumer must come from one client")
    if all_async(handler) is not async_handlers:
        raise InvalidParameter(wrong_handlers)
    return Setup(
        queues,
        client,
        Settings.of(**options),
        resolver(handler),
        list(hooks),
        [q._keys for q in queues],
        [q.name for q in queues],
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What one handler outcome does to the message."""

    outcome: Outcome
    flush_now: bool


def _clean(text: str) -> str:
    """``text`` cut to MAX_REASON characters that encode as UTF-8 (lone surrogates escaped)."""
    text = text[:MAX_REASON]
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")[:MAX_REASON]
    return text


def _text(value: object) -> str:
    """Any object as a bounded str; never raises (an unprintable one gives its type)."""
    try:
        if isinstance(value, str):
            return _clean(value)
        if isinstance(value, BaseException):
            return failure_reason(value)
        text = str(value)
        if not isinstance(text, str):
            raise TypeError("__str__ returned a non-string")
        return _clean(text)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the consumer
        return f"<unprintable {type(value).__name__}>"


def failure_reason(e: BaseException) -> str:
    """``Type: message`` of an exception, one line, bounded, UTF-8 safe."""
    try:
        text = " ".join(str(e)[: MAX_REASON * 2].split())
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the consumer
        text = "<unprintable>"
    return _clean(f"{type(e).__name__}: {text}" if text else type(e).__name__)


def reject_reason(error: BaseException) -> str:
    """The dead-letter reason of a ``Reject``: its ``reason`` (any object) as a bounded str."""
    reason = getattr(error, "reason", None)
    if reason is None or (isinstance(reason, str) and not reason):
        return DEFAULT_REJECT_REASON
    return _text(reason)


class Tracker:
    """Slots, leases and pending acks of one consumer. Not thread-safe: callers lock."""

    def __init__(
        self,
        settings: Settings,
        vts: Sequence[float],
        mrcs: Sequence[int | None],
        dlqs: Sequence[bool] = (),
    ) -> None:
        self.settings = settings
        #: Per queue: the lease taken on receive and on each extension (seconds).
        self.leases = [max(float(vt), LEASE_FLOOR) for vt in vts]
        self.mrcs = list(mrcs)
        #: Per queue: is it a dead-letter queue (whose messages cannot be dead-lettered again)?
        self.dlqs = list(dlqs) or [False] * len(self.leases)
        self.free = settings.concurrency
        #: A busy receiver waits (briefly) for this many free slots, so a round trip carries a batch.
        self.want = max(1, min(settings.batch_size, settings.concurrency) // 2)
        self.jobs: dict[str, Job] = {}
        self.pending = Flush()
        self.pending_count = 0
        self.pending_since: float | None = None
        #: Receivers with a receive round trip under way: each takes the pending acks when it
        #: sends its next receive, so reaching batch_size need not cost a round trip of its own.
        self.receiving = 0
        #: Earliest heartbeat due time of the held jobs, or earlier (a finished job's): never later.
        self.next_due = float("inf")

    # -- slots

    def reserve(self) -> int:
        """Claim up to batch_size free slots for one receive."""
        n = min(self.settings.batch_size, self.free)
        self.free -= n
        return n

    def unreserve(self, n: int) -> None:
        self.free += n

    def received(self, qi: int, messages: Sequence[Message], now: float) -> list[Job]:
        """Hold freshly received messages (their slots were reserved)."""
        lease_end = now + self.leases[qi]
        jobs = [Job(m, qi, lease_end) for m in messages]
        self.jobs.update((j.message.receipt, j) for j in jobs)
        if jobs:
            self.next_due = min(self.next_due, self._due(jobs[0]))
        return jobs

    @property
    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.started)

    # -- outcomes

    def finish(self, job: Job, reply: Any, error: BaseException | None, now: float) -> Decision:
        """Record a handler's outcome; free its slot; queue the ack, retry or dead letter."""
        self.jobs.pop(job.message.receipt, None)
        self.free += 1
        outcome: Outcome
        if error is None:
            self.pending.deletes.setdefault(job.queue, []).append((job.message.receipt, reply))
            outcome = "ok"
        else:
            outcome = self._failed(job.queue, job.message, error)
        self.pending_count += 1
        first = self.pending_since is None
        if first:
            self.pending_since = now
        return Decision(outcome, first or self.full)

    def forget(self, job: Job) -> None:
        """Drop a job whose worker crashed (its message comes back after its lease)."""
        if self.jobs.pop(job.message.receipt, None) is not None:
            self.free += 1

    def _failed(self, qi: int, m: Message, error: BaseException) -> Outcome:
        """Queue the retry or dead letter a handler's exception calls for."""
        if isinstance(error, Reject):
            reason = reject_reason(error)
            outcome: Outcome = "rejected"
        else:
            mrc = self.mrcs[qi]
            if self.dlqs[qi] or mrc is None or m.receive_count < mrc:
                self.pending.retries.append((qi, m.receipt, self.settings.backoff.delay(m.receive_count)))
                return "retried"
            reason = _clean(f"failed on receive {m.receive_count} of max_receive_count {mrc}: {failure_reason(error)}")
            outcome = "dead_lettered"
        if self.dlqs[qi]:
            # A dead letter cannot be dead-lettered again: keep it where it is and try it again later.
            delay = self.settings.backoff.delay(m.receive_count)
            log.warning(
                "message %s of dead-letter queue %r rejected (%s); it stays there and comes back in %.3g s",
                m.id,
                m.queue,
                reason,
                delay,
            )
            self.pending.retries.append((qi, m.receipt, delay))
            return "retried"
        self.pending.rejects.append((qi, m.receipt, reason))
        return outcome

    @property
    def full(self) -> bool:
        """Pending work must go out now: batch_size reached and no receive round trip will
        carry it (one is under way: its receiver takes it next; one more ack and it goes anyway)."""
        count, batch = self.pending_count, self.settings.batch_size
        return count > batch or (count == batch and not self.receiving)

    def take(self) -> Flush:
        """Everything waiting to be sent; the caller sends it (or gives it back)."""
        out = self.pending
        self.pending = Flush()
        self.pending_count = 0
        self.pending_since = None
        return out

    def give_back(self, flush: Flush, now: float) -> None:
        """Connection lost: keep the work for the next attempt."""
        if not flush:
            return
        flush.merge(self.pending)
        self.pending = flush
        self.pending_count = (
            sum(len(v) for v in flush.deletes.values())
            + len(flush.retries)
            + len(flush.rejects)
            + sum(len(v) for v in flush.releases.values())
        )
        self.pending_since = self.pending_since or now

    def flush_in(self, now: float) -> float | None:
        """Seconds until the pending work must go out (0: now); None if nothing is pending."""
        if self.pending_since is None:
            return None
        if self.full:
            return 0.0
        return max(0.0, self.pending_since + self.settings.flush_interval - now)

    # -- leases

    def _due(self, j: Job) -> float:
        return j.lease_end - self.leases[j.queue] * HEARTBEAT_SHARE

    def heartbeat_in(self, now: float) -> float | None:
        """Seconds until some lease needs extending; None if nothing is held."""
        if not self.jobs:
            return None
        return max(0.0, self.next_due - now)

    def heartbeat(self, now: float) -> list[tuple[int, list[str]]]:
        """Leases to extend now, by queue; marks them extended to now + lease."""
        by_queue: dict[int, list[str]] = {}
        next_due = float("inf")
        for j in self.jobs.values():
            if self._due(j) <= now:
                by_queue.setdefault(j.queue, []).append(j.message.receipt)
                j.lease_end = now + self.leases[j.queue]
            next_due = min(next_due, self._due(j))
        self.next_due = next_due
        return list(by_queue.items())

    def heartbeat_calls(self, keys: Sequence[QueueKeys], due: list[tuple[int, list[str]]]) -> list[Call[Any]]:
        """The extensions: each asks for the full lease again (never less: 0 would show the message)."""
        calls: list[Call[Any]] = []
        for qi, receipts in due:
            for i in range(0, len(receipts), _core.MAX_BATCH):
                calls.append(_core.change_visibility(keys[qi], receipts[i : i + _core.MAX_BATCH], self.leases[qi]))
        return calls

    def heartbeat_failed(self, due: list[tuple[int, list[str]]], now: float) -> None:
        """Extension not sent: make those leases due again."""
        for _qi, receipts in due:
            for r in receipts:
                j = self.jobs.get(r)
                if j is not None:
                    j.lease_end = now
                    self.next_due = min(self.next_due, self._due(j))

    # -- stopping

    def take_unstarted(self) -> Flush:
        """Drop every held message not started yet; the flush makes them visible now."""
        out = Flush()
        for r, j in list(self.jobs.items()):
            if not j.started:
                del self.jobs[r]
                self.free += 1
                out.releases.setdefault(j.queue, []).append(r)
        return out


class Outage:
    """Backoff while the server is unreachable; says when to log (once per outage)."""

    def __init__(self, first: float = 0.05, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0
        self.since: float | None = None

    def failed(self) -> tuple[float, bool]:
        """Seconds to wait before trying again, and whether this starts an outage."""
        self.failures += 1
        starts = self.since is None
        if starts:
            self.since = time.monotonic()
        ceiling = min(self.cap, self.first * 2.0 ** min(self.failures - 1, 20))
        return ceiling / 2 + random.random() * ceiling / 2, starts

    def ok(self) -> float | None:
        """The call worked: seconds the outage lasted, or None if there was none."""
        if self.since is None:
            return None
        lasted = time.monotonic() - self.since
        self.since = None
        self.failures = 0
        return lasted


def flush_problems(flush: Flush, results: Sequence[Any], names: Sequence[str]) -> list[str]:
    """Log lines for a flush whose results show lost leases or errors (usually none)."""
    out: list[str] = []
    late = 0
    for (label, qi), r in zip(flush.plan, results, strict=True):
        if isinstance(r, Exception):
            out.append(f"queue {names[qi]!r}: {label} failed: {r}")
        elif label != "release":
            late += r.count(False)
    if late:
        out.append(
            f"{late} message(s) finished after their lease ended (visibility timeout passed "
            "without a heartbeat); another consumer may process them again"
        )
    return out
