"""The BLPOP a lane has in flight (no I/O): the command, and the driver's watch
over it until its answer comes (when to release it, when to ask whether its
connection is still there, how long to sleep). Both lane drivers use it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from rqueue._transport.lanes import _STOP, GRACE, Lane, Lanes, LaneWait, server_timeout


def blpop_command(conn: Any, keys: list[str], timeout: float) -> bytes:
    """``BLPOP key... timeout`` in RESP: a lane sends it again after every answer,
    and redis-py's pack_command costs about 1 us a key where this costs 0.3."""
    encode = conn.encoder.encode
    out = [b"*%d\r\n$5\r\nBLPOP\r\n" % (len(keys) + 2)]
    for key in keys:
        raw = encode(key)
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    seconds = b"%.3f" % server_timeout(timeout)
    out.append(b"$%d\r\n%b\r\n" % (len(seconds), seconds))
    return b"".join(out)


#: ``Watch.next``: the BLPOP's driver asks whether its connection is still there.
PROBE = "probe"
#: ``Watch.next``: the driver releases the BLPOP (CLIENT UNBLOCK).
RELEASE = "release"


class Watch:
    """A driver's watch over the BLPOP in flight until its answer comes (no I/O):
    when to release it, when to ask whether its connection is still there, how
    long to sleep. The sync driver asks under the waiter's lock."""

    __slots__ = ("_check", "_core", "_lane", "_me", "_released")

    def __init__(self, core: Lanes, lane: Lane, me: LaneWait | None) -> None:
        self._core, self._lane, self._me = core, lane, me
        self._check = lane.block_until + GRACE  # the server's own timeout has long passed by then
        self._released = False

    def next(self, now: float, can_unblock: bool) -> object:
        """_STOP (``me`` finished first, or the lane is retired: the BLPOP is left
        for the next driver), PROBE (then ``alive``), RELEASE (then ``released``),
        or how many seconds to sleep until one of those may be due."""
        lane = self._lane
        if (self._me is not None and self._me.done) or lane.retired:
            return _STOP
        if now >= self._check:
            return PROBE
        release = self._core.must_release(lane, now)
        if release and not self._released and can_unblock:
            return RELEASE
        return max(0.0, (self._check if release else min(lane.deadline(), self._check)) - now)

    def alive(self, now: float) -> None:
        """The connection is there, held by a paused server (a failover): try again."""
        self._check, self._released = now + GRACE, False

    def released(self) -> None:
        self._released = True


def release_delays() -> Iterator[float]:
    """How long a driver waits for the BLPOP's answer between CLIENT UNBLOCKs: the
    BLPOP may not have reached the server yet, or its answer may be on the way.
    A server with writes paused holds a BLPOP sent meanwhile: it gives up after 1 s."""
    delay = 0.0005
    give_up = time.monotonic() + 1.0
    while time.monotonic() <= give_up:
        yield delay
        delay = min(delay * 2, 0.05)
