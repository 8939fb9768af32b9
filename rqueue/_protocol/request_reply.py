"""Requests, I/O-free: send a message and wait for its consumer's reply, or withdraw it.

A request's sender blocks on the message's reply key (``QueueKeys.reply``); the consumer's
delete pushes the reply there, and a receive that dead-letters it pushes why (``notify_dead``).
A sender that gives up withdraws the message, unless a consumer already has it.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import replace
from typing import Any

from rqueue._protocol import codec as _codec
from rqueue._protocol.calls import Call, Op, Pop, settle_nothing
from rqueue._protocol.errors import InvalidParameter, MessageDeadLettered, RequestFailed, RequestTimeout
from rqueue._protocol.keys import DLQ_SUFFIX, QueueKeys
from rqueue._protocol.limits import MAX_REQUEST_TIMEOUT, REPLY_TTL_MS, WAIT_CHUNK, number
from rqueue._protocol.scripts import script
from rqueue._protocol.sending import encode_batch, send


def notify_dead(keys: QueueKeys, buried: list[bytes]) -> Call[int]:
    """Push 'dead-lettered' to the reply keys of requests a receive buried."""
    ids = [b.decode() for b in buried[::2]]
    return Call(
        script("notify"),
        [keys.reply(i) for i in ids],
        [REPLY_TTL_MS, *(b"d" + p for p in buried[1::2])],
        int,
        keys.name,
        settle_nothing,
    )


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
            reason, _, detail = _codec.split_why(reply[1])[2].decode(errors="replace").partition("|")
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
        [keys.meta, keys.msgs, keys.vis, keys.reply(message_id), keys.dlq().why, *keys.fifo()],
        [message_id],
        parse,
        name,
        settle_nothing,
    )


def request_flow(
    keys: QueueKeys,
    body: Any,
    attributes: _codec.Attributes | None,
    delay: float | None,
    timeout: float,
    group: str | None = None,
) -> Generator[Op, Any, Any]:
    """Send a request, block on its reply key until ``timeout``, then withdraw it.

    A caller that gives up earlier (cancelled, interrupted) withdraws it too.
    """
    if keys.is_dlq:
        raise InvalidParameter(f"{keys.name!r} is a dead-letter queue; send requests to its source queue")
    number("timeout", timeout, 0.001, MAX_REQUEST_TIMEOUT, "seconds")
    deadline = time.monotonic() + timeout
    encoded = encode_batch([body], attributes)

    def give_up(ids: list[str]) -> list[Call[Any]]:
        return [withdraw(keys, ids[0], timeout)]

    (message_id,) = yield replace(send(keys, encoded, delay, _codec.REQUEST, group), settle=give_up)
    key = keys.reply(message_id)
    settle = withdraw(keys, message_id, timeout)
    while (remaining := deadline - time.monotonic()) > 0:
        raw = yield Pop(key, min(remaining, WAIT_CHUNK), settle)
        if raw is not None:
            return reply_value(raw, message_id, keys.name)
    return (yield settle)
