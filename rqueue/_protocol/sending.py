"""Sending, I/O-free: encode a batch of bodies (all or none) and the call that stores it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rqueue._protocol import codec as _codec
from rqueue._protocol.calls import Call
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.limits import MAX_RETENTION, batch, seconds_ms, shown
from rqueue._protocol.scripts import script


def send(
    keys: QueueKeys,
    encoded: list[bytes],
    delay: float | None,
    flag: str = "",
    group: str | Sequence[str] | None = None,
) -> Call[list[str]]:
    """Store a batch (all or nothing); the reply gives the ids.

    ``flag``: '' untracked, ``_codec.REQUEST`` or ``_codec.EVENTS``. ``group``: a FIFO
    queue's message group, one for the batch or one per message (a FIFO queue takes no
    per-message delay). A dead-letter queue takes no sends: its entries come from its
    source, each with why it died.
    """
    if keys.is_dlq:
        raise InvalidParameter(f"{keys.name!r} is a dead-letter queue; send to its source queue {keys.source().name!r}")
    n = len(encoded)

    def parse(reply: list[Any]) -> list[str]:
        return ids_of(int(reply[0]), n)

    if group is not None:
        if delay is not None:
            raise InvalidParameter(
                "delay must be None with a group: a FIFO queue's messages take the queue's delay only"
            )
        groups = check_groups(group, n)
        pairs: list[bytes | str | int] = ["g", flag]
        for g, m in zip(groups, encoded, strict=True):
            pairs += (g, m)
        return Call(
            script("send"),
            [keys.meta, keys.msgs, keys.vis, keys.seq, keys.wake, *keys.fifo(), keys.fifo_delayed],
            pairs,
            parse,
            keys.name,
        )
    dl = "" if delay is None else seconds_ms("delay", delay, 0, MAX_RETENTION)
    return Call(
        script("send"),
        [keys.meta, keys.msgs, keys.vis, keys.seq, keys.wake],
        [dl, flag, *encoded],
        parse,
        keys.name,
    )


MAX_GROUP_LENGTH = 128


def check_groups(group: str | Sequence[str], n: int) -> list[str]:
    """One FIFO group per message: ``group`` for all of them or a list of ``n``; each a str
    of 1-128 characters."""
    groups = [group] * n if isinstance(group, str) else list(group) if isinstance(group, Sequence) else None
    if groups is None:
        raise InvalidParameter(f"group must be a str or a list of str, got {type(group).__name__}")
    if len(groups) != n:
        raise InvalidParameter(f"group must be one str or a list of one per body ({n}), got {len(groups)}")
    for i, g in enumerate(groups):
        if not isinstance(g, str) or not 1 <= len(g) <= MAX_GROUP_LENGTH or (not g.isprintable() and _unencodable(g)):
            where = "group" if isinstance(group, str) else f"group[{i}]"
            raise InvalidParameter(f"{where} must be a str of 1 to {MAX_GROUP_LENGTH} characters, got {shown(g)}")
    return groups


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


def _unencodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False
