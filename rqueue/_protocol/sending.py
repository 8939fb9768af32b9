"""Sending, I/O-free: encode a batch of bodies (all or none) and the call that stores it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rqueue._protocol import codec as _codec
from rqueue._protocol.calls import Call
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.limits import MAX_RETENTION, batch, seconds_ms
from rqueue._protocol.scripts import script


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
        return ids_of(int(reply[0]), n)

    return Call(
        script("send"),
        [keys.meta, keys.msgs, keys.vis, keys.seq, keys.wake],
        [dl, flag, *encoded],
        parse,
        keys.name,
    )


#: id_of in lua/_prelude.lua: a message id is its number's digits behind their count.
_ID_PREFIX = ["", "1", "2", "3", "4", "5", "6", "7", "8", *(f"9{k}" for k in range(10))]


def ids_of(last: int, n: int) -> list[str]:
    """The ids of the ``n`` messages numbered up to ``last``, as the scripts make them."""
    out = []
    for i in range(last - n + 1, last + 1):
        s = str(i)
        out.append(_ID_PREFIX[len(s)] + s)
    return out


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
