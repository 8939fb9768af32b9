"""The queue operations, I/O-free: shared by the sync and asyncio clients.

For each operation a function validates the input and returns a ``Call``:
the script, its KEYS and ARGV, and how to parse the reply. A long poll (and a
request, in ``request_reply``) is a flow: a generator that yields calls and
waits; ``Client`` and ``AsyncClient`` drive it, so the two differ only by ``await``.

The call types (``calls``), the limits and checks (``limits``), receipts
(``receipts``), sending (``sending``), requests (``request_reply``) and creating,
upgrading and deleting queues (``queue_lifecycle``) have modules of their own;
their names are re-exported here, where the clients and the consumer have always
found them.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from rqueue._protocol import attributes as _attributes
from rqueue._protocol import codec as _codec
from rqueue._protocol.calls import Call, Op, Pop, Wait, flags
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.limits import (
    DEFAULT_RETENTION,
    MAX_BATCH,
    MAX_MESSAGE_SIZE_LIMIT,
    MAX_RECEIVE_COUNT_LIMIT,
    MAX_REQUEST_TIMEOUT,
    MAX_RETENTION,
    MAX_VISIBILITY,
    MAX_WAIT,
    MIN_RETENTION,
    REDRIVE_CHUNK,
    REPLY_TTL_MS,
    WAIT_CHUNK,
    batch,
    integer,
    seconds_ms,
    shown,
)
from rqueue._protocol.models import DeadLetter, Message, QueueAttributes, QueueStats, make_message
from rqueue._protocol.queue_lifecycle import (
    create_queue,
    create_queue_flow,
    delete_queue,
    set_attributes,
    set_paused,
    upgrade_flow,
)
from rqueue._protocol.receipts import (
    PLAIN_RECEIPTS,
    SUFFIX_OF_BYTE,
    parse_receipt,
    receipt_args,
    split_receipt,
)
from rqueue._protocol.request_reply import notify_dead, reply_value, request_flow, withdraw
from rqueue._protocol.scripts import script
from rqueue._protocol.sending import encode_batch, send

__all__ = [
    # from calls, limits, receipts, sending and request_reply (see the docstring)
    "DEFAULT_RETENTION",
    "MAX_BATCH",
    "MAX_MESSAGE_SIZE_LIMIT",
    "MAX_RECEIVE_COUNT_LIMIT",
    "MAX_REQUEST_TIMEOUT",
    "MAX_RETENTION",
    "MAX_VISIBILITY",
    "MAX_WAIT",
    "MIN_RETENTION",
    "REDRIVE_CHUNK",
    "REPLY_TTL_MS",
    "WAIT_CHUNK",
    "Call",
    "Op",
    "Pop",
    "Wait",
    "batch",
    "flags",
    "integer",
    "parse_receipt",
    "script",
    "seconds_ms",
    "shown",
    "split_receipt",
    # the operations
    "Received",
    "attributes",
    "change_visibility",
    "create_queue",
    "create_queue_flow",
    "delete",
    "delete_queue",
    "encode_batch",
    "notify_dead",
    "purge",
    "receive",
    "receive_flow",
    "redrive",
    "redrive_flow",
    "reject",
    "reply_value",
    "request_flow",
    "send",
    "set_attributes",
    "set_paused",
    "stats",
    "unreceive",
    "upgrade_flow",
    "withdraw",
]

#: The old private name of ``flags`` (tests build calls with it).
_flags = flags


_JSON = ord("j")
_loads = orjson.loads


def _dead_letter(why: bytes, source: str, sent_at: int) -> DeadLetter:
    """The record of why a dead letter died; reason 'unknown' (dead at its send) when it has none,
    so one odd entry never fails a receive that already hid the whole batch."""
    dead_at, _, rest = _codec.split_why(why)
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
        ids, stored, token, now, again, whys, next_ms, buried, groups = reply
        tok = "." + token.decode()
        out: list[Message] = []
        append = out.append
        for i, raw_id in enumerate(ids):
            raw = stored[i]
            mid = raw_id.decode()
            if raw[13] == _JSON and not whys and not groups:  # the common case: JSON, untracked, no attributes
                append(make_message(mid, _loads(raw[14:]), {}, mid + tok, 1, int(raw[:13]), now, name, None))
                continue
            sent_at, body, attrs = _codec.decode(raw)
            dead = group = None
            if whys:
                dead, receipt = _dead_letter(whys[i], source, sent_at), mid + tok
                group = _codec.split_why(whys[i])[1]
            else:
                receipt = mid + tok + SUFFIX_OF_BYTE.get(raw[13], "")
                if groups:
                    group = groups[i].decode(errors="surrogateescape")
            append(make_message(mid, body, attrs, receipt, 1, sent_at, now, name, dead, group))
        if again:  # received before: (index from 1, receive_count, first_received_at), ...
            for k in range(0, len(again), 3):
                m = out[again[k] - 1]
                out[again[k] - 1] = make_message(
                    m.id,
                    m.body,
                    m.attributes,
                    m.receipt,
                    again[k + 1],
                    m.sent_at,
                    again[k + 2],
                    name,
                    m.dead_letter,
                    m.group,
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
            keys.wake,
            keys.why,
            dlq.meta,
            dlq.msgs,
            dlq.vis,
            dlq.why,
            dlq.wake,
            *keys.fifo(),
            keys.fifo_delayed,
            dlq.fifo_waiting,
        ],
        [n, vt, "" if keys.is_dlq else keys.events],
        parse,
        keys.name,
        settle,
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
    key_list = [keys.meta, keys.msgs, keys.vis, keys.why, keys.wake, *keys.fifo()]
    joined = " ".join(receipts) if all(isinstance(r, str) for r in receipts) else ""
    if PLAIN_RECEIPTS.fullmatch(joined):  # the common case, checked and sent as one string
        return Call(script("delete"), key_list, ["", "", "j", joined], flags, keys.name)
    parsed = [parse_receipt(r) for r in receipts]
    if not any(t for _, _, t in parsed):
        args: list[bytes | str | int] = ["", "", ""]
        for mid, token, _ in parsed:
            args += (mid, token)
        return Call(script("delete"), key_list, args, flags, keys.name)
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
    return Call(script("delete"), key_list, args, flags, keys.name)


def change_visibility(keys: QueueKeys, receipts: Iterable[str], seconds: float) -> Call[list[bool]]:
    """Hide again for ``seconds`` from now; False for a stale receipt."""
    ms = seconds_ms("seconds", seconds, 0, MAX_VISIBILITY)
    return Call(
        script("change_visibility"),
        [keys.meta, keys.msgs, keys.vis, keys.wake],
        [ms, *receipt_args(receipts)],
        flags,
        keys.name,
    )


def unreceive(keys: QueueKeys, receipts: Iterable[str]) -> Call[list[bool]]:
    """FIFO queues: give received messages back unprocessed, visible at once in their place in
    their group, their last receive not counted (lua/unreceive.lua); False for a stale receipt."""
    return Call(
        script("unreceive"),
        [keys.meta, keys.msgs, keys.vis, keys.wake, *keys.fifo()],
        receipt_args(receipts),
        flags,
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
    key_list = [
        *(keys.meta, keys.msgs, keys.vis, d.meta, d.msgs, d.vis, d.why, d.wake),
        *(keys.wake, *keys.fifo(), d.fifo_waiting),
    ]
    args: list[bytes | str | int] = [reason, keys.events, REPLY_TTL_MS]
    for r in batch("receipts", receipts):
        mid, token, tracked = parse_receipt(r)
        if tracked == "r":
            key_list.append(keys.reply(mid))
        args += (mid, token, tracked)
    return Call(script("reject"), key_list, args, flags, keys.name)


def purge(keys: QueueKeys) -> Call[int]:
    """Delete every message of the queue."""
    return Call(
        script("purge"),
        [keys.meta, keys.msgs, keys.vis, keys.state, keys.why, *keys.fifo(), keys.fifo_delayed],
        [],
        int,
        keys.name,
    )


def parse_attributes(meta: dict[bytes, bytes]) -> QueueAttributes:
    return _attributes.decode({k.decode(): v.decode() for k, v in meta.items()})


def stats(keys: QueueKeys) -> Call[QueueStats]:
    """Counts and counters of one queue."""
    dlq_vis = keys.dead_letter_target().vis

    def parse(reply: list[Any]) -> QueueStats:
        visible, in_flight, delayed, oldest, now, flat, dead, groups, groups_in_flight = reply
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
            parse_attributes(meta),
            meta.get(b"paused") == b"1",
            int(groups),
            int(groups_in_flight),
        )

    return Call(script("stats"), [keys.meta, keys.msgs, keys.vis, dlq_vis, *keys.fifo()], [], parse, keys.name)


def attributes(keys: QueueKeys) -> Call[QueueAttributes]:
    """The stored attributes (read through the stats script's meta)."""
    stats_call = stats(keys)
    return Call(stats_call.script, stats_call.keys, [], lambda r: stats_call.parse(r).attributes, keys.name)


class RedriveStep(NamedTuple):
    """One redrive call: how many it moved, how many it looked at (the next call is due while
    that is the chunk size) and where the next one goes on (a FIFO source's cursor)."""

    moved: int
    looked_at: int
    cursor: str


def redrive(keys: QueueKeys, cursor: str = "") -> Call[RedriveStep]:
    """Move up to REDRIVE_CHUNK dead letters back; call again (with the cursor) while it looked
    at the chunk size. A FIFO source's dead letters go back in send order."""
    if keys.is_dlq:
        raise InvalidParameter(f"redrive() moves dead letters back to their source; call it on {keys.source().name!r}")
    d = keys.dlq()

    def parse(reply: list[Any]) -> RedriveStep:
        moved, looked_at, nxt = reply
        return RedriveStep(int(moved), int(looked_at), nxt.decode() if isinstance(nxt, bytes) else str(nxt))

    return Call(
        script("redrive"),
        [keys.meta, keys.msgs, keys.vis, keys.wake, d.meta, d.msgs, d.vis, d.why, *keys.fifo(), d.fifo_waiting],
        [REDRIVE_CHUNK, cursor],
        parse,
        keys.name,
    )


def redrive_flow(keys: QueueKeys) -> Generator[Op, Any, int]:
    """Move every dead letter not in flight back, one bounded call at a time; returns how many."""
    step: RedriveStep = yield redrive(keys)
    total = step.moved
    while step.looked_at == REDRIVE_CHUNK:
        step = yield redrive(keys, step.cursor)
        total += step.moved
    return total
