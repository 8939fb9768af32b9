"""The few places where threads and asyncio truly differ, as twin primitives.

The listener and the trackers (``rqueue._async.listener``) are written once,
for asyncio; ``scripts/unasync`` turns ``AsyncX`` into ``X`` for the sync
copy. So each ``AsyncX`` here has a sync ``X`` with the same methods (async
ones on the asyncio side), in the style of httpcore's ``_synchronization``:

- ``ThreadLock``: a lock between threads; asyncio code runs on one thread, so
  ``AsyncThreadLock`` does nothing.
- ``Flag``: an event flag with a timed wait (``threading.Event`` / ``asyncio.Event``).
- ``Condition``: wait until a predicate holds (``threading.Condition`` / futures).
- ``Background``: where the listener runs (a daemon thread / a task).
- ``Callbacks``: where users' callbacks run, off the listener (one thread per
  client / a task per job, one at a time per job).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

# ---------------------------------------------------------------------------- asyncio


class AsyncThreadLock:
    """No lock: asyncio code runs on one thread (the sync side's is a ``threading.Lock``)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class AsyncFlag:
    """An ``asyncio.Event`` whose wait takes a timeout."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """True once set, False after ``timeout`` seconds (None: for ever)."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class AsyncCondition:
    """Wake the waiters of a predicate (``with`` it does nothing, like ``AsyncThreadLock``)."""

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    def notify_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """True once ``predicate()`` holds (checked after each ``notify_all``), False after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate():
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, remaining)
        return True


class AsyncBackground:
    """Runs ``target`` in a task, once; ``stop`` cancels it and waits for it."""

    #: How it pauses (between reconnects).
    sleep = staticmethod(asyncio.sleep)

    def __init__(self, target: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._target = target
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._started = False

    def start(self) -> None:
        """Start the task unless it was started before."""
        if not self._started:
            self._started = True
            self._task = asyncio.ensure_future(self._target())
            self._task.set_name(self._name)

    async def stop(self, timeout: float) -> None:
        """Cancel the task and wait until it ended (``timeout`` is the sync side's join)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class AsyncCallbacks:
    """Runs each submitted job in a task, the same job never twice at once.

    A tracker submits its ``_call_back`` (which runs every event not yet
    given) on each event; while that task runs, it picks new events up
    itself, so no second one is started.
    """

    def __init__(self) -> None:
        #: The running task of each job; also keeps it alive (the loop keeps only weak references).
        self._running: dict[Callable[[], Coroutine[Any, Any, None]], asyncio.Task[None]] = {}

    def submit(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = self._running.get(job)
        if task is not None and not task.done():
            return
        task = self._running[job] = asyncio.ensure_future(job())
        task.add_done_callback(lambda t: self._running.pop(job) if self._running.get(job) is t else None)

    async def aclose(self, timeout: float) -> None:
        """Nothing to end: the tasks finish by themselves."""


# ---------------------------------------------------------------------------- threads


ThreadLock = threading.Lock
Condition = threading.Condition


#: Its wait takes a timeout already.
Flag = threading.Event


class Background:
    """Runs ``target`` on a daemon thread, once; ``stop`` joins it (not from itself)."""

    #: How it pauses (between reconnects).
    sleep = staticmethod(time.sleep)

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._thread = threading.Thread(target=target, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread unless it was started before."""
        if self._thread.ident is None:
            self._thread.start()

    def stop(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the thread to end (if it was started)."""
        thread = self._thread
        if thread.ident is not None and thread is not threading.current_thread():
            thread.join(timeout)


class Callbacks:
    """One thread that runs the submitted jobs, one at a time and in order.

    Not the listener's thread: a callback that calls the client (a tracked
    send waits for the listener to confirm a subscription) must not block it.
    ``inline=True`` runs each job on the caller's thread instead (a tracker no
    listener registered).
    """

    def __init__(self, inline: bool = False) -> None:
        self._inline = inline
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        if self._inline:
            job()
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rqueue-events-callbacks", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def close(self, timeout: float) -> None:
        """Run what was submitted, then end the thread (not waiting for it from a callback)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout)
