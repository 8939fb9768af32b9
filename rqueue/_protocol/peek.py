"""Read messages without receiving them: what ``rqueue dlq`` shows.

Read-only and atomic (one script), so looking at a dead-letter queue never
changes it: no receipt, no receive count, nothing hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rqueue._protocol import codec as _codec
from rqueue._protocol import operations as _core
from rqueue._protocol.codec import AttrValue
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.models import DeadLetter
from rqueue._protocol.operations import Call
from rqueue._protocol.scripts import script


@dataclass(frozen=True, slots=True)
class Peeked:
    """A stored message as it is now. Times are server times in ms."""

    id: str
    body: Any
    attributes: dict[str, AttrValue]
    sent_at: int
    receive_count: int
    visible_at: int
    in_flight: bool
    dead_letter: DeadLetter | None


def peek(keys: QueueKeys, max_messages: int) -> Call[list[Peeked]]:
    """Up to ``max_messages`` messages, in the order they become visible."""
    n = _core.integer("max_messages", max_messages, 1, _core.MAX_BATCH)
    source = keys.source().name if keys.is_dlq else ""

    def parse(reply: list[Any]) -> list[Peeked]:
        ids, stored, counts, whys, scores, now = reply
        out: list[Peeked] = []
        for i, raw_id in enumerate(ids):
            if not stored[i]:
                continue
            sent_at, body, attrs = _codec.decode(stored[i])
            receive_count = int(counts[i])
            visible_at = math.ceil(float(scores[i]))  # a received message: half a ms early
            why = None
            if whys[i]:
                dead_at, _, rest = _codec.split_why(whys[i])
                reason, _, detail = rest.decode(errors="replace").partition("|")
                why = DeadLetter(reason, detail, int(dead_at or b"0"), source)
            in_flight = receive_count > 0 and visible_at > int(now)
            out.append(Peeked(raw_id.decode(), body, attrs, sent_at, receive_count, visible_at, in_flight, why))
        return out

    return Call(script("peek"), [keys.meta, keys.msgs, keys.vis, keys.why], [n], parse, keys.name)
