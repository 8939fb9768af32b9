"""``rqueue.asyncio.AsyncConsumer`` (also ``rqueue.asyncio.Consumer``): async handlers as tasks on one loop.

The design of the thread consumer (``rqueue._consumer.threads``), on tasks: one
receiver per queue, a maintainer (ack flush after a few ms, lease extension)
and up to ``concurrency`` worker tasks pulling jobs from one deque (no task
per message: a handler that never suspends costs a coroutine call, and a
worker wakes one helper only when more work waits). What receivers,
maintainer and shutdown do is written once, I/O-free, in
``rqueue._consumer.programs``; this module awaits what they ask for and runs
the workers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from rqueue._async.client import AsyncClient, AsyncQueue
from rqueue._consumer.base import ConsumerBase
from rqueue._consumer.control import RECEIVE_BACKOFF, Control, Wakes
from rqueue._consumer.core import setup
from rqueue._consumer.handlers import Router
from rqueue._consumer.ledger import Job
from rqueue._consumer.lifecycle import Outage, Then
from rqueue._consumer.metrics import Hook
from rqueue._consumer.programs import (
    JOIN_TIMEOUT,
    Ask,
    Cursor,
    Join,
    Program,
    Signal,
    Until,
    maintain,
    receive,
    shutdown,
)

#: The consumer whose handler runs in this task (and in tasks a handler starts): its stop()
#: must not wait for its own job.
_handling: contextvars.ContextVar[AsyncConsumer | None] = contextvars.ContextVar("rqueue_handling", default=None)


class AsyncConsumer(ConsumerBase):
    """Run an async ``handler`` for every message of one or more queues.

    consumer = rqueue.asyncio.AsyncConsumer(q, handler, concurrency=100, batch_size=10)
    await consumer.run()   # until stop() or SIGINT/SIGTERM (a second one stops at once)

    or ``async with consumer: ...`` to run it beside other work. Outcomes,
    retries and options are those of ``rqueue.Consumer``.
    """

    def __init__(
        self,
        queue_or_queues: AsyncQueue | Sequence[AsyncQueue],
        handler: Callable[..., Any] | Router,
        *,
        concurrency: int = 100,
        batch_size: int = 10,
        retry_base: float = 0.5,
        retry_cap: float = 60.0,
        flush_interval: float = 0.005,
        shutdown_timeout: float = 30.0,
        visibility_timeout: float | None = None,
        hooks: Sequence[Hook] = (),
    ) -> None:
        options = (concurrency, batch_size, retry_base, retry_cap, flush_interval, shutdown_timeout, visibility_timeout)
        self._slot = asyncio.Event()  # slots freed, a receiver's turn, stop requested
        self._maint = asyncio.Event()  # the maintainer must look
        wakes = Wakes(self._slot.set, self._maint.set, self._wake, self._halted, self._closing)
        super().__init__(setup(queue_or_queues, handler, AsyncQueue, True, hooks, options), wakes)
        parts = self._setup
        self.queues: list[AsyncQueue] = parts.queues
        self._client: AsyncClient = parts.client
        self._workers: set[asyncio.Task[None]] = set()
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waking = False  # a worker was woken or started and has not run yet
        self._receivers: list[asyncio.Task[None]] = []
        self._waiting: dict[int, asyncio.Future[bool]] = {}  # receivers' long polls under way
        self._maintainer: asyncio.Task[None] | None = None
        self._halt_event = asyncio.Event()  # stop requested: run() returns, receivers' backoffs end
        self._exit_event = asyncio.Event()  # the maintainer exits: its backoff ends at once
        self._stopping: asyncio.Future[None] | None = None  # the shutdown, in a task of its own
        self._done = asyncio.Event()  # the shutdown is over

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the receiver and maintainer tasks; returns at once."""
        self._check_new()
        attrs = [await q.attributes() for q in self.queues]
        ctl = self._open(attrs, [Outage(*RECEIVE_BACKOFF) for _ in attrs], "tasks")
        self._maintainer = self._task("rqueue-maintainer", self._drive(maintain(ctl)))
        self._receivers = [
            self._task(f"rqueue-receiver-{n}", self._drive(receive(ctl, qi))) for qi, n in enumerate(self._setup.names)
        ]

    def _task(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.create_task(self._guarded(work), name=name)

    async def run(self) -> None:
        """Consume until ``stop()``, SIGINT/SIGTERM or cancellation, then stop gracefully.

        Cancelling the task that awaits ``run()`` (``asyncio.timeout``, a
        TaskGroup, ``task.cancel()``) stops it as ``stop()`` does, then the
        CancelledError propagates; a second cancellation meanwhile stops at
        once (as a second signal). If one of the consumer's own tasks dies of
        a bug, it stops gracefully too and ``run()`` raises RuntimeError.
        """
        self._life.in_run = True  # before any task starts: a crash leaves the shutdown to run()
        await self.start()
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (int(signal.SIGINT), int(signal.SIGTERM)):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
        cancelled: asyncio.CancelledError | None = None
        try:
            try:
                await self._halt_event.wait()
            except asyncio.CancelledError as e:
                cancelled = e
                self._request_stop(outside=True)
            cancelled = await self._stopped() or cancelled
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        if cancelled is not None:
            raise cancelled
        self._life.raise_crash("task")

    def _shutdown_task(self) -> asyncio.Future[None]:
        """The shutdown, started once in a task of its own: cancelling a caller cannot cut it short."""
        if self._stopping is None:
            self._life.claim_shutdown()
            self._stopping = asyncio.ensure_future(self._shutdown())
        return self._stopping

    async def _stopped(self) -> asyncio.CancelledError | None:
        """Wait until the consumer has stopped; a cancellation meanwhile counts as a stop request
        (the second one stops at once) and is returned, for the caller to raise once stopped."""
        task = self._shutdown_task()
        cancelled: asyncio.CancelledError | None = None
        while True:
            try:
                await asyncio.shield(task)
                return cancelled
            except asyncio.CancelledError as e:
                cancelled = cancelled or e
                if task.done():
                    return cancelled
                self._request_stop(outside=True)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a receiver, the maintainer or a worker; a crash stops the consumer instead of leaving it idle."""
        try:
            await work
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise  # asyncio lets these end the loop: not ours to turn into a stop
        except BaseException as e:  # noqa: BLE001 - logged by _crashed; the consumer stops
            if self._crashed(e, "task") is Then.BACKGROUND:  # nobody waits in run() to stop it
                self._shutdown_task()

    def _request_stop(self, *, outside: bool) -> None:
        self._life.request_stop(outside=outside)
        self._halted()

    def _halted(self) -> None:
        """A stop was requested: whoever waits must look (run(), receivers' backoffs and slot waits)."""
        self._halt_event.set()
        self._slot.set()

    def _closing(self) -> None:
        """The maintainer exits (the shutdown cancels the workers)."""
        self._exit_event.set()
        self._maint.set()

    async def stop(self) -> None:
        """Stop gracefully (see ``rqueue.Consumer.stop``); again while stopping: at once.

        From inside a handler (or a task it started) it returns at once: the
        consumer stops in the background and that handler's message is
        acknowledged when it returns. If an internal task crashed, raises
        RuntimeError (as ``run()`` does) once stopped.
        """
        then = self._stop_request(inside=_handling.get() is self)
        if then is Then.BACKGROUND:
            self._shutdown_task()
        elif then is Then.SHUTDOWN:
            cancelled = await self._stopped()
            if cancelled is not None:
                raise cancelled
            self._life.raise_crash("task")

    async def __aenter__(self) -> AsyncConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _shutdown(self) -> None:
        """Stop (``programs.shutdown``); runs once, in its own task (``_shutdown_task``)."""
        ctl = self._control
        assert ctl is not None
        try:
            await self._drive(shutdown(ctl))
        finally:
            self._done.set()

    # ------------------------------------------------------------ programs

    async def _drive(self, program: Program) -> None:
        """Run ``program``, awaiting what it asks for; a result goes back in, an exception is thrown in."""
        cursor = Cursor(program)
        while (step := cursor.next()) is not None:
            try:
                cursor.result = await self._do(*step)
            except BaseException as e:  # noqa: BLE001 - the program decides (it re-raises what it cannot handle)
                cursor.error = e

    async def _do(self, ask: Ask, arg: Any) -> Any:
        """One thing a program asks for."""
        match ask:
            case Ask.WAIT:
                event = self._slot if arg[0] is Signal.SLOTS else self._maint
                event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), arg[1])
            case Ask.EXCHANGE:
                calls = self._control.calls(*arg) if self._control is not None else []
                return await self._client.run_many(calls) if calls else []
            case Ask.CLIENT:
                return await getattr(self._client, arg[0])(arg[1])
            case Ask.LONG_POLL:
                return await self._long_poll(*arg)
            case Ask.PAUSE:
                until = self._halt_event if arg[0] is Until.HALT else self._exit_event
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(until.wait(), arg[1])
            case Ask.UNBLOCK:
                for qi, w in list(self._waiting.items()):
                    if arg is None or qi in arg:
                        w.cancel()
            case Ask.JOIN:
                await self._join(arg)

    async def _join(self, which: Join) -> None:
        if which is Join.RECEIVERS:
            tasks = list(self._receivers)
        elif which is Join.WORKERS:
            tasks = list(self._workers)
            for task in tasks:
                task.cancel()  # idle, or abort/deadline: their messages come back after the timeout
        else:
            tasks = [self._maintainer] if self._maintainer is not None else []
        if tasks:
            await asyncio.wait(tasks, timeout=JOIN_TIMEOUT)

    async def _long_poll(self, qi: int, timeout: float) -> bool:
        """Wait for a send's wake-up on queue ``qi``; True if one came (a token to use or hand on)."""
        key = self._setup.keys[qi].wake
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

    # ------------------------------------------------------------ handlers

    def _wake(self) -> None:
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
        elif len(self._workers) < self.settings.concurrency:
            self._waking = True
            task = self._task("rqueue-worker", self._worker())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _worker(self) -> None:
        _handling.set(self)  # this task's context (and its handlers' tasks): stop() must not wait for it
        ctl = self._control
        assert ctl is not None
        loop = asyncio.get_running_loop()
        job: Job | None = None
        try:
            while True:
                self._waking = False
                while (job := ctl.take()) is not None:
                    if ctl.work:
                        self._wake()  # a helper, in case this handler suspends
                    await self._process(ctl, job)
                idle = loop.create_future()
                self._idle.append(idle)
                await idle
        except Exception as e:  # the consumer's own bug, not a handler's: stop the consumer
            self._life.crash(e)
            self._halted()
            if job is not None:
                ctl.ledger.forget(job)  # held by a dead task: the shutdown must not wait for it
            raise

    async def _process(self, ctl: Control, job: Job) -> None:
        name = ""
        reply: Any = None
        error: BaseException | None = None
        t0 = time.perf_counter()
        try:
            handler = self._setup.resolve(job.message)
            name = handler.name
            reply = await handler.fn(handler.argument(job.message))
        except asyncio.CancelledError as e:
            me = asyncio.current_task()
            if me is None or me.cancelling():
                raise  # this worker is cancelled (stopping at once): the message comes back after its timeout
            error = e  # an inner task's cancellation escaped the handler: a failure like any other
        except Exception as e:  # noqa: BLE001 - every failure is the message's outcome
            error = e
        seconds = time.perf_counter() - t0
        outcome = ctl.finished(job, reply, error, time.monotonic())
        if error is not None or ctl.hooks:
            self._report(job, name, outcome, seconds, error)


#: The name it had before ``AsyncConsumer``.
Consumer = AsyncConsumer
