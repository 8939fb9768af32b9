"""The consumer's worker pools: threads that grow on demand and exit when idle, or tasks woken one at a time.

Twins in the style of ``rqueue._consumer.runtime`` (``AsyncWorkers`` for the
asyncio runner, ``Workers`` for the thread runner generated from it), with
the same methods: ``wake`` (a worker must take the jobs in ``Control.work``),
``stalled`` (the maintainer's look), ``halted``/``closing`` (wake idle
workers), ``join`` (the shutdown's), ``inside`` (is this a handler of this
consumer: its ``stop()`` must not wait for its own job). What a job's outcome
is, is ``Control.finished``; the handler call is the runner's ``_call``.

``host`` is the runner (``_control``, ``_life``, ``_call``, ``_report``,
``_halted``, ``_spawn``).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import threading
import time
from typing import Any

from rqueue._consumer.control import Control
from rqueue._consumer.jobs import Job

#: The pool whose handler runs in this thread or task (and in tasks a handler starts; a thread
#: starts with an empty context, so a thread a handler starts is not inside).
_handling: contextvars.ContextVar[_Pool | None] = contextvars.ContextVar("rqueue_handling", default=None)

#: A worker thread with nothing to do for this long exits (the pool shrinks).
IDLE_TIMEOUT = 10.0
#: A worker wakes a helper for the jobs left behind it only when they would wait longer than
#: this at the measured handler speed: fast handlers run back to back on one thread.
HANDOFF = 0.0005


class _Pool:
    """What both pools keep, and the calls that do nothing unless a pool needs them."""

    def __init__(self, host: Any, lock: Any, concurrency: int) -> None:
        self._host = host
        self._lock = lock
        self._concurrency = concurrency
        self.size = 0  # worker threads alive

    def __len__(self) -> int:
        return self.size

    def inside(self) -> bool:
        """Is this a handler of this pool (its ``stop()`` must not wait for its own job)?"""
        return _handling.get() is self

    def cancel(self) -> list[Any]:
        """The shutdown's: cancel the workers that can be; those to wait for (bounded)."""
        return []

    def stalled(self) -> bool:
        return False

    def halted(self) -> None:
        return None

    def closing(self) -> None:
        return None  # threads: wake idle workers to exit; tasks: the shutdown cancels them

    def _begin(self) -> tuple[Any, Control]:
        """A worker starts: the runner and its control. Its handlers are inside this pool (its thread's
        or task's context, and the tasks they start): their ``stop()`` must not wait for their own job."""
        _handling.set(self)
        return self._host, self._host._control

    def _lost(self, ctl: Control, job: Job | None, e: BaseException) -> None:
        """A worker dies of the consumer's own bug (not a handler's): stop the consumer (the
        runner's ``_guarded`` logs it); its job is held by a dead worker: the shutdown must not wait for it."""
        self._host._life.crash(e)
        if job is not None:
            ctl.ledger.forget(job)


# ---------------------------------------------------------------------------- asyncio


class AsyncWorkers(_Pool):
    """Up to ``concurrency`` worker tasks pulling jobs from ``Control.work`` (no task per message:
    a handler that never suspends costs a coroutine call, and a worker wakes one helper only
    when more work waits)."""

    #: No stall check: a task that suspends lets the next one run.
    STALL: float | None = None

    def __init__(self, host: Any, lock: Any, concurrency: int) -> None:
        super().__init__(host, lock, concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waking = False  # a worker was woken or started and has not run yet

    def wake(self) -> None:
        """Make sure a worker will look at the work soon: wake an idle one or start one.

        At most one wake-up is outstanding: the woken worker wakes the next
        only if work is left when it takes a job, so a batch of handlers that
        never suspend runs on one worker with one wake-up.
        """
        if self._waking:
            return
        if self._idle:
            self._waking = True
            self._idle.popleft().set_result(None)
        elif len(self._tasks) < self._concurrency:
            self._waking = True
            task = self._host._spawn("rqueue-worker", self._work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def __len__(self) -> int:
        return len(self._tasks)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel the workers (idle, or abort/deadline: their messages come back after the timeout)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    async def _work(self) -> None:
        host, ctl = self._begin()
        loop = asyncio.get_running_loop()
        job: Job | None = None
        try:
            while True:
                self._waking = False
                while (job := ctl.take()) is not None:
                    if ctl.work:
                        self.wake()  # a helper, in case this handler suspends
                    name, reply, error, seconds = await host._call(job)
                    outcome = ctl.finished(job, reply, error, time.monotonic())
                    if error is not None or ctl.hooks:
                        host._report(job, name, outcome, seconds, error)
                idle = loop.create_future()
                self._idle.append(idle)
                await idle
        except Exception as e:
            self._lost(ctl, job, e)
            host._halted()
            raise


# ---------------------------------------------------------------------------- threads


class Workers(_Pool):
    """Worker threads that grow on demand up to ``concurrency`` and exit when idle; jobs are
    taken and finished under the runner's lock, handlers run outside it."""

    #: Jobs waiting this long with no worker taking one get a helper anyway (a handler that was
    #: fast turned slow); the maintainer checks.
    STALL: float | None = 0.005

    def __init__(self, host: Any, lock: Any, concurrency: int) -> None:
        super().__init__(host, lock, concurrency)
        self._cv = threading.Condition(lock)  # idle workers
        self.idle = 0
        self.avg = HANDOFF  # moving average of handler seconds (starts pessimistic: hand off)
        self.takes = 0  # jobs taken so far; the maintainer's stall check compares it
        self.takes_seen = -1

    def wake(self) -> None:
        """Wake an idle worker or start one (lock held)."""
        if self.idle:
            self._cv.notify()
        elif self.size < self._concurrency:
            self.size += 1
            self._host._spawn("rqueue-worker", self._work)

    def stalled(self) -> bool:
        """Jobs wait for a worker (lock held); none was taken since the last look: get a helper."""
        ctl = self._host._control
        if ctl is None or not ctl.work or self._host._life.halted:
            return False
        if self.takes == self.takes_seen:
            self.wake()  # jobs wait behind a handler that turned slow
        self.takes_seen = self.takes
        return True

    def halted(self) -> None:
        self._cv.notify_all()

    closing = halted

    def _take(self, ctl: Control) -> Job | None:
        """The next job (lock held); get a helper if the jobs left would wait too long."""
        job = ctl.take()
        if job is not None:
            self.takes += 1
            if ctl.work and self.avg * len(ctl.work) > HANDOFF:
                self.wake()
        return job

    def _next(self, ctl: Control) -> Job | None:
        """Wait (lock held) for a job; None: this worker exits (idle too long, or closing)."""
        life = self._host._life
        while (job := self._take(ctl)) is None:
            if life.closing:
                return None
            self.idle += 1
            woke = self._cv.wait(IDLE_TIMEOUT)
            self.idle -= 1
            if not woke and (not ctl.work or life.halted):
                return None
        return job

    def _work(self) -> None:
        host, ctl = self._begin()
        call = host._call
        lock = self._lock
        job: Job | None = None
        reply: Any = None
        error: BaseException | None = None
        name = ""
        seconds = 0.0
        report = bool(ctl.hooks)
        try:
            while True:
                finished = None
                with lock:
                    if job is not None:
                        self.avg += (seconds - self.avg) * 0.1
                        outcome = ctl.finished(job, reply, error, time.monotonic())
                        finished = job
                    job = self._take(ctl)
                if finished is not None and (error is not None or report):
                    host._report(finished, name, outcome, seconds, error)
                if job is None:
                    with lock:
                        job = self._next(ctl)
                        if job is None:
                            self.size -= 1
                            return
                name, reply, error, seconds = call(job)
        except BaseException as e:
            with lock:
                self.size -= 1
                self._lost(ctl, job, e)
            raise
