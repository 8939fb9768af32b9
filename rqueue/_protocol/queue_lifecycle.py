"""Creating, changing, upgrading, pausing and deleting queues, I/O-free (the calls and flows the clients drive).

A queue made by rqueue 0.1 (its meta has no 'v') is rewritten to the current storage layout
by ``upgrade_flow``, which ``create_queue_flow`` (and a subscription's refresh) runs.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from rqueue._protocol import attributes as _attributes
from rqueue._protocol.calls import Call, Op
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.limits import MAX_RETENTION
from rqueue._protocol.models import QueueAttributes
from rqueue._protocol.scripts import script


def create_queue(keys: QueueKeys, attributes: Mapping[str, Any]) -> Call[int]:
    """Create a queue and its DLQ; the reply: 1 new, 0 it existed alike, 2 so and it needs
    ``upgrade_flow``. ``attributes``: any of QueueAttributes' fields (defaults for the rest)."""
    if keys.is_dlq:
        raise InvalidParameter(f"{keys.name!r} names a dead-letter queue; create its source queue")
    args: list[bytes | str | int] = [*_attributes.encode(attributes), MAX_RETENTION * 1000]
    d = keys.dlq()
    return Call(script("create_queue"), [keys.meta, d.meta, keys.seq], args, int, keys.name)


def create_queue_flow(keys: QueueKeys, attributes: Mapping[str, Any]) -> Generator[Op, Any, bool]:
    """Create a queue, or upgrade in place one that holds state of the layout before 0.2."""
    created: int = yield create_queue(keys, attributes)
    if created == 2:
        yield from upgrade_flow(keys)
    return created == 1


def set_attributes(keys: QueueKeys, changes: Mapping[str, Any]) -> Call[QueueAttributes]:
    """Change attributes of a live queue for every host at once; the reply is the new set.
    Waiting receivers wake, so a raised limit takes effect at once."""
    args: list[bytes | str | int] = list(_attributes.encode_changes(changes, dead_letter_queue=keys.is_dlq))
    return Call(script("set_attributes"), [keys.meta, keys.wake], args, _attributes.decode_list, keys.name)


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
        [keys.meta, d.meta, *keys.own()[1:], *keys.fifo(), keys.fifo_delayed, *d.own()[1:], *d.fifo(), keys.seq],
        [],
        bool,
        keys.name,
    )


def set_paused(keys: QueueKeys, paused: bool) -> Call[bool]:
    """Pause (receives hand out nothing; sends go on) or resume a queue, for every host at
    once; the reply says whether that changed anything. Resuming wakes waiting receivers."""
    return Call(script("pause"), [keys.meta, keys.wake], ["1" if paused else "0"], bool, keys.name)
