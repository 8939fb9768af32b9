"""A script call as data, and the waits a flow yields between calls.

Everything in ``rqueue/_protocol`` builds these and nothing runs them: the sync and asyncio
clients run a ``Call`` (EVALSHA, then ``parse`` the reply), and drive a flow (a generator of
``Op``) by running each ``Call`` and blocking on each ``Wait`` or ``Pop``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rqueue._protocol.scripts import Script

T = TypeVar("T")


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


def settle_nothing(_: object) -> Sequence[Call[Any]]:
    """``settle`` of a call that only has to finish (nothing to undo)."""
    return ()


Op = Call[Any] | Wait | Pop


def flags(reply: list[Any] | bytes) -> list[bool]:
    """The reply parser of a call that answers one 0/1 per item (a stale receipt: False), as
    integers or (delete: cheaper to build and to read) one string of '1' and '0'."""
    if isinstance(reply, bytes):
        return [x == 49 for x in reply]
    return [bool(x) for x in reply]
