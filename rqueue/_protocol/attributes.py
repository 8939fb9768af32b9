"""Queue attributes: their names, ranges and defaults, their stored form and back (I/O-free).

One table serves create_queue, subscribe and set_attributes, so an attribute is validated
and encoded the same way everywhere. The stored form is the ARGV of lua/create_queue.lua
and lua/set_attributes.lua: ``ATTR_FIELDS`` of lua/_prelude.lua, in that order, with
'' for none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.limits import (
    MAX_MESSAGE_SIZE_LIMIT,
    MAX_RECEIVE_COUNT_LIMIT,
    MAX_RETENTION,
    MAX_VISIBILITY,
    MIN_RETENTION,
    integer,
    number,
    seconds_ms,
    shown,
)
from rqueue._protocol.models import QueueAttributes

MIN_DEDUP_WINDOW, MAX_DEDUP_WINDOW = 1, 7 * 86400
MAX_RATE_LIMIT = 1_000_000
MAX_IN_FLIGHT_LIMIT = 1_000_000_000


def _flag(name: str, value: object) -> str:
    if not isinstance(value, bool):
        raise InvalidParameter(f"{name} must be True or False, got {shown(value)}")
    return "1" if value else ""


def _optional(encode: Callable[[str, object], str]) -> Callable[[str, object], str]:
    return lambda name, value: "" if value is None else encode(name, value)


def _rate(name: str, value: object) -> str:
    x = number(name, value, 0, MAX_RATE_LIMIT, "messages a second")
    if x <= 0:
        raise InvalidParameter(f"{name} must be None (off) or a number > 0 and <= {MAX_RATE_LIMIT}, got {shown(value)}")
    text = f"{x:.6f}".rstrip("0").rstrip(".")  # decimal digits only: lua/_prelude.lua arg_rate
    if text == "0":
        raise InvalidParameter(f"{name} must be at least 0.000001 messages a second, got {shown(value)}")
    return text


@dataclass(frozen=True, slots=True)
class _Attr:
    name: str  # the Python keyword and QueueAttributes field
    field: str  # the meta field
    encode: Callable[[str, object], str]
    decode: Callable[[str], Any]


def _ms(lo: float, hi: float) -> Callable[[str, object], str]:
    return lambda name, value: str(seconds_ms(name, value, lo, hi))


ATTRS: tuple[_Attr, ...] = (
    _Attr("visibility_timeout", "vt", _ms(0, MAX_VISIBILITY), lambda v: int(v) / 1000),
    _Attr("delay", "delay", _ms(0, MAX_RETENTION), lambda v: int(v) / 1000),
    _Attr("retention", "retention", _ms(MIN_RETENTION, MAX_RETENTION), lambda v: int(v) / 1000),
    _Attr(
        "max_message_size",
        "max_size",
        lambda n, v: str(integer(n, v, 1, MAX_MESSAGE_SIZE_LIMIT)),
        int,
    ),
    _Attr(
        "max_receive_count",
        "mrc",
        _optional(lambda n, v: str(integer(n, v, 1, MAX_RECEIVE_COUNT_LIMIT))),
        lambda v: int(v) if v else None,
    ),
    _Attr("deduplication_window", "dw", _ms(MIN_DEDUP_WINDOW, MAX_DEDUP_WINDOW), lambda v: int(v) / 1000),
    _Attr("fifo", "fifo", _flag, lambda v: v == "1"),
    _Attr("content_based_deduplication", "cbd", _flag, lambda v: v == "1"),
    _Attr("rate_limit", "rl", _optional(_rate), lambda v: float(v) if v else None),
    _Attr(
        "max_in_flight",
        "mif",
        _optional(lambda n, v: str(integer(n, v, 1, MAX_IN_FLIGHT_LIMIT))),
        lambda v: int(v) if v else None,
    ),
)
NAMES = tuple(a.name for a in ATTRS)
_BY_NAME = {a.name: a for a in ATTRS}
DEFAULTS: dict[str, Any] = {
    "visibility_timeout": 30,
    "delay": 0,
    "retention": 4 * 86400,
    "max_message_size": 256 * 1024,
    "max_receive_count": None,
    "deduplication_window": 300,
    "fifo": False,
    "content_based_deduplication": False,
    "rate_limit": None,
    "max_in_flight": None,
}
#: Meta defaults of attributes a queue made before them lacks (ATTR_DEFAULT in lua/_prelude.lua).
_STORED_DEFAULT = {"dw": "300000"}
assert tuple(f.name for f in fields(QueueAttributes)) == NAMES


def _delay_fits(delay_ms: str, retention_ms: str) -> None:
    if int(delay_ms) > int(retention_ms):
        raise InvalidParameter(
            f"delay must be from 0 to retention ({int(retention_ms) / 1000:g} seconds), got {int(delay_ms) / 1000:g}"
        )


def encode(values: Mapping[str, Any]) -> list[str]:
    """Every attribute (``values`` over the defaults), checked, in stored form and order."""
    unknown = set(values) - set(NAMES)
    if unknown:
        raise InvalidParameter(f"unknown queue attribute(s) {sorted(unknown)}; known: {', '.join(NAMES)}")
    merged = {**DEFAULTS, **values}
    out = [a.encode(a.name, merged[a.name]) for a in ATTRS]
    _delay_fits(out[1], out[2])
    return out


def encode_changes(changes: Mapping[str, Any], *, dead_letter_queue: bool) -> list[str]:
    """set_attributes' ARGV: (field, stored value) pairs, each checked; ``fifo`` may not change,
    and a dead-letter queue neither dead-letters nor deduplicates by content."""
    if not changes:
        raise InvalidParameter(f"set_attributes needs at least one change, of: {', '.join(NAMES)}")
    out: list[str] = []
    for name, value in changes.items():
        attr = _BY_NAME.get(name)
        if attr is None:
            raise InvalidParameter(f"unknown queue attribute {name!r}; known: {', '.join(NAMES)}")
        if name == "fifo":
            raise InvalidParameter("fifo cannot change: create a new queue to switch between FIFO and standard")
        if dead_letter_queue and name in ("max_receive_count", "content_based_deduplication") and value:
            raise InvalidParameter(f"{name} must be None or False on a dead-letter queue, got {shown(value)}")
        out += (attr.field, attr.encode(name, value))
    return out


def decode(stored: Mapping[str, str]) -> QueueAttributes:
    """QueueAttributes from meta fields (field -> value, '' or absent = none)."""
    values = {}
    for a in ATTRS:
        raw = stored.get(a.field) or _STORED_DEFAULT.get(a.field, "")
        values[a.name] = a.decode(raw)
    return QueueAttributes(**values)


def decode_list(reply: list[Any]) -> QueueAttributes:
    """QueueAttributes from the scripts' list of the 10 stored values in order ('' = none)."""
    raw = [(v.decode() if isinstance(v, bytes) else str(v)) for v in reply]
    return decode({a.field: v for a, v in zip(ATTRS, raw, strict=True)})
