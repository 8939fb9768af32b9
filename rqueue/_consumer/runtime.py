"""Where the two consumer runners truly differ: threads or tasks, as twin primitives.

The runner is written once, for asyncio (``rqueue._consumer.tasks``);
``scripts/unasync`` turns ``AsyncX`` into ``X`` for the thread runner
(``rqueue._consumer.threads``). So each ``AsyncX`` here has a sync ``X`` with
the same methods (async ones on the asyncio side), in the style of httpcore's
``_synchronization``:

- ``RLock``: the runner's lock (program steps, taking and finishing jobs);
  asyncio code runs on one thread, so ``AsyncRLock`` does nothing.
- ``Wakeup``: a wake-up waited for with the lock held (a ``Condition`` on it / an ``asyncio.Event``).
- ``Runtime``: spawn and join a thread or task, install signal handlers.
- ``Stopper``: the shutdown, run once (in the caller or a stopper thread / in a task of its own).

The worker pools (threads that grow and exit when idle / tasks woken one at a
time) are in ``rqueue._consumer.workers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

#: What a cancelled asyncio ``run()``/``stop()`` raises once stopped.
AsyncCancelled = asyncio.CancelledError
#: The consumer's own signal handler: ``(signum, *frame)``.
SignalHandler = Callable[..., None]
AsyncHandle = asyncio.Task[None]
Handle = threading.Thread


class Cancelled(BaseException):
    """Never raised: a thread is not cancelled (the sync twin of ``asyncio.CancelledError``)."""


class _Stopper:
    """The shutdown (``shutdown``), claimed once (``claim``); ``on_cancel``: a cancelled caller's
    stop request; ``done``: set when the shutdown is over."""

    def __init__(
        self, shutdown: Callable[[], Any], claim: Callable[[], bool], on_cancel: Callable[[], None], done: Any
    ) -> None:
        self._shutdown = shutdown
        self._claim = claim
        self._on_cancel = on_cancel
        self._done = done


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


class AsyncRuntime:
    """Tasks on the running loop."""

    KIND = "task"
    #: Handlers are coroutine functions.
    COROUTINES = True

    def spawn(self, name: str, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> AsyncHandle:
        return asyncio.create_task(fn(*args), name=name)

    async def join(self, handles: Sequence[AsyncHandle | None], timeout: float) -> None:
        tasks = [t for t in handles if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def install_signals(self, handler: SignalHandler) -> Callable[[], None]:
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


class AsyncStopper(_Stopper):
    """The shutdown, started once in a task of its own: cancelling a caller cannot cut it short."""

    _task: asyncio.Future[None] | None = None

    def start(self) -> asyncio.Future[None]:
        if self._task is None:
            self._claim()
            self._task = asyncio.ensure_future(self._shutdown())
        return self._task

    async def wait(self) -> AsyncCancelled | None:
        """Wait until the consumer has stopped; a cancellation meanwhile counts as a stop request
        (the second one stops at once) and is returned, for the caller to raise once stopped."""
        task = self.start()
        cancelled: AsyncCancelled | None = None
        while True:
            try:
                await asyncio.shield(task)
                return cancelled
            except asyncio.CancelledError as e:
                cancelled = cancelled or e
                if task.done():
                    return cancelled
                self._on_cancel()


# ---------------------------------------------------------------------------- threads


#: A re-entrant lock: a signal handler may take it on the main thread.
RLock = threading.RLock


class Wakeup:
    """A Condition on the runner's lock: ``notify`` (lock held) wakes every waiter."""

    def __init__(self, lock: Any) -> None:
        cv = threading.Condition(lock)
        self.notify = cv.notify_all
        self.wait = cv.wait


class Runtime:
    """Daemon threads."""

    KIND = "thread"
    #: Handlers are plain functions.
    COROUTINES = False

    def spawn(self, name: str, fn: Callable[..., None], *args: Any) -> Handle:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        return t

    def join(self, handles: Sequence[Handle | None], timeout: float) -> None:
        for t in handles:
            if t is not None:
                t.join(timeout)

    def install_signals(self, handler: SignalHandler) -> Callable[[], None]:
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


class Stopper(_Stopper):
    """The shutdown, run once by the first caller (or a stopper thread); later callers wait for it."""

    def start(self) -> None:
        threading.Thread(target=self.wait, name="rqueue-stopper", daemon=True).start()

    def wait(self) -> Cancelled | None:
        if self._claim():
            self._shutdown()
        else:
            self._done.wait()
        return None
