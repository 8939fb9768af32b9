"""The limits of the contract, and the checks of a caller's numbers and batches against them.

Every ``InvalidParameter`` for a number, a duration or a batch says the parameter's name
and the allowed range, and is raised here, before anything is sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TypeVar

from rqueue._protocol.errors import InvalidParameter

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


def shown(value: object) -> str:
    """``repr(value)`` for an error message, cut to 80 characters; an int too long to print
    (``repr`` raises ValueError past 4300 digits) by its size."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    return f"{value!r:.80}"


def number(name: str, value: object, lo: float, hi: float, unit: str) -> float:
    """An int or float in [lo, hi] ``unit``s (never a bool or NaN)."""
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
    return round(number(name, value, lo, hi, "seconds") * 1000)


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
