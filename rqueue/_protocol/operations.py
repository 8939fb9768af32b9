"""The I/O-free core shared by the sync and asyncio clients.

For each operation a function validates the input and returns a ``Call``:
the script, its KEYS and ARGV, and how to parse the reply. Long polling is a
generator that yields calls and waits; ``Client`` and ``AsyncClient`` drive
it, so the two differ only by ``await``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, NamedTuple, TypeVar

from rqueue._protocol import codec as _codec
from rqueue._protocol.errors import InvalidParameter, MessageDeadLettered, RequestFailed, RequestTimeout
from rqueue._protocol.keys import DLQ_SUFFIX, QueueKeys
from rqueue._protocol.models import DeadLetter, Message, QueueAttributes, QueueStats, make_message
from rqueue._protocol.scripts import Script, script

T = TypeVar("T")

MAX_VISIBILITY = 12 * 3600
MIN_RETENTION, MAX_RETENTION = 60, 14 * 86400
DEFAULT_RETENTION = 4 * 86400
MAX_MESSAGE_SIZE_LIMIT = 16 * 1024 * 1024
MAX_RECEIVE_COUNT_LIMIT = 1000
MAX_BATCH = 1000
MAX_WAIT = 300
#: A long poll re-checks at least this often, so a dead connection is noticed.
WAIT_CHUNK = 10.0
REDRIVE_CHUNK = 1000
#: A reply waits this long for its sender (who normally pops it at once).
REPLY_TTL_MS = 300_000
MAX_REQUEST_TIMEOUT = 12 * 3600


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One script call: what to run and how to read its reply.

    ``settle`` is set on a call a flow's caller must not abandon half-way (an
    asyncio task cancelled, a sync caller interrupted): the runner lets the
    call finish, then runs the calls ``settle(result)`` returns to undo what
    the caller will never see (make received messages visible again, withdraw
    a request), and only then gives up.
    """

    script: Script
    keys: Sequence[str]
    args: Sequence[bytes | str | int]
    parse: Callable[[Any], T]
    queue: str
    settle: Callable[[T], Sequence[Call[Any]]] | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """Block until a wake-up token is pushed on ``key`` or ``timeout`` s pass."""

    key: str
    timeout: float


@dataclass(frozen=True, slots=True)
class Pop:
    """Pop the value pushed on ``key`` (None after ``timeout`` s).

    ``settle``: the call to run when the caller gives up before a value came.
    """

    key: str
    timeout: float
    settle: Call[Any] | None = None


def _nothing(_: object) -> Sequence[Call[Any]]:
    """``settle`` of a call that only has to finish (nothing to undo)."""
    return ()


Op = Call[Any] | Wait | Pop


# ---------------------------------------------------------------- validation


def shown(value: object) -> str:
    """``repr(value)`` for an error message, cut to 80 characters; an int too long to print
    (``repr`` raises ValueError past 4300 digits) by its size."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    return f"{value!r:.80}"


def _number(name: str, value: object, lo: float, hi: float, unit: str) -> float:
    # No math.isnan on an int: it raises OverflowError past float range (10**400 is just out of range).
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and math.isnan(value))
    ):
        raise InvalidParameter(f"{name} must be a number from {lo:g} to {hi:g} {unit}, got {shown(value)}")
    if not lo <= value <= hi:
        raise InvalidParameter(f"{name} must be from {lo:g} to {hi:g} {unit}, got {shown(value)}")
    return float(value)


def seconds_ms(name: str, value: object, lo: float, hi: float) -> int:
    """Seconds (int or float) in [lo, hi] as whole milliseconds."""
    return round(_number(name, value, lo, hi, "seconds") * 1000)


def integer(name: str, value: object, lo: int, hi: int) -> int:
    """An int in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidParameter(f"{name} must be an integer from {lo} to {hi}, got {shown(value)}")
    return value


def batch(name: str, items: Iterable[T]) -> list[T]:
    """A non-empty list of at most MAX_BATCH items."""
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise InvalidParameter(f"{name} must be a list of 1 to {MAX_BATCH} items, got {type(items).__name__}")
    out = list(items)
    if not 1 <= len(out) <= MAX_BATCH:
        raise InvalidParameter(f"{name} must hold 1 to {MAX_BATCH} items, got {len(out)}")
    return out


# ``<id>.<token>``, plus ``r`` for a request's message or ``e`` for one whose
# events are published: the client then knows which reply keys to pass.
_SUFFIX = {"": "", _codec.REQUEST: "r", _codec.EVENTS: "e"}


#: Untracked receipts joined by spaces, as the delete script takes them in one argument.
_PLAIN_RECEIPTS = re.compile(r"\d{1,20}\.\d{1,20}(?: \d{1,20}\.\d{1,20})*", re.ASCII)


def parse_receipt(receipt: object) -> tuple[str, str, str]:
    """(id, token, tracked) of a receipt from ``Message.receipt``; tracked is '', 'r' or 'e'.

    ``<1-20 digits>.<1-20 digits>[re]``, checked without a regex: it runs per ack.
    """
    if isinstance(receipt, str) and receipt.isascii():
        mid, _, token = receipt.partition(".")
        tracked = token[-1:] if token[-1:] in ("r", "e") else ""
        if tracked:
            token = token[:-1]
        if 0 < len(mid) <= 20 and 0 < len(token) <= 20 and mid.isdigit() and token.isdigit():
            return mid, token, tracked
    raise InvalidParameter(f"receipt must be a Message.receipt string, got {receipt!r}")


def split_receipt(receipt: object) -> tuple[str, str]:
    """(id, token) of a receipt from ``Message.receipt``."""
    mid, token, _ = parse_receipt(receipt)
    return mid, token


def _receipt_args(receipts: Iterable[str]) -> list[str]:
    args: list[str] = []
    for r in batch("receipts", receipts):
        args.extend(split_receipt(r))
    return args


# ---------------------------------------------------------------- operations


def create_queue(
    keys: QueueKeys,
    visibility_timeout: float,
    delay: float,
    retention: float,
    max_message_size: int,
    max_receive_count: int | None,
) -> Call[bool]:
    """Create a queue and its DLQ; the reply says whether it was new."""
    if keys.is_dlq:
        raise InvalidParameter(f"{keys.name!r} names a dead-letter queue; create its source queue")
    vt = seconds_ms("visibility_timeout", visibility_timeout, 0, MAX_VISIBILITY)
    ret = seconds_ms("retention", retention, MIN_RETENTION, MAX_RETENTION)
    dl = seconds_ms("delay", delay, 0, MAX_RETENTION)
    if dl > ret:
        raise InvalidParameter(f"delay must be from 0 to retention ({ret / 1000:g} seconds), got {delay!r}")
    size = integer("max_message_size", max_message_size, 1, MAX_MESSAGE_SIZE_LIMIT)
    mrc = (
        ""
        if max_receive_count is None
        else str(integer("max_receive_count", max_receive_count, 1, MAX_RECEIVE_COUNT_LIMIT))
    )
    args: list[bytes | str | int] = [vt, dl, ret, size, mrc, MAX_RETENTION * 1000]
    return Call(script("create_queue"), [keys.meta, keys.dlq().meta, keys.seq], args, bool, keys.name)


def send(keys: QueueKeys, encoded: list[bytes], delay: float | None, flag: str = "") -> Call[list[str]]:
    """Store a batch (all or nothing); the reply gives the ids.

    ``flag``: '' untracked, ``_codec.REQUEST`` or ``_codec.EVENTS``. A dead-letter
    queue takes no sends: its entries come from its source, each with why it died.
    """
    if keys.is_dlq:
        raise InvalidParameter(f"{keys.name!r} is a dead-letter queue; send to its source queue {keys.source().name!r}")
    dl = "" if delay is None else seconds_ms("delay", delay, 0, MAX_RETENTION)
    n = len(encoded)

    def parse(reply: list[Any]) -> list[str]:
        last = int(reply[0])
        return [str(i) for i in range(last - n + 1, last + 1)]

    return Call(
        script("send"),
        [keys.meta, keys.msgs, keys.vis, keys.seq, keys.wake],
        [dl, flag, *encoded],
        parse,
        keys.name,
    )


def encode_batch(bodies: Iterable[Any], attributes: _codec.Attributes | None) -> list[bytes]:
    """Encode every body first, so a bad one stores nothing."""
    items = batch("bodies", bodies)
    if attributes is not None:
        _codec.encode_attributes(attributes)  # validate once, before any body
    try:
        return [_codec.encode(b, attributes) for b in items]
    except InvalidParameter:
        if len(items) > 1:  # name the body at fault: ``bodies[i]``
            for i, b in enumerate(items):
                _codec.encode(b, attributes, f"bodies[{i}]")
        raise


def _dead_letter(why: bytes, source: str, sent_at: int) -> DeadLetter:
    """The record of why a dead letter died; reason 'unknown' (dead at its send) when it has none,
    so one odd entry never fails a receive that already hid the whole batch."""
    dead_at, _, rest = why.partition(b"|")
    reason, sep, detail = rest.partition(b"|")
    if not sep or not dead_at.isdigit():
        return DeadLetter("unknown", "", sent_at, source)
    return DeadLetter(reason.decode(errors="replace"), detail.decode(errors="replace"), int(dead_at), source)


class Received(NamedTuple):
    """What a receive call gives: the messages, ms to the next visible one, and
    the call that tells senders of requests dead-lettered by it (or None)."""

    messages: list[Message]
    next_ms: int
    notify: Call[int] | None


def receive(keys: QueueKeys, max_messages: int, visibility_timeout: float | None) -> Call[Received]:
    """Receive-and-hide; the reply gives messages and ms to the next visible one."""
    n = integer("max_messages", max_messages, 1, MAX_BATCH)
    vt = "" if visibility_timeout is None else seconds_ms("visibility_timeout", visibility_timeout, 0, MAX_VISIBILITY)
    dlq = keys.dead_letter_target()
    source = keys.source().name if keys.is_dlq else ""
    name = keys.name

    def parse(reply: list[Any]) -> Received:
        ids, stored, states, whys, next_ms, buried = reply
        out: list[Message] = []
        for i, raw_id in enumerate(ids):
            raw = stored[i]
            sent_at, body, attrs = _codec.decode(raw)
            token, rc, first = states[i].split(b":", 3)[:3]  # a 4th field: when it became visible
            mid = raw_id.decode()
            suffix = "" if whys else _SUFFIX[_codec.flag_of(raw)]
            out.append(
                make_message(
                    mid,
                    body,
                    attrs,
                    f"{mid}.{token.decode()}{suffix}",
                    int(rc),
                    sent_at,
                    int(first),
                    name,
                    _dead_letter(whys[i], source, sent_at) if whys else None,
                )
            )
        return Received(out, int(next_ms), notify_dead(keys, buried) if buried else None)

    def settle(got: Received) -> list[Call[Any]]:
        # A caller that gave up never sees these messages: visible again at once.
        calls: list[Call[Any]] = [] if got.notify is None else [got.notify]
        if got.messages:
            calls.append(change_visibility(keys, [m.receipt for m in got.messages], 0))
        return calls

    return Call(
        script("receive"),
        [
            keys.meta,
            keys.msgs,
            keys.vis,
            keys.state,
            keys.seq,
            keys.wake,
            keys.why,
            dlq.meta,
            dlq.msgs,
            dlq.vis,
            dlq.why,
            dlq.wake,
        ],
        [n, vt, "" if keys.is_dlq else keys.events],
        parse,
        keys.name,
        settle,
    )


def notify_dead(keys: QueueKeys, buried: list[bytes]) -> Call[int]:
    """Push 'dead-lettered' to the reply keys of requests a receive buried."""
    ids = [b.decode() for b in buried[::2]]
    return Call(
        script("notify"),
        [keys.reply(i) for i in ids],
        [REPLY_TTL_MS, *(b"d" + p for p in buried[1::2])],
        int,
        keys.name,
        _nothing,
    )


def receive_flow(
    keys: QueueKeys, max_messages: int, visibility_timeout: float | None, wait_time: float
) -> Generator[Op, Any, list[Message]]:
    """Long poll: receive; if empty, wait for a wake-up or the next visible time."""
    wait_ms = seconds_ms("wait_time", wait_time, 0, MAX_WAIT)
    call = receive(keys, max_messages, visibility_timeout)
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        messages, next_ms, notify = yield call
        if notify is not None:
            yield notify
        if messages:
            return messages  # type: ignore[no-any-return]
        if next_ms == 0:  # the script's scan budget ran out before a visible message: go on at once
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        timeout = remaining if next_ms < 0 else min(remaining, next_ms / 1000)
        yield Wait(keys.wake, min(timeout, WAIT_CHUNK))


def _flags(reply: list[Any]) -> list[bool]:
    return [bool(x) for x in reply]


def delete(keys: QueueKeys, receipts: Iterable[str], replies: Sequence[Any] | None = None) -> Call[list[bool]]:
    """Delete by latest receipts; False for a stale one.

    ``replies`` (aligned with ``receipts``) go to the senders of tracked
    messages; for untracked ones they are dropped here and never sent.
    """
    receipts = batch("receipts", receipts)
    if replies is not None:
        if isinstance(replies, str | bytes) or not isinstance(replies, Sequence):
            raise InvalidParameter(f"replies must be a list aligned with receipts, got {type(replies).__name__}")
        if len(replies) != len(receipts):
            raise InvalidParameter(f"replies must hold one value per receipt ({len(receipts)}), got {len(replies)}")
    key_list = [keys.meta, keys.msgs, keys.vis, keys.state, keys.why]
    joined = " ".join(receipts) if all(isinstance(r, str) for r in receipts) else ""
    if _PLAIN_RECEIPTS.fullmatch(joined):  # the common case, checked and sent as one string
        return Call(script("delete"), key_list, ["", "", "j", joined], _flags, keys.name)
    parsed = [parse_receipt(r) for r in receipts]
    if not any(t for _, _, t in parsed):
        args: list[bytes | str | int] = ["", "", ""]
        for mid, token, _ in parsed:
            args += (mid, token)
        return Call(script("delete"), key_list, args, _flags, keys.name)
    null = _codec.encode_body(None)
    events = False
    args = ["", REPLY_TTL_MS, "1"]
    for i, (mid, token, tracked) in enumerate(parsed):
        extra: bytes = b""
        if tracked:
            name = "reply" if len(parsed) == 1 else f"replies[{i}]"
            extra = tracked.encode() + (null if replies is None else _codec.encode_body(replies[i], name))
            if tracked == "r":
                key_list.append(keys.reply(mid))
            else:
                events = True
        args += (mid, token, extra)
    if events:
        args[0] = keys.events
    return Call(script("delete"), key_list, args, _flags, keys.name)


def change_visibility(keys: QueueKeys, receipts: Iterable[str], seconds: float) -> Call[list[bool]]:
    """Hide again for ``seconds`` from now; False for a stale receipt."""
    ms = seconds_ms("seconds", seconds, 0, MAX_VISIBILITY)
    return Call(
        script("change_visibility"),
        [keys.meta, keys.vis, keys.state, keys.wake],
        [ms, *_receipt_args(receipts)],
        _flags,
        keys.name,
    )


def reject(keys: QueueKeys, receipts: Iterable[str], reason: str) -> Call[list[bool]]:
    """Dead-letter received messages now, keeping ``reason``; False for a stale receipt."""
    if keys.is_dlq:
        raise InvalidParameter(f"{keys.name!r} is a dead-letter queue; delete its messages or redrive them")
    if not isinstance(reason, str) or len(reason) > 4096 or not _codec.is_text(reason):
        raise InvalidParameter(
            f"reason must be valid Unicode text (no lone surrogates) of at most 4096 characters, got {reason!r:.80}"
        )
    d = keys.dlq()
    key_list = [keys.meta, keys.msgs, keys.vis, keys.state, d.meta, d.msgs, d.vis, d.why, d.wake]
    args: list[bytes | str | int] = [reason, keys.events, REPLY_TTL_MS]
    for r in batch("receipts", receipts):
        mid, token, tracked = parse_receipt(r)
        if tracked == "r":
            key_list.append(keys.reply(mid))
        args += (mid, token, tracked)
    return Call(script("reject"), key_list, args, _flags, keys.name)


def purge(keys: QueueKeys) -> Call[int]:
    """Delete every message of the queue."""
    return Call(script("purge"), [keys.meta, keys.msgs, keys.vis, keys.state, keys.why], [], int, keys.name)


def _attributes(meta: dict[bytes, bytes]) -> QueueAttributes:
    mrc = meta.get(b"mrc")
    return QueueAttributes(
        int(meta[b"vt"]) / 1000,
        int(meta[b"delay"]) / 1000,
        int(meta[b"retention"]) / 1000,
        int(meta[b"max_size"]),
        int(mrc) if mrc else None,
    )


def stats(keys: QueueKeys) -> Call[QueueStats]:
    """Counts and counters of one queue."""
    dlq_vis = keys.dead_letter_target().vis

    def parse(reply: list[Any]) -> QueueStats:
        visible, in_flight, delayed, oldest, now, flat, dead = reply
        meta = dict(zip(flat[::2], flat[1::2], strict=True))

        def counter(field: bytes) -> int:
            return int(meta.get(field, 0))

        return QueueStats(
            keys.name,
            int(visible),
            int(in_flight),
            int(delayed),
            int(dead),
            counter(b"sent_total"),
            counter(b"received_total"),
            counter(b"deleted_total"),
            counter(b"dead_lettered_total"),
            counter(b"expired_total"),
            max(0, int(now) - int(oldest)) / 1000 if int(oldest) >= 0 else 0.0,
            _attributes(meta),
        )

    return Call(script("stats"), [keys.meta, keys.msgs, keys.vis, keys.state, dlq_vis], [], parse, keys.name)


def attributes(keys: QueueKeys) -> Call[QueueAttributes]:
    """The stored attributes (read through the stats script's meta)."""
    stats_call = stats(keys)
    return Call(stats_call.script, stats_call.keys, [], lambda r: stats_call.parse(r).attributes, keys.name)


def redrive(keys: QueueKeys) -> Call[int]:
    """Move up to REDRIVE_CHUNK dead letters back; call again while it returns the chunk size."""
    if keys.is_dlq:
        raise InvalidParameter(f"redrive() moves dead letters back to their source; call it on {keys.source().name!r}")
    d = keys.dlq()
    return Call(
        script("redrive"),
        [keys.meta, keys.msgs, keys.vis, keys.state, keys.wake, d.meta, d.msgs, d.vis, d.state, d.why],
        [REDRIVE_CHUNK],
        int,
        keys.name,
    )


def delete_queue(keys: QueueKeys) -> Call[bool]:
    """Delete a queue, its DLQ and all their messages."""
    if keys.is_dlq:
        raise InvalidParameter(f"{keys.name!r} is a dead-letter queue; delete its source queue")
    d = keys.dlq()
    return Call(
        script("delete_queue"),
        [keys.meta, d.meta, *keys.own()[1:], *d.own()[1:], keys.seq],
        [],
        bool,
        keys.name,
    )


# ---------------------------------------------------------------- requests


def reply_value(raw: bytes, message_id: str, queue: str) -> Any:
    """The reply a request's reply key held, or raise why there is none."""
    if raw[:1] == b"p":
        return _codec.decode_body(raw[1:])
    reason, _, detail = raw[1:].decode().partition("|")
    raise MessageDeadLettered(
        f"message {message_id} of queue {queue!r} was dead-lettered ({reason}"
        f"{': ' + detail if detail else ''}) while its sender waited; it is in {queue + DLQ_SUFFIX!r}",
        message_id=message_id,
        reason=reason,
        detail=detail,
    )


def withdraw(keys: QueueKeys, message_id: str, timeout: float) -> Call[Any]:
    """Settle a request whose sender gave up; returns a late reply or raises."""
    name = keys.name

    def parse(reply: list[Any]) -> Any:
        outcome = reply[0].decode()
        if outcome == "reply":
            return reply_value(reply[1], message_id, name)
        if outcome == "dead":
            _, reason, detail = reply[1].decode().split("|", 2)
            return reply_value(f"d{reason}|{detail}".encode(), message_id, name)
        if outcome == "gone":
            raise RequestFailed(
                f"message {message_id} of queue {name!r} was deleted without a reply (purged, or deleted "
                "by a receipt without a reply)",
                message_id=message_id,
            )
        withdrawn = outcome == "withdrawn"
        raise RequestTimeout(
            f"no reply to message {message_id} of queue {name!r} within {timeout:g} s; "
            + (
                "no consumer had received it, so it was withdrawn and will not be processed"
                if withdrawn
                else "a consumer had received it and may still process it; its reply will be dropped"
            ),
            message_id=message_id,
            withdrawn=withdrawn,
        )

    return Call(
        script("withdraw"),
        [keys.meta, keys.msgs, keys.vis, keys.state, keys.reply(message_id), keys.dlq().why],
        [message_id],
        parse,
        name,
        _nothing,
    )


def request_flow(
    keys: QueueKeys, body: Any, attributes: _codec.Attributes | None, delay: float | None, timeout: float
) -> Generator[Op, Any, Any]:
    """Send a request, block on its reply key until ``timeout``, then withdraw it.

    A caller that gives up earlier (cancelled, interrupted) withdraws it too.
    """
    if keys.is_dlq:
        raise InvalidParameter(f"{keys.name!r} is a dead-letter queue; send requests to its source queue")
    _number("timeout", timeout, 0.001, MAX_REQUEST_TIMEOUT, "seconds")
    deadline = time.monotonic() + timeout
    encoded = encode_batch([body], attributes)

    def give_up(ids: list[str]) -> list[Call[Any]]:
        return [withdraw(keys, ids[0], timeout)]

    (message_id,) = yield replace(send(keys, encoded, delay, _codec.REQUEST), settle=give_up)
    key = keys.reply(message_id)
    settle = withdraw(keys, message_id, timeout)
    while (remaining := deadline - time.monotonic()) > 0:
        raw = yield Pop(key, min(remaining, WAIT_CHUNK), settle)
        if raw is not None:
            return reply_value(raw, message_id, keys.name)
    return (yield settle)
