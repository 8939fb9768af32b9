"""Where the two consumer runners truly differ: threads or tasks, as twin primitives.

The runner is written once, for asyncio (``rqueue._consumer.tasks``);
``scripts/unasync`` turns ``AsyncX`` into ``X`` for the thread runner
(``rqueue._consumer.threads``). So each ``AsyncX`` here has a sync ``X`` with
the same methods (async ones on the asyncio side), in the style of httpcore's
``_synchronization``:

- ``RLock``: the runner's lock (program steps, taking and finishing jobs);
  asyncio code runs on one thread, so ``AsyncRLock`` does nothing.
- ``Wakeup``: a wake-up waited for with the lock held (a ``Condition`` on it / an ``asyncio.Event``).
- ``Pause``: an event flag with an optional timed wait (``threading.Event`` / ``asyncio.Event``).
- ``Runtime``: spawn and join a thread or task, install signal handlers, wait until halted.
- ``Stopper``: the shutdown, run once (in the caller or a stopper thread / in a task of its own).
- ``Polls``: receivers' long polls, ended early by the shutdown.

The worker pools (threads that grow and exit when idle / tasks woken one at a
time) are in ``rqueue._consumer.workers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from rqueue._async.client import AsyncClient
from rqueue._sync.client import Client

#: What a cancelled asyncio ``run()``/``stop()`` raises once stopped (never on threads).
Cancelled = asyncio.CancelledError
#: The consumer's own signal handler: ``(signum, *frame)``.
SignalHandler = Callable[..., None]
AsyncHandle = asyncio.Task[None]
Handle = threading.Thread

# ---------------------------------------------------------------------------- asyncio


class AsyncRLock:
    """No lock: asyncio code runs on one thread (the thread runner's is a ``threading.RLock``)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self) -> None:
        return None

    def release(self) -> None:
        return None


class AsyncWakeup:
    """A wake-up: ``notify`` sets it; ``wait`` clears it and waits until set again or ``timeout``."""

    def __init__(self, lock: AsyncRLock) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None) -> None:
        event = self._event
        event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


class AsyncPause:
    """An ``asyncio.Event`` whose wait takes a timeout (None: for ever)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class AsyncRuntime:
    """Tasks on the running loop."""

    KIND = "task"
    #: Handlers are coroutine functions.
    COROUTINES = True

    @staticmethod
    def where() -> str:
        return "task"

    @staticmethod
    def spawn(name: str, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> AsyncHandle:
        return asyncio.create_task(fn(*args), name=name)

    @staticmethod
    async def join(handles: Sequence[AsyncHandle | None], timeout: float) -> None:
        tasks = [t for t in handles if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    @staticmethod
    def install_signals(handler: SignalHandler) -> Callable[[], None]:
        """SIGINT/SIGTERM call ``handler(signum)`` (main thread only); returns what undoes it."""
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (int(signal.SIGINT), int(signal.SIGTERM)):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, handler, sig)
                    installed.append(sig)

        def restore() -> None:
            for sig in installed:
                loop.remove_signal_handler(sig)

        return restore

    @staticmethod
    def loop_exit(e: BaseException) -> None:
        """Re-raise what asyncio lets end the loop (a cancellation, Ctrl-C, exit): not a crash to stop for."""
        if isinstance(e, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise e

    @staticmethod
    def handler_escape(e: BaseException) -> None:
        """Re-raise what a handler raised that is not the message's failure: this worker's own
        cancellation (stopping at once: the message comes back after its timeout), Ctrl-C, exit.
        An inner task's cancellation that escaped the handler is a failure like any other."""
        if isinstance(e, asyncio.CancelledError):
            me = asyncio.current_task()
            if me is None or me.cancelling():
                raise e
        elif not isinstance(e, Exception):
            raise e

    @staticmethod
    async def until(halt: AsyncPause, on_cancel: Callable[[], None]) -> Cancelled | None:
        """Wait until ``halt`` is set; a cancellation meanwhile calls ``on_cancel`` and is returned."""
        try:
            await halt.wait()
        except asyncio.CancelledError as e:
            on_cancel()
            return e
        return None


class AsyncStopper:
    """The shutdown, started once in a task of its own: cancelling a caller cannot cut it short."""

    def __init__(
        self,
        shutdown: Callable[[], Coroutine[Any, Any, None]],
        claim: Callable[[], bool],
        on_cancel: Callable[[], None],
        done: AsyncPause,
    ) -> None:
        self._shutdown = shutdown
        self._claim = claim
        self._on_cancel = on_cancel
        self._task: asyncio.Future[None] | None = None

    def start(self) -> asyncio.Future[None]:
        if self._task is None:
            self._claim()
            self._task = asyncio.ensure_future(self._shutdown())
        return self._task

    async def wait(self) -> Cancelled | None:
        """Wait until the consumer has stopped; a cancellation meanwhile counts as a stop request
        (the second one stops at once) and is returned, for the caller to raise once stopped."""
        task = self.start()
        cancelled: Cancelled | None = None
        while True:
            try:
                await asyncio.shield(task)
                return cancelled
            except asyncio.CancelledError as e:
                cancelled = cancelled or e
                if task.done():
                    return cancelled
                self._on_cancel()


class AsyncPolls:
    """Receivers' long polls under way; ``unblock`` cancels them."""

    def __init__(self, client: AsyncClient, lock: AsyncRLock, may_wait: Callable[[int], bool]) -> None:
        self._client = client
        self._waiting: dict[int, asyncio.Future[bool]] = {}

    async def wait(self, qi: int, key: str, timeout: float) -> bool:
        """Wait for a send's wake-up on ``key`` (queue ``qi``); True if one came."""
        wait = self._waiting[qi] = asyncio.ensure_future(self._client.wait(key, timeout))
        try:
            return await wait
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if not wait.cancelled() or (me is not None and me.cancelling()):
                raise  # the receiver itself is cancelled, not just its wait
            return False
        finally:
            self._waiting.pop(qi, None)

    def unblock(self, which: Any) -> None:
        """End the long polls of the queues in ``which`` (None: all)."""
        for qi, w in list(self._waiting.items()):
            if which is None or qi in which:
                w.cancel()


# ---------------------------------------------------------------------------- threads


#: A re-entrant lock: a signal handler may take it on the main thread.
RLock = threading.RLock


class Wakeup:
    """A Condition on the runner's lock: ``notify`` (lock held) wakes every waiter."""

    def __init__(self, lock: Any) -> None:
        cv = threading.Condition(lock)
        self.notify = cv.notify_all
        self.wait = cv.wait


class Pause(threading.Event):
    """A ``threading.Event`` (its ``wait`` takes the same optional timeout)."""


class Runtime:
    """Daemon threads."""

    KIND = "thread"
    #: Handlers are plain functions.
    COROUTINES = False

    @staticmethod
    def where() -> str:
        return f"thread {threading.current_thread().name}"

    @staticmethod
    def spawn(name: str, fn: Callable[..., None], *args: Any) -> Handle:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        return t

    @staticmethod
    def join(handles: Sequence[Handle | None], timeout: float) -> None:
        for t in handles:
            if t is not None:
                t.join(timeout)

    @staticmethod
    def install_signals(handler: SignalHandler) -> Callable[[], None]:
        """SIGINT/SIGTERM call ``handler(signum, frame)`` (main thread only); returns what undoes it."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        restore: list[tuple[int, Any]] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            restore.append((sig, signal.getsignal(sig)))
            signal.signal(sig, handler)

        def undo() -> None:
            for sig, previous in restore:
                signal.signal(sig, previous)

        return undo

    @staticmethod
    def until(halt: Pause, on_cancel: Callable[[], None]) -> Cancelled | None:
        """Wait until ``halt`` is set (a signal handler runs meanwhile on the main thread)."""
        halt.wait()
        return None


class Stopper:
    """The shutdown, run once by the first caller (or a stopper thread); later callers wait for it."""

    def __init__(
        self, shutdown: Callable[[], None], claim: Callable[[], bool], on_cancel: Callable[[], None], done: Pause
    ) -> None:
        self._shutdown = shutdown
        self._claim = claim
        self._done = done

    def start(self) -> None:
        threading.Thread(target=self.wait, name="rqueue-stopper", daemon=True).start()

    def wait(self) -> Cancelled | None:
        if self._claim():
            self._shutdown()
        else:
            self._done.wait()
        return None


class Polls:
    """Receivers' long polls under way; ``unblock`` ends them from another thread."""

    def __init__(self, client: Client, lock: Any, may_wait: Callable[[int], bool]) -> None:
        self._client = client
        self._lock = lock
        self._may_wait = may_wait
        self._unblockers: dict[int, Callable[[], None]] = {}

    def wait(self, qi: int, key: str, timeout: float) -> bool:
        """Wait for a send's wake-up on ``key`` (queue ``qi``); True if one came."""
        try:
            return self._client.wait(key, timeout, on_block=functools.partial(self._on_block, qi))
        finally:
            with self._lock:
                self._unblockers.pop(qi, None)

    def _on_block(self, qi: int, unblock: Callable[[], None]) -> None:
        with self._lock:
            if self._may_wait(qi):
                self._unblockers[qi] = unblock
            else:
                unblock()

    def unblock(self, which: Any) -> None:
        """End the long polls of the queues in ``which`` (None: all)."""
        with self._lock:
            unblockers = [u for qi, u in self._unblockers.items() if which is None or qi in which]
        for unblock in unblockers:
            unblock()
