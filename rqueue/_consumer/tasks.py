"""``rqueue.asyncio.AsyncConsumer`` (also ``rqueue.asyncio.Consumer``): async handlers as tasks on one loop.

The design of the thread consumer (``rqueue._consumer.threads``), on tasks: one
receiver per queue, a maintainer (ack flush after a few ms, lease extension)
and up to ``concurrency`` worker tasks pulling jobs from one deque (no task
per message: a handler that never suspends costs a coroutine call, and a
worker wakes one helper only when more work waits). Every decision is the
I/O-free ``Control``'s (``rqueue._consumer.control``); this module only
does the round trips, the tasks and the waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from rqueue._async.client import AsyncClient, AsyncQueue
from rqueue._consumer.control import RECEIVE_BACKOFF, Control, Gate, open_control
from rqueue._consumer.core import setup
from rqueue._consumer.flush import Flush
from rqueue._consumer.handlers import Router
from rqueue._consumer.ledger import Job
from rqueue._consumer.lifecycle import Cause, Lifecycle, Outage
from rqueue._consumer.metrics import Hook, Outcome
from rqueue._protocol.errors import ConnectionError, InvalidParameter
from rqueue._protocol.operations import Call

log = logging.getLogger("rqueue.consumer")

JOIN_TIMEOUT = 10.0

#: The consumer whose handler runs in this task (and in tasks a handler starts): its stop()
#: must not wait for its own job.
_handling: contextvars.ContextVar[AsyncConsumer | None] = contextvars.ContextVar("rqueue_handling", default=None)


class AsyncConsumer:
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
        parts = setup(queue_or_queues, handler, AsyncQueue, True, hooks, options)
        self.queues: list[AsyncQueue] = parts.queues
        self.settings = parts.settings
        self._client: AsyncClient = parts.client
        self._parts = parts
        self._life = Lifecycle()
        self._control: Control | None = None
        self._work: collections.deque[Job] = collections.deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waking = False  # a worker was woken or started and has not run yet
        self._receivers: list[asyncio.Task[None]] = []
        self._waiting: dict[int, asyncio.Future[bool]] = {}  # receivers' long polls under way
        self._maintainer: asyncio.Task[None] | None = None
        self._slot = asyncio.Event()  # slots freed, a receiver's turn, stop requested
        self._maint = asyncio.Event()  # the maintainer must look
        self._halt_event = asyncio.Event()  # stop requested: run() returns, receivers' backoffs end
        self._exit_event = asyncio.Event()  # the maintainer exits: its backoff ends at once
        self._stopping: asyncio.Future[None] | None = None  # the shutdown, in a task of its own
        self._done = asyncio.Event()  # the shutdown is over

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the receiver and maintainer tasks; returns at once."""
        if self._control is not None:
            raise InvalidParameter("this consumer was already started; make a new one")
        attrs = [await q.attributes() for q in self.queues]
        errors = [Outage(*RECEIVE_BACKOFF) for _ in self.queues]
        self._control = open_control(self._parts, attrs, self._life, errors, what="tasks")
        self._maintainer = asyncio.create_task(self._guarded(self._maintain()), name="rqueue-maintainer")
        for qi, name in enumerate(self._parts.names):
            task = asyncio.create_task(self._guarded(self._receive_loop(qi)), name=f"rqueue-receiver-{name}")
            self._receivers.append(task)

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
        self._raise_if_crashed()

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

    def _raise_if_crashed(self) -> None:
        """The crash of an internal task as RuntimeError, raised once (by run() or stop())."""
        error = self._life.crash_error("task")
        if error is not None:
            raise error

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a receiver, the maintainer or a worker; a crash stops the consumer instead of leaving it idle."""
        try:
            await work
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise  # asyncio lets these end the loop: not ours to turn into a stop
        except BaseException as e:
            log.critical("consumer task crashed; stopping", exc_info=e)
            self._life.crash(e)
            self._halted()
            self._stop_in_background()

    def _stop_in_background(self) -> None:
        """Shut down in a task of its own unless run() (or a shutdown already under way) will."""
        if not self._life.in_run:
            self._shutdown_task()

    def _request_stop(self, *, outside: bool) -> None:
        self._life.request_stop(outside=outside)
        self._halted()

    def _halted(self) -> None:
        """A stop was requested: whoever waits must look (run(), receivers' backoffs and slot waits)."""
        self._halt_event.set()
        self._slot.set()

    async def stop(self) -> None:
        """Stop gracefully (see ``rqueue.Consumer.stop``); again while stopping: at once.

        From inside a handler (or a task it started) it returns at once: the
        consumer stops in the background and that handler's message is
        acknowledged when it returns. If an internal task crashed, raises
        RuntimeError (as ``run()`` does) once stopped.
        """
        inside = _handling.get() is self
        self._request_stop(outside=not inside)
        if self._control is None:
            return
        if inside:
            self._stop_in_background()
            return
        cancelled = await self._stopped()
        if cancelled is not None:
            raise cancelled
        self._raise_if_crashed()

    async def __aenter__(self) -> AsyncConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _on_signal(self, signum: int) -> None:
        self._life.signal(signum)
        self._halted()

    async def _shutdown(self) -> None:
        """Halt receivers, release unstarted jobs, let running ones finish, send the rest.
        Runs once, in its own task (``_shutdown_task``)."""
        ctl = self._control
        assert ctl is not None
        try:
            self._halted()
            for qi in list(self._waiting):
                self._unblock(qi)
            await asyncio.wait(self._receivers, timeout=JOIN_TIMEOUT)
            release = ctl.ledger.take_unstarted()
            self._work.clear()
            await self._send_once(ctl, release)
            deadline = time.monotonic() + self.settings.shutdown_timeout
            while (left := ctl.drain_wait(deadline, time.monotonic())) is not None:
                self._slot.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), left)
            for task in self._workers:
                task.cancel()  # idle, or abort/deadline: their messages come back after the timeout
            if self._workers:
                await asyncio.wait(self._workers, timeout=JOIN_TIMEOUT)
            self._life.to(Cause.DRAINED)
            self._exit_event.set()
            self._maint.set()
            if self._maintainer is not None:
                await asyncio.wait([self._maintainer], timeout=JOIN_TIMEOUT)
            await self._send_once(ctl, ctl.ledger.take())
            self._life.to(Cause.CLOSED)
            log.info("stopped")
        finally:
            self._done.set()

    # ------------------------------------------------------------ round trips

    @staticmethod
    async def _pause(seconds: float, until: asyncio.Event) -> None:
        """Back off ``seconds``, or less if ``until`` is set (stopping must not wait out a backoff)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), seconds)

    async def _exchange(self, ctl: Control, flush: Flush, tail: list[Call[Any]], pause: asyncio.Event) -> Any:
        """Send ``flush`` and run ``tail`` in one round trip: the tail's results, None if the server is
        unreachable. The one place acks (with their replies) leave the consumer."""
        calls = ctl.calls(flush, tail)
        if not calls:
            return []
        try:
            results = await self._client.run_many(calls)
        except BaseException as e:
            delay = ctl.failed(flush, e, time.monotonic())
            if delay is None:
                raise
            await self._pause(delay, pause)
            return None
        got, poke = ctl.done(flush, results, len(tail))
        for qi in poke:
            self._unblock(qi)  # a retry may be visible sooner than that long poll ends
        return got

    def _unblock(self, qi: int) -> None:
        """End queue ``qi``'s long poll."""
        w = self._waiting.get(qi)
        if w is not None:
            w.cancel()

    async def _send_once(self, ctl: Control, flush: Flush) -> None:
        if not flush:
            return
        try:
            results = await self._client.run_many(flush.calls(ctl.keys))
        except Exception as e:  # noqa: BLE001 - stopping goes on
            ctl.unsent(e)
            return
        ctl.problems(flush, results)

    # ------------------------------------------------------------ receivers

    async def _gate(self, ctl: Control, qi: int, token: bool) -> Gate:
        """Wait until receiver ``qi`` may go, must hand its wake-up on, or must halt."""
        until: float | None = None
        while True:
            now = time.monotonic()
            gate, gather_until = ctl.admit(qi, token, now, until)
            if gate is not Gate.WAIT and gate is not Gate.GATHER:
                return gate
            self._slot.clear()
            if gate is Gate.WAIT:
                await self._slot.wait()
                continue
            until = gather_until
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot.wait(), (until or now) - now)

    async def _receive_loop(self, qi: int) -> None:
        ctl = self._control
        assert ctl is not None
        token = False  # woke on a wake-up token (a send's) that no receive has used yet
        while True:
            gate = await self._gate(ctl, qi, token)
            if gate is Gate.HALT:
                return
            if gate is Gate.HAND_ON:  # no slot for it: another consumer's receiver gets it now
                token = False
                await self._client.hand_on(ctl.keys[qi].wake)
                continue
            token = False
            n, flush, others = ctl.go(qi)
            if others:
                self._slot.set()  # the next queue in turn may go
            try:
                got = await self._exchange(ctl, flush, [ctl.receive_call(qi, n)], self._halt_event)
            finally:
                if ctl.receive_ended():
                    self._maint.set()
            arrival = ctl.arrived(qi, n, got[0] if got else None, time.monotonic())
            if arrival.wake_slots:
                self._slot.set()
            if arrival.jobs:
                self._work.extend(arrival.jobs)
                self._wake()
            if arrival.wake_maint:
                self._maint.set()
            if arrival.notify is not None:  # requests this receive dead-lettered: tell their senders
                try:
                    await self._client.run(arrival.notify)
                except Exception as e:  # noqa: BLE001 - best effort: must not cost the messages just received
                    ctl.notify_failed(e)
            if arrival.pause:
                await self._pause(arrival.pause, self._halt_event)
            elif arrival.wait is not None and ctl.may_wait(qi):
                token = await self._long_poll(ctl, qi, arrival.wait)

    async def _long_poll(self, ctl: Control, qi: int, timeout: float) -> bool:
        """Wait for a send's wake-up on queue ``qi``; True if one came (a token to use or hand on)."""
        wait = self._waiting[qi] = asyncio.ensure_future(self._client.wait(ctl.keys[qi].wake, timeout))
        try:
            return await wait
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if not wait.cancelled() or (me is not None and me.cancelling()):
                raise  # the receiver itself is cancelled, not just its wait
            return False
        except ConnectionError as e:
            await self._pause(ctl.lost(e), self._halt_event)
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
            task = asyncio.create_task(self._guarded(self._worker()), name="rqueue-worker")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _worker(self) -> None:
        _handling.set(self)  # this task's context (and its handlers' tasks): stop() must not wait for it
        ctl = self._control
        assert ctl is not None
        loop = asyncio.get_running_loop()
        work = self._work
        job: Job | None = None
        try:
            while True:
                self._waking = False
                while work and not self._life.halted:
                    job = work.popleft()
                    job.started = True
                    if work:
                        self._wake()  # a helper, in case this handler suspends
                    await self._process(ctl, job)
                job = None
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
            handler = self._parts.resolve(job.message)
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
        outcome, wake_slots, wake_maint = ctl.finished(job, reply, error, time.monotonic())
        if wake_slots:
            self._slot.set()
        if wake_maint:
            self._maint.set()
        if error is not None or ctl.hooks:
            self._report(job, name, outcome, seconds, error)

    def _report(self, job: Job, handler: str, outcome: Outcome, seconds: float, error: BaseException | None) -> None:
        assert self._control is not None
        self._control.report(job, handler, outcome, seconds, error)

    # ------------------------------------------------------------ maintainer

    async def _maintain(self) -> None:
        ctl = self._control
        assert ctl is not None
        while not self._life.closing:
            chores = ctl.chores(time.monotonic())
            if not isinstance(chores, tuple):
                self._maint.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._maint.wait(), chores)
                continue
            flush, due = chores
            got = await self._exchange(ctl, flush, ctl.heartbeat_calls(due), self._exit_event)
            ctl.chores_done(due, got, time.monotonic())


#: The name it had before ``AsyncConsumer``.
Consumer = AsyncConsumer
