"""The consumer runner, written once for asyncio: ``rqueue.asyncio.AsyncConsumer`` (tasks) is
this source; ``rqueue.Consumer`` (threads) is generated from it by ``scripts/unasync``.

One receiver per queue (receive as many messages as there are free slots,
merged with pending acks in one round trip; long poll when idle), a maintainer
(flushes acks after a few ms, extends leases) and workers
(``rqueue._consumer.workers``). What receivers, maintainer and shutdown do is
written once, I/O-free, in ``rqueue._consumer.programs`` over ``Control``; the
runner runs each program's steps under its lock and does what they ask (round
trips, waits) outside it. Where threads and tasks differ is in
``rqueue._consumer.runtime`` (the lock does nothing on asyncio: one thread).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rqueue._async.client import AsyncClient, AsyncQueue
from rqueue._consumer.base import ConsumerBase
from rqueue._consumer.control import RECEIVE_BACKOFF, Wakes
from rqueue._consumer.core import setup
from rqueue._consumer.handlers import Router
from rqueue._consumer.jobs import Job
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
from rqueue._consumer.runtime import (
    AsyncCancelled,
    AsyncHandle,
    AsyncRLock,
    AsyncRuntime,
    AsyncStopper,
    AsyncWakeup,
)
from rqueue._consumer.workers import AsyncWorkers
from rqueue._transport.concurrency import AsyncFlag


class AsyncConsumer(ConsumerBase):
    """Run ``handler`` for every message of one or more queues: ``rqueue.Consumer`` runs a sync
    handler on threads, ``rqueue.asyncio.AsyncConsumer`` an async one on tasks.

    consumer = rqueue.Consumer(q, handler, concurrency=16, batch_size=10)
    consumer.run()   # blocks; SIGINT/SIGTERM stop it gracefully, a second one at once

    On asyncio, start(), run() and stop() are coroutines, concurrency is 100 unless
    given, and the consumer is an async context manager (to run it beside other work).
    Returning acknowledges (deletes) the message; raising retries it after an
    exponential backoff with full jitter (``retry_base`` doubling up to
    ``retry_cap`` seconds) until the queue's ``max_receive_count``, when it is
    dead-lettered with the error; raising ``rqueue.Reject`` dead-letters it
    at once. ``hooks`` receive a ``HandlerResult`` per message (metrics).
    """

    def __init__(
        self,
        queue_or_queues: AsyncQueue | Sequence[AsyncQueue],
        handler: Callable[..., Any] | Router,
        *,
        concurrency: int = 100,  # unasync: concurrency: int = 16,
        batch_size: int = 10,
        retry_base: float = 0.5,
        retry_cap: float = 60.0,
        flush_interval: float = 0.005,
        shutdown_timeout: float = 30.0,
        visibility_timeout: float | None = None,
        hooks: Sequence[Hook] = (),
    ) -> None:
        options = (concurrency, batch_size, retry_base, retry_cap, flush_interval, shutdown_timeout, visibility_timeout)
        parts = setup(queue_or_queues, handler, AsyncQueue, AsyncRuntime.COROUTINES, hooks, options)
        lock = self._lock = AsyncRLock()  # program steps, taking and finishing jobs (threads)
        self._slot = AsyncWakeup(lock)  # slots freed, a receiver's turn, stop requested
        self._maint = AsyncWakeup(lock)  # the maintainer must look
        workers = self._workers = AsyncWorkers(self, lock, parts.settings.concurrency)
        wakes = Wakes(self._slot.notify, self._maint.notify, workers.wake, self._halted, self._closing, workers.stalled)
        super().__init__(parts, wakes)
        self.queues: list[AsyncQueue] = parts.queues
        self._client: AsyncClient = parts.client
        self._halt_event = AsyncFlag()  # stop requested: run() returns, receivers' backoffs end
        self._exit_event = AsyncFlag()  # the maintainer exits: its backoff ends at once
        self._done = AsyncFlag()  # the shutdown is over
        self._stopper = AsyncStopper(self._shutdown, self._claim, self._request_stop, self._done)
        self._rt = AsyncRuntime()
        self._unblockers: dict[int, Callable[[], None]] = {}  # receivers' long polls under way
        self._receivers: list[AsyncHandle] = []
        self._maintainer: AsyncHandle | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the receivers and the maintainer; returns at once."""
        self._check_new()
        attrs = [await q.attributes() for q in self.queues]  # also: QueueDoesNotExist early
        backoffs = [Outage(*RECEIVE_BACKOFF) for _ in attrs]
        with self._lock:
            ctl = self._open(attrs, backoffs, AsyncRuntime.KIND + "s", AsyncWorkers.STALL)
        self._maintainer = self._spawn("rqueue-maintainer", self._drive, maintain(ctl))
        for qi, name in enumerate(self._setup.names):
            self._receivers.append(self._spawn(f"rqueue-receiver-{name}", self._drive, receive(ctl, qi)))

    def _spawn(self, name: str, fn: Callable[..., Awaitable[None]], *args: Any) -> AsyncHandle:
        return self._rt.spawn(name, self._guarded, name, fn, *args)

    async def run(self) -> None:
        """Consume until ``stop()`` or SIGINT/SIGTERM (or, on asyncio, cancellation), then stop gracefully.

        A second signal stops at once: unfinished messages come back after
        their visibility timeout. Cancelling the task that awaits ``run()``
        stops it as ``stop()`` does, then the CancelledError propagates; a
        second cancellation meanwhile stops at once. If one of the consumer's
        own threads or tasks dies of a bug, it stops gracefully too and
        ``run()`` raises RuntimeError, so a worker process exits non-zero.
        """
        self._life.in_run = True  # before anything starts: a crash leaves the shutdown to run()
        await self.start()
        restore = self._rt.install_signals(self._signalled)
        cancelled: AsyncCancelled | None = None
        try:
            try:
                await self._halt_event.wait()
            except AsyncCancelled as e:  # threads are not cancelled
                cancelled = e
                self._request_stop()
            cancelled = await self._stopper.wait() or cancelled
        finally:
            restore()
        self._raise(cancelled)

    def _raise(self, cancelled: AsyncCancelled | None) -> None:
        """Once stopped: a cancellation of the caller, else an internal crash (RuntimeError, once)."""
        if cancelled is not None:
            raise cancelled
        with self._lock:
            self._life.raise_crash(AsyncRuntime.KIND)

    async def _guarded(self, name: str, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a receiver, the maintainer or a worker; a crash stops the consumer instead of leaving it idle."""
        try:
            await fn(*args)
        except BaseException as e:  # noqa: BLE001 - logged by _crashed; the consumer stops
            AsyncRuntime.loop_exit(e)  # unasync: remove
            with self._lock:
                then = self._crashed(e, f"{AsyncRuntime.KIND} {name}")
            if then is Then.BACKGROUND:  # started with start(): nobody waits in run() to stop it
                self._stopper.start()

    def _request_stop(self) -> None:
        """A cancellation of run() or stop(): a stop request from outside."""
        self._life.request_stop(outside=True)
        self._halted()

    def _halted(self) -> None:
        """A stop was requested (lock held): whoever waits must look (run(), receivers, workers)."""
        self._halt_event.set()
        self._slot.notify()
        self._workers.halted()

    def _closing(self) -> None:
        """Workers and the maintainer exit (lock held)."""
        self._exit_event.set()
        self._maint.notify()
        self._workers.closing()

    def _claim(self) -> bool:
        with self._lock:
            return self._life.claim_shutdown()

    async def stop(self) -> None:
        """Stop gracefully: no more receiving; unstarted messages visible again at once
        (one call per queue); in-flight ones finish within ``shutdown_timeout`` and are
        acknowledged. Calling it again while stopping stops at once.

        From inside a handler (or a task it started) it returns at once: the
        consumer stops in the background, and that handler's message is
        acknowledged when it returns. If an internal thread or task crashed,
        raises RuntimeError (as ``run()`` does) once stopped.
        """
        with self._lock:
            then = self._stop_request(inside=self._workers.inside())
        if then is Then.BACKGROUND:
            self._stopper.start()
        elif then is Then.SHUTDOWN:
            self._raise(await self._stopper.wait())  # or waits for the one under way

    async def __aenter__(self) -> AsyncConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _signalled(self, signum: int, *frame: object) -> None:
        with self._lock:
            self._on_signal(signum)

    async def _shutdown(self) -> None:
        """Stop (``programs.shutdown``); runs once (``AsyncStopper``)."""
        ctl = self._control
        assert ctl is not None
        try:
            await self._drive(shutdown(ctl))
        finally:
            self._done.set()

    # ------------------------------------------------------------ programs

    async def _drive(self, program: Program) -> None:
        """Run ``program``: its steps under the lock, what it asks for outside it (a WAIT lets go
        of the lock while it waits); a result goes back in, an exception is thrown in."""
        lock = self._lock
        cursor = Cursor(program)
        with lock:
            while (step := cursor.next()) is not None:
                ask, arg = step
                if ask is Ask.WAIT:
                    await (self._slot if arg[0] is Signal.SLOTS else self._maint).wait(arg[1])
                    continue
                lock.release()
                try:
                    cursor.result = await self._do(ask, arg)
                except BaseException as e:  # noqa: BLE001 - the program decides (it re-raises what it cannot handle)
                    cursor.error = e
                finally:
                    lock.acquire()

    async def _do(self, ask: Ask, arg: Any) -> Any:
        """One thing a program asks for, done without the lock."""
        match ask:
            case Ask.EXCHANGE:
                calls = self._control.calls(*arg) if self._control is not None else []
                return await self._client.run_many(calls) if calls else []
            case Ask.CLIENT:
                return await getattr(self._client, arg[0])(arg[1])
            case Ask.LONG_POLL:
                return await self._long_poll(*arg)
            case Ask.PAUSE:
                await (self._halt_event if arg[0] is Until.HALT else self._exit_event).wait(arg[1])
            case Ask.UNBLOCK:
                with self._lock:
                    unblockers = [u for qi, u in self._unblockers.items() if arg is None or qi in arg]
                for unblock in unblockers:
                    unblock()
            case Ask.JOIN:
                handles: Sequence[AsyncHandle | None] = self._receivers
                if arg is not Join.RECEIVERS:
                    handles = [self._maintainer] if arg is Join.MAINTAINER else self._workers.cancel()
                await self._rt.join(handles, JOIN_TIMEOUT)

    async def _long_poll(self, qi: int, timeout: float) -> bool:
        """Wait for a send's wake-up on queue ``qi``; True if one came (a token to use or hand on)."""
        try:
            on_block = functools.partial(self._on_block, qi)
            return await self._client.wait(self._setup.keys[qi].wake, timeout, on_block=on_block)
        finally:
            with self._lock:
                self._unblockers.pop(qi, None)

    def _on_block(self, qi: int, unblock: Callable[[], None]) -> None:
        """The long poll of queue ``qi`` is registered: keep what ends it, or end it now (stopping, poked)."""
        with self._lock:
            if self._control is not None and self._control.may_wait(qi):
                self._unblockers[qi] = unblock
            else:
                unblock()

    # ------------------------------------------------------------ handlers

    async def _call(self, job: Job) -> tuple[str, Any, BaseException | None, float]:
        """Run the handler of ``job``: (handler name, reply, error, seconds)."""
        name = ""
        reply: Any = None
        error: BaseException | None = None
        t0 = time.perf_counter()
        try:
            handler = self._setup.resolve(job.message)
            name = handler.name
            reply = await handler.fn(handler.argument(job.message))
        except BaseException as e:  # noqa: BLE001 - every failure is the message's outcome
            AsyncRuntime.handler_escape(e)  # unasync: remove
            error = e
        return name, reply, error, time.perf_counter() - t0


#: The name it had before ``AsyncConsumer``.  # unasync: remove
Consumer = AsyncConsumer  # unasync: remove
