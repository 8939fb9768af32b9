"""Creating, upgrading, pausing and deleting queues, I/O-free (the calls and flows the clients drive).

A queue made by rqueue 0.1 (its meta has no 'v') is rewritten to the current storage layout
by ``upgrade_flow``, which ``create_queue_flow`` (and a subscription's refresh) runs.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from rqueue._protocol.calls import Call, Op
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.limits import (
    MAX_MESSAGE_SIZE_LIMIT,
    MAX_RECEIVE_COUNT_LIMIT,
    MAX_RETENTION,
    MAX_VISIBILITY,
    MIN_RETENTION,
    integer,
    seconds_ms,
)
from rqueue._protocol.scripts import script


def create_queue(
    keys: QueueKeys,
    visibility_timeout: float,
    delay: float,
    retention: float,
    max_message_size: int,
    max_receive_count: int | None,
) -> Call[int]:
    """Create a queue and its DLQ; the reply: 1 new, 0 it existed alike, 2 so and it needs
    ``upgrade_flow``."""
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
    d = keys.dlq()
    return Call(script("create_queue"), [keys.meta, d.meta, keys.seq], args, int, keys.name)


def create_queue_flow(
    keys: QueueKeys,
    visibility_timeout: float,
    delay: float,
    retention: float,
    max_message_size: int,
    max_receive_count: int | None,
) -> Generator[Op, Any, bool]:
    """Create a queue, or upgrade in place one that holds state of the layout before 0.2."""
    created: int = yield create_queue(keys, visibility_timeout, delay, retention, max_message_size, max_receive_count)
    if created == 2:
        yield from upgrade_flow(keys)
    return created == 1


def upgrade_flow(keys: QueueKeys) -> Generator[Op, Any, None]:
    """Rewrite a queue made by rqueue 0.1 (and its dead-letter queue) to this layout, one
    bounded script call at a time (lua/upgrade.lua)."""
    d = keys.dlq()
    cursors: list[bytes | str | int] = ["0", "0", "0"]
    while cursors != ["-", "-", "-"]:
        reply = yield Call(
            script("upgrade"),
            [keys.meta, keys.msgs, keys.state, keys.vis, d.meta, d.msgs, d.state, d.vis],
            cursors,
            list,
            keys.name,
        )
        cursors = [c.decode() for c in reply]


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


def set_paused(keys: QueueKeys, paused: bool) -> Call[bool]:
    """Pause (receives hand out nothing; sends go on) or resume a queue, for every host at
    once; the reply says whether that changed anything. Resuming wakes waiting receivers."""
    return Call(script("pause"), [keys.meta, keys.wake], ["1" if paused else "0"], bool, keys.name)
