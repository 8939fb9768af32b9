"""What the sync waiter and lane driver (``rqueue._sync.waiter``, ``lane_driver``,
generated) do with threads: the lane's connection, read in the driving caller's
thread on a selector that a socketpair pokes, and the primitives where the
asyncio source awaits. The twin of ``lane_async``; every decision is in
``lanes`` and ``blpop``, the drivers' control flow in ``rqueue._async.lane_driver``."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

from rqueue._transport.lanes import SYNC_SPREAD, LaneWait

#: Lanes per server before waits share blocked lanes (see ``lanes.SYNC_SPREAD``).
SPREAD = SYNC_SPREAD
#: The lock of a node's control connection.
Lock = threading.Lock


def state_lock() -> threading.Lock:
    """The waiter's lock: threads share its lanes."""
    return threading.Lock()


def new_handle() -> threading.Event | None:
    """A new wait's handle: made only if it has to wait for another driver (``rearm``)."""
    return None


def rearm(w: LaneWait) -> threading.Event:
    """The Event ``w`` sleeps on until its value comes or it is to drive (under the lock)."""
    handle = w.handle
    if handle is None:
        handle = w.handle = threading.Event()
    else:
        assert isinstance(handle, threading.Event)
        handle.clear()
    return handle


def sleep_on(handle: threading.Event, timeout: float) -> None:
    handle.wait(timeout)


class BackgroundWork:
    """The threads that finish a lane nobody else drives; ``end`` joins them."""

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()

    def start(self, fn: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=self._run, args=(fn, *args), name="rqueue-wait", daemon=True)
        self._threads.add(t)
        t.start()

    def _run(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        finally:
            self._threads.discard(threading.current_thread())

    def later(self, fn: Callable[..., None], *args: Any) -> None:
        """``fn(*args)`` now: a thread is not cancelled half way."""
        fn(*args)

    def end(self, timeout: float) -> None:
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(timeout)


class LaneLink:
    """How a lane's driving thread waits on its connection (see
    ``rqueue._async.lane_driver``): the thread reads it itself, after a
    selector on its socket and on a socketpair that ``poke`` (from any thread)
    writes to."""

    def __init__(self) -> None:
        self._sock: Any = None
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._r, selectors.EVENT_READ)

    def poke(self) -> None:
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def select(self, conn: Any, timeout: float) -> bool:
        """Until ``conn`` is readable, poked, or ``timeout``: whether it is readable."""
        sock = conn._sock
        if sock is not self._sock:  # a new connection: watch its socket instead
            if self._sock is not None:
                with contextlib.suppress(Exception):  # (closed already if it broke)
                    self._sel.unregister(self._sock)
            self._sel.register(sock, selectors.EVENT_READ)
            self._sock = sock
        ready = False
        for key, _ in self._sel.select(timeout):
            if key.fileobj is self._r:
                with contextlib.suppress(OSError):
                    while self._r.recv(4096):
                        pass
            else:
                ready = True
        return ready

    def close(self) -> None:
        """Close the selector and the poke sockets (the lane is retired)."""
        self._sel.close()
        self._r.close()
        self._w.close()
