"""``rqueue.asyncio.Consumer``: async handlers as tasks on one event loop.

The same design as the thread consumer (``rqueue._consumer.threads``), on tasks: one
receiver per queue, a maintainer (ack flush after a few ms, lease
extension) and up to ``concurrency`` worker tasks pulling jobs from one
deque (no task per message: a handler that never suspends costs a
coroutine call, and a worker wakes one helper only when more work waits).
Slots are the Tracker's count. All state lives in the shared I/O-free
``Tracker``.
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
from rqueue._consumer.core import Flush, Job, Outage, Tracker, flush_problems, setup
from rqueue._consumer.handlers import Router
from rqueue._consumer.metrics import HandlerResult, Hook, Outcome, emit
from rqueue._protocol import operations as _core
from rqueue._protocol.errors import ConnectionError, InvalidParameter
from rqueue._protocol.operations import Call

log = logging.getLogger("rqueue.consumer")

JOIN_TIMEOUT = 10.0

#: The consumer whose handler runs in this task (and in tasks a handler starts): its stop()
#: must not wait for its own job.
_handling: contextvars.ContextVar[Consumer | None] = contextvars.ContextVar("rqueue_handling", default=None)


class Consumer:
    """Run an async ``handler`` for every message of one or more queues.

    consumer = rqueue.asyncio.Consumer(q, handler, concurrency=100, batch_size=10)
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
        parts = setup(
            queue_or_queues,
            handler,
            kind=AsyncQueue,
            async_handlers=True,
            wrong_handlers="rqueue.asyncio.Consumer runs async handlers; use rqueue.Consumer for sync ones",
            hooks=hooks,
            concurrency=concurrency,
            batch_size=batch_size,
            retry_base=retry_base,
            retry_cap=retry_cap,
            flush_interval=flush_interval,
            shutdown_timeout=shutdown_timeout,
            visibility_timeout=visibility_timeout,
        )
        self.queues: list[AsyncQueue] = parts.queues
        self._client: AsyncClient = parts.client
        self.settings = parts.settings
        self._resolve = parts.resolve
        self._hooks = parts.hooks
        self._keys = parts.keys
        self._names = parts.names
        self._tracker: Tracker | None = None
        self._work: collections.deque[Job] = collections.deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waking = False  # a worker was woken or started and has not run yet
        self._receivers: list[asyncio.Task[None]] = []
        self._waiting: dict[int, asyncio.Future[bool]] = {}
        self._maintainer: asyncio.Task[None] | None = None
        self._slot = asyncio.Event()
        self._maint = asyncio.Event()
        self._maint_wake_at = 0.0
        self._halting = False
        self._maint_exit = False
        self._abort = False
        self._stop_requested = asyncio.Event()  # by anyone: stop(), a signal, a handler, a crash
        self._stop_asked = False  # by stop() from outside a handler, a signal or a cancellation: next one aborts
        self._in_run = False  # run() is waiting and will shut down
        self._stopping: asyncio.Future[None] | None = None  # the shutdown, in a task of its own
        self._done = asyncio.Event()
        self._halt_event = asyncio.Event()  # set when stopping: receivers' backoffs end at once
        self._exit_event = asyncio.Event()  # set when the maintainer must exit: its backoff ends
        self._outage = Outage()
        self._poked: set[int] = set()
        self._crashed: BaseException | None = None
        self._crash_raised = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the receiver and maintainer tasks; returns at once."""
        if self._tracker is not None:
            raise InvalidParameter("this consumer was already started; make a new one")
        attrs = [await q.attributes() for q in self.queues]
        vt = self.settings.visibility_timeout
        vts = [vt if vt is not None else a.visibility_timeout for a in attrs]
        self._tracker = Tracker(
            self.settings, vts, [a.max_receive_count for a in attrs], [k.is_dlq for k in self._keys]
        )
        self._maintainer = asyncio.create_task(self._guarded(self._maintain()), name="rqueue-maintainer")
        for qi, name in enumerate(self._names):
            self._receivers.append(
                asyncio.create_task(self._guarded(self._receive_loop(qi)), name=f"rqueue-receiver-{name}")
            )
        log.info("consuming %s with up to %d tasks", ", ".join(self._names), self.settings.concurrency)

    async def run(self) -> None:
        """Consume until ``stop()``, SIGINT/SIGTERM or cancellation, then stop gracefully.

        Cancelling the task that awaits ``run()`` (``asyncio.timeout``, a
        TaskGroup, ``task.cancel()``) stops it as ``stop()`` does, then the
        CancelledError propagates; a second cancellation meanwhile stops at
        once (as a second signal). If one of the consumer's own tasks dies of
        a bug, it stops gracefully too and ``run()`` raises RuntimeError.
        """
        self._in_run = True  # before any task starts: a crash leaves the shutdown to run()
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
                await self._stop_requested.wait()
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
        if self._crashed is not None and not self._crash_raised:
            self._crash_raised = True
            raise RuntimeError(f"consumer stopped: an internal task crashed: {self._crashed!r}") from self._crashed

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a receiver, the maintainer or a worker; a crash stops the consumer instead of leaving it idle."""
        try:
            await work
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise  # asyncio lets these end the loop: not ours to turn into a stop
        except BaseException as e:
            log.critical("consumer task crashed; stopping", exc_info=e)
            self._crash(e)
            self._stop_in_background()

    def _crash(self, e: BaseException) -> None:
        """An internal task died of ``e``: stop at once receiving and starting jobs."""
        if self._crashed is None:
            self._crashed = e
        self._request_stop(outside=False)

    def _stop_in_background(self) -> None:
        """Shut down in a task of its own unless run() (or a shutdown already under way) will."""
        if not self._in_run:
            self._shutdown_task()

    def _request_stop(self, *, outside: bool) -> None:
        """Record a stop request: no more receiving or starting jobs from now on; the shutdown
        does the rest. A second one from outside a handler stops at once."""
        if self._stop_asked and outside:
            self._abort = True
        self._stop_asked = self._stop_asked or outside
        self._stop_requested.set()
        self._halting = True
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
        if self._tracker is None:
            return
        if inside:
            self._stop_in_background()
            return
        cancelled = await self._stopped()
        if cancelled is not None:
            raise cancelled
        self._raise_if_crashed()

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _on_signal(self, signum: int) -> None:
        if self._stop_asked:
            log.warning("signal %d again: stopping now; unfinished messages return after their timeout", signum)
        else:
            log.info("signal %d: stopping gracefully (send it again to stop now)", signum)
        self._request_stop(outside=True)

    async def _shutdown(self) -> None:
        """Stop: halt receivers, release unstarted jobs, let running ones finish, send the rest.
        Runs once, in its own task (``_shutdown_task``)."""
        tracker = self._tracker
        assert tracker is not None
        try:
            self._halting = True
            self._halt_event.set()
            self._slot.set()
            for qi in list(self._waiting):
                self._poke(qi)
            await asyncio.wait(self._receivers, timeout=JOIN_TIMEOUT)
            release = tracker.take_unstarted()
            self._work.clear()
            if release:
                await self._send_once(release)
            deadline = time.monotonic() + self.settings.shutdown_timeout
            while not self._abort and tracker.jobs:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("%d message(s) still running at the shutdown deadline", len(tracker.jobs))
                    break
                self._slot.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), left)
            for task in self._workers:
                task.cancel()  # idle, or abort/deadline: their messages come back after the timeout
            if self._workers:
                await asyncio.wait(self._workers, timeout=JOIN_TIMEOUT)
            self._maint_exit = True
            self._exit_event.set()
            self._maint.set()
            if self._maintainer is not None:
                await asyncio.wait([self._maintainer], timeout=JOIN_TIMEOUT)
            final = tracker.take()
            if final:
                await self._send_once(final)
            log.info("stopped")
        finally:
            self._done.set()

    # ------------------------------------------------------------ round trips

    @staticmethod
    async def _pause(seconds: float, until: asyncio.Event) -> None:
        """Back off ``seconds``, or less if ``until`` is set (stopping must not wait out a backoff)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), seconds)

    async def _exchange(self, flush: Flush, tail: list[Call[Any]], pause: asyncio.Event) -> list[Any] | None:
        """Send ``flush`` and run ``tail`` in one round trip; None if the server is unreachable.

        The one place acks (with their replies) leave the consumer.
        """
        calls = flush.calls(self._keys) + tail
        if not calls:
            return []
        try:
            results = await self._client.run_many(calls)
        except BaseException as e:
            assert self._tracker is not None
            self._tracker.give_back(flush, time.monotonic())  # a crash stops us: the shutdown sends it
            if not isinstance(e, ConnectionError):
                raise
            delay, starts = self._outage.failed()
            if starts:
                log.warning("lost the server (%s); retrying with backoff until it is back", e)
            await self._pause(delay, pause)
            return None
        lasted = self._outage.ok()
        if lasted is not None:
            log.warning("server reachable again after %.1f s", lasted)
        n = len(results) - len(tail)
        if flush:
            for line in flush_problems(flush, results[:n], self._names):
                log.warning("%s", line)
            for qi in {qi for qi, _r, _s in flush.retries}:
                self._poke(qi)
        return results[n:]

    def _poke(self, qi: int) -> None:
        """End queue ``qi``'s long poll (a retry may be visible sooner, or we are stopping)."""
        self._poked.add(qi)
        w = self._waiting.get(qi)
        if w is not None:
            w.cancel()

    async def _send_once(self, flush: Flush) -> None:
        try:
            results = await self._client.run_many(flush.calls(self._keys))
        except Exception as e:  # noqa: BLE001 - stopping goes on
            log.warning("could not reach the server while stopping (%s); those messages return after their timeout", e)
            return
        for line in flush_problems(flush, results, self._names):
            log.warning("%s", line)

    # ------------------------------------------------------------ receivers

    async def _receive_loop(self, qi: int) -> None:
        tracker = self._tracker
        assert tracker is not None
        keys = self._keys[qi]
        lease = tracker.leases[qi]
        errors = Outage(first=0.5, cap=30.0)
        me = asyncio.current_task()
        assert me is not None
        wait: asyncio.Future[bool] | None = None
        token = False  # woke on a wake-up token (a send's) that no receive has used yet
        while True:
            gather_until = None
            while not self._halting and tracker.free < tracker.want:
                self._slot.clear()
                if tracker.free == 0:
                    if token:
                        break  # no slot for it: hand the wake-up on first (below)
                    await self._slot.wait()
                    continue
                if tracker.pending_count >= self.settings.batch_size:
                    break  # a batch of acks waits: carry it now
                # Some slots are free: wait a moment for more, so one round trip carries a batch.
                now = time.monotonic()
                gather_until = gather_until or now + self.settings.flush_interval
                if now >= gather_until:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot.wait(), gather_until - now)
            if token and (self._halting or tracker.free == 0):
                # Another consumer's receiver long-polling this queue gets it now (one spurious
                # wake-up at worst).
                token = False
                await self._client.hand_on(keys.wake)
                continue
            if self._halting:
                return
            token = False
            n = tracker.reserve()
            self._poked.discard(qi)
            tracker.receiving += 1
            try:
                got = await self._exchange(tracker.take(), [_core.receive(keys, n, lease)], self._halt_event)
            finally:
                tracker.receiving -= 1
            result = got[0] if got else None
            if not isinstance(result, tuple):
                tracker.unreserve(n)
                self._slot.set()
                if isinstance(result, Exception):
                    delay, starts = errors.failed()
                    if starts:
                        log.error("queue %r: receive failed: %s; retrying with backoff", keys.name, result)
                    await self._pause(delay, self._halt_event)
                continue
            if errors.ok() is not None:
                log.warning("queue %r: receiving again", keys.name)
            messages, next_ms, notify = result
            if notify is not None:  # requests this receive dead-lettered: tell their senders
                try:
                    await self._client.run(notify)
                except Exception as e:  # noqa: BLE001 - best effort: must not cost the messages just received
                    log.warning("could not tell senders about dead-lettered requests (%s); they time out instead", e)
            tracker.unreserve(n - len(messages))
            if len(messages) < n:
                self._slot.set()  # slots this receiver did not fill
            if messages:
                now = time.monotonic()
                self._work.extend(tracker.received(qi, messages, now))
                self._wake()
                due = tracker.heartbeat_in(now)
                if due is not None and now + due < self._maint_wake_at:
                    self._maint.set()
                continue
            if next_ms == 0:
                continue
            if self._halting:
                return
            if qi in self._poked:
                continue
            timeout = _core.WAIT_CHUNK if next_ms < 0 else min(next_ms / 1000, _core.WAIT_CHUNK)
            wait = self._waiting[qi] = asyncio.ensure_future(self._client.wait(keys.wake, timeout))
            try:
                token = await wait
            except asyncio.CancelledError:
                if not wait.cancelled() or me.cancelling():
                    raise  # the receiver itself is cancelled, not just its wait
            except ConnectionError as e:
                delay, starts = self._outage.failed()
                if starts:
                    log.warning("lost the server (%s); retrying with backoff until it is back", e)
                await self._pause(delay, self._halt_event)
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
        loop = asyncio.get_running_loop()
        work = self._work
        job: Job | None = None
        try:
            while True:
                self._waking = False
                while work and not self._halting:
                    job = work.popleft()
                    job.started = True
                    if work:
                        self._wake()  # a helper, in case this handler suspends
                    await self._process(job)
                job = None
                idle = loop.create_future()
                self._idle.append(idle)
                await idle
        except Exception as e:  # the consumer's own bug, not a handler's: stop the consumer
            self._crash(e)
            if job is not None and self._tracker is not None:
                self._tracker.forget(job)  # held by a dead task: the shutdown must not wait for it
                self._slot.set()
            raise

    async def _process(self, job: Job) -> None:
        tracker = self._tracker
        assert tracker is not None
        name = ""
        reply: Any = None
        error: BaseException | None = None
        t0 = time.perf_counter()
        try:
            handler = self._resolve(job.message)
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
        now = time.monotonic()
        decision = tracker.finish(job, reply, error, now)
        self._slot.set()
        if decision.flush_now:
            due = tracker.flush_in(now)
            if due is not None and now + due < self._maint_wake_at:
                self._maint.set()
        if error is not None or self._hooks:
            self._report(job, name, decision.outcome, seconds, error)

    def _report(self, job: Job, handler: str, outcome: Outcome, seconds: float, error: BaseException | None) -> None:
        if error is not None:
            m = job.message
            log.warning(
                "handler %s failed on message %s of %r (receive %d): %s",
                handler or "?",
                m.id,
                m.queue,
                m.receive_count,
                outcome.replace("_", "-"),
                exc_info=error if outcome != "rejected" else None,
            )
        if self._hooks:
            emit(self._hooks, HandlerResult(job.message.queue, handler, outcome, seconds, job.message.id, error))

    # ------------------------------------------------------------ maintainer

    async def _maintain(self) -> None:
        tracker = self._tracker
        assert tracker is not None
        while True:
            while True:
                if self._maint_exit:
                    return
                now = time.monotonic()
                f = tracker.flush_in(now)
                h = tracker.heartbeat_in(now)
                if f == 0 or h == 0:
                    break
                waits = [x for x in (f, h) if x is not None]
                timeout = min(waits) if waits else None
                self._maint_wake_at = now + timeout if timeout is not None else float("inf")
                self._maint.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._maint.wait(), timeout)
            self._maint_wake_at = 0.0
            flush = tracker.take() if f == 0 else Flush()
            due = tracker.heartbeat(now) if h == 0 else []
            got = await self._exchange(flush, tracker.heartbeat_calls(self._keys, due), self._exit_event)
            if got is None:
                tracker.heartbeat_failed(due, time.monotonic())
                continue
            lost = sum(r.count(False) for r in got if isinstance(r, list))
            if lost:
                log.warning("%d message(s) lost their lease before the heartbeat (visibility timeout too short?)", lost)
