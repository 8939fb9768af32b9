"""``rqueue.Consumer``: sync handlers on a pool of threads.

Threads: one receiver per queue (receive as many messages as there are free
slots, merged with pending acks in one round trip; long poll when idle), a
maintainer (flushes acks after a few ms, extends leases) and workers that grow
on demand up to ``concurrency`` and exit when idle. All state lives in the
I/O-free ``Tracker`` (``_consumer_core``), guarded by one lock.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from rqueue._consumer.core import Flush, Job, Outage, Tracker, flush_problems, setup
from rqueue._consumer.handlers import Router
from rqueue._consumer.metrics import HandlerResult, Hook, Outcome, emit
from rqueue._protocol import operations as _core
from rqueue._protocol.errors import ConnectionError, InvalidParameter
from rqueue._protocol.operations import Call
from rqueue._sync.client import Client, Queue

log = logging.getLogger("rqueue.consumer")

#: A worker thread with nothing to do for this long exits (the pool shrinks).
IDLE_TIMEOUT = 10.0
#: How long stop() waits for a receiver caught in a round trip.
JOIN_TIMEOUT = 10.0
#: A worker wakes a helper for the jobs left behind it only when they would wait longer than
#: this at the measured handler speed: fast handlers run back to back on one thread.
HANDOFF = 0.0005
#: Jobs waiting this long with no worker taking one get a helper anyway (a handler that was
#: fast turned slow); the maintainer checks.
STALL = 0.005


class Consumer:
    """Run ``handler`` for every message of one or more queues, on threads.

    consumer = rqueue.Consumer(q, handler, concurrency=16, batch_size=10)
    consumer.run()   # blocks; SIGINT/SIGTERM stop it gracefully, a second one at once

    Returning acknowledges (deletes) the message; raising retries it after
    an exponential backoff with full jitter (``retry_base`` doubling up to
    ``retry_cap`` seconds) until the queue's ``max_receive_count``, when it is
    dead-lettered with the error; raising ``rqueue.Reject`` dead-letters it
    at once. ``hooks`` receive a ``HandlerResult`` per message (metrics).
    """

    def __init__(
        self,
        queue_or_queues: Queue | Sequence[Queue],
        handler: Callable[..., Any] | Router,
        *,
        concurrency: int = 16,
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
            kind=Queue,
            async_handlers=False,
            wrong_handlers="async handlers need rqueue.asyncio.Consumer; this one runs sync handlers",
            hooks=hooks,
            concurrency=concurrency,
            batch_size=batch_size,
            retry_base=retry_base,
            retry_cap=retry_cap,
            flush_interval=flush_interval,
            shutdown_timeout=shutdown_timeout,
            visibility_timeout=visibility_timeout,
        )
        self.queues: list[Queue] = parts.queues
        self._client: Client = parts.client
        self.settings = parts.settings
        self._resolve = parts.resolve
        self._hooks = parts.hooks
        self._keys = parts.keys
        self._names = parts.names
        self._lock = threading.RLock()  # re-entrant: a signal handler may take it on the main thread
        self._slot_cv = threading.Condition(self._lock)
        self._work_cv = threading.Condition(self._lock)
        self._maint_cv = threading.Condition(self._lock)
        self._run_cv = threading.Condition(self._lock)
        self._tracker: Tracker | None = None
        self._work: collections.deque[Job] = collections.deque()
        self._threads = 0
        self._idle = 0
        self._avg = HANDOFF  # moving average of handler seconds (starts pessimistic: hand off)
        self._takes = 0  # jobs taken so far; the maintainer's stall check compares it
        self._takes_seen = -1
        self._maint_wake_at = 0.0
        self._halting = False  # no more receiving, no more starting
        self._closing = False  # workers exit
        self._maint_exit = False
        self._abort = False  # second signal: stop at once
        self._stop_requested = False  # by anyone: stop(), a signal, a handler, a crash
        self._stop_asked = False  # by stop() from outside a handler or a signal: the next one aborts
        self._in_run = False  # run() is waiting and will shut down
        self._local = threading.local()  # .worker is True on this consumer's worker threads
        self._shutdown_started = False
        self._done = threading.Event()
        self._halt_event = threading.Event()
        self._exit_event = threading.Event()
        self._unblockers: dict[int, Callable[[], None]] = {}
        self._poked: set[int] = set()
        self._outage = Outage()
        self._receivers: list[threading.Thread] = []
        self._crashed: BaseException | None = None
        self._crash_raised = False
        self._wanting: set[int] = set()  # receivers waiting for free slots
        self._last_turn = [0] * len(self.queues)
        self._turns = itertools.count(1)
        self._maintainer: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start receiving in background threads; returns at once."""
        if self._tracker is not None:
            raise InvalidParameter("this consumer was already started; make a new one")
        attrs = [q.attributes() for q in self.queues]  # also: QueueDoesNotExist early
        vt = self.settings.visibility_timeout
        self._tracker = Tracker(
            self.settings,
            [vt if vt is not None else a.visibility_timeout for a in attrs],
            [a.max_receive_count for a in attrs],
            [k.is_dlq for k in self._keys],
        )
        self._maintainer = threading.Thread(
            target=self._guarded, args=(self._maintain,), name="rqueue-maintainer", daemon=True
        )
        self._maintainer.start()
        for qi, name in enumerate(self._names):
            t = threading.Thread(
                target=self._guarded, args=(self._receive_loop, qi), name=f"rqueue-receiver-{name}", daemon=True
            )
            self._receivers.append(t)
            t.start()
        log.info("consuming %s with up to %d threads", ", ".join(self._names), self.settings.concurrency)

    def run(self) -> None:
        """Consume until ``stop()`` or SIGINT/SIGTERM, then stop gracefully.

        A second signal stops at once: unfinished messages come back after
        their visibility timeout. If one of the consumer's own threads dies
        of a bug, it stops gracefully too and ``run()`` raises RuntimeError,
        so a worker process exits non-zero instead of idling forever.
        """
        self._in_run = True  # before any thread starts: a crash leaves the shutdown to run()
        self.start()
        restore = self._install_signals()
        try:
            with self._lock:
                while not self._stop_requested:
                    self._run_cv.wait()
            self._shutdown()
        finally:
            for sig, previous in restore:
                signal.signal(sig, previous)
        self._raise_if_crashed()

    def _raise_if_crashed(self) -> None:
        """The crash of an internal thread as RuntimeError, raised once (by run() or stop())."""
        if self._crashed is not None and not self._crash_raised:
            self._crash_raised = True
            raise RuntimeError(f"consumer stopped: an internal thread crashed: {self._crashed!r}") from self._crashed

    def _guarded(self, target: Callable[..., None], *args: Any) -> None:
        """Run a receiver, the maintainer or a worker; a crash stops the consumer instead of leaving it idle."""
        try:
            target(*args)
        except BaseException as e:
            log.critical("consumer thread %s crashed; stopping", threading.current_thread().name, exc_info=e)
            with self._lock:
                self._crash(e)
                background = not self._in_run and not self._shutdown_started
            if background:  # started with start(): nobody waits in run() to stop it
                self._stop_in_background()

    def _crash(self, e: BaseException) -> None:
        """An internal thread died of ``e`` (lock held): stop at once receiving and starting jobs."""
        if self._crashed is None:
            self._crashed = e
        self._request_stop(outside=False)

    def _request_stop(self, *, outside: bool) -> None:
        """Record a stop request (lock held): no more receiving or starting jobs from now on;
        the shutdown does the rest. A second one from outside a handler stops at once."""
        if self._stop_asked and outside:
            self._abort = True
        self._stop_asked = self._stop_asked or outside
        self._stop_requested = True
        self._halting = True
        self._run_cv.notify_all()
        self._slot_cv.notify_all()
        self._work_cv.notify_all()

    def _stop_in_background(self) -> None:
        threading.Thread(target=self._shutdown, name="rqueue-stopper", daemon=True).start()

    def stop(self) -> None:
        """Stop gracefully: no more receiving; unstarted messages visible again at once
        (one call per queue); in-flight ones finish within ``shutdown_timeout`` and are
        acknowledged. Calling it again while stopping stops at once.

        From inside a handler it returns at once (it cannot wait for its own
        message): the consumer stops in the background, and that handler's
        message is acknowledged when it returns. If an internal thread crashed,
        raises RuntimeError (as ``run()`` does) once stopped.
        """
        inside = getattr(self._local, "worker", False)
        with self._lock:
            self._request_stop(outside=not inside)
            background = inside and not self._in_run and not self._shutdown_started
        if self._tracker is None:
            return
        if inside:
            if background:
                self._stop_in_background()
            return
        self._shutdown()  # or waits for the one under way
        self._raise_if_crashed()

    def __enter__(self) -> Consumer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _install_signals(self) -> list[tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []
        restore: list[tuple[int, Any]] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            restore.append((sig, signal.getsignal(sig)))
            signal.signal(sig, self._on_signal)
        return restore

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            if self._stop_asked:
                log.warning("signal %d again: stopping now; unfinished messages return after their timeout", signum)
            else:
                log.info("signal %d: stopping gracefully (send it again to stop now)", signum)
            self._request_stop(outside=True)

    def _shutdown(self) -> None:
        tracker = self._tracker
        assert tracker is not None
        with self._lock:
            if self._shutdown_started:
                wait = True
            else:
                wait = False
                self._shutdown_started = True
                self._halting = True
                self._slot_cv.notify_all()
                self._work_cv.notify_all()
                unblockers = list(self._unblockers.values())
        if wait:
            self._done.wait()
            return
        try:
            self._halt_event.set()
            for unblock in unblockers:
                unblock()
            for t in self._receivers:
                t.join(JOIN_TIMEOUT)
            with self._lock:
                release = tracker.take_unstarted()
                self._work.clear()
            if release:
                self._send_once(release)
            deadline = time.monotonic() + self.settings.shutdown_timeout
            with self._lock:
                while not self._abort and tracker.jobs:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        log.warning("%d message(s) still running at the shutdown deadline", len(tracker.jobs))
                        break
                    self._slot_cv.wait(left)
                self._maint_exit = True
                self._closing = True
                self._maint_cv.notify_all()
                self._work_cv.notify_all()
            self._exit_event.set()
            if self._maintainer is not None:
                self._maintainer.join(JOIN_TIMEOUT)
            with self._lock:
                final = tracker.take()
            if final:
                self._send_once(final)
            log.info("stopped")
        finally:
            self._done.set()

    # ------------------------------------------------------------ round trips

    def _exchange(self, flush: Flush, tail: list[Call[Any]], pause: threading.Event) -> list[Any] | None:
        """Send ``flush`` and run ``tail`` in one round trip; None if the server is unreachable.

        The one place acks (with their replies) leave the consumer.
        """
        calls = flush.calls(self._keys) + tail
        if not calls:
            return []
        try:
            results = self._client.run_many(calls)
        except BaseException as e:
            with self._lock:
                assert self._tracker is not None
                self._tracker.give_back(flush, time.monotonic())  # a crash stops us: the shutdown sends it
                if not isinstance(e, ConnectionError):
                    raise
                delay, starts = self._outage.failed()
            if starts:
                log.warning("lost the server (%s); retrying with backoff until it is back", e)
            pause.wait(delay)
            return None
        with self._lock:
            lasted = self._outage.ok()
        if lasted is not None:
            log.warning("server reachable again after %.1f s", lasted)
        n = len(results) - len(tail)
        if flush:
            for line in flush_problems(flush, results[:n], self._names):
                log.warning("%s", line)
            self._poke({qi for qi, _r, _s in flush.retries})
        return results[n:]

    def _poke(self, queues: set[int]) -> None:
        """A retry may be visible sooner than a receiver's long poll ends: make it look again."""
        if queues:
            with self._lock:
                self._poked |= queues
                unblockers = [self._unblockers[qi] for qi in queues if qi in self._unblockers]
            for unblock in unblockers:
                unblock()

    def _notify(self, call: Call[Any]) -> None:
        try:
            self._client.run(call)
        except Exception as e:  # noqa: BLE001 - best effort: must not cost the messages just received
            log.warning("could not tell senders about dead-lettered requests (%s); they time out instead", e)

    def _send_once(self, flush: Flush) -> None:
        try:
            results = self._client.run_many(flush.calls(self._keys))
        except Exception as e:  # noqa: BLE001 - stopping goes on
            log.warning("could not reach the server while stopping (%s); those messages return after their timeout", e)
            return
        for line in flush_problems(flush, results, self._names):
            log.warning("%s", line)

    # ------------------------------------------------------------ receivers

    def _on_block(self, qi: int, unblock: Callable[[], None]) -> None:
        with self._lock:
            if self._halting or qi in self._poked:
                unblock()
            else:
                self._unblockers[qi] = unblock

    def _my_turn(self, qi: int) -> bool:
        """Fairness across queues: of the receivers waiting for slots, the one served longest ago goes."""
        return min(self._wanting, key=lambda o: (self._last_turn[o], o)) == qi

    def _receive_loop(self, qi: int) -> None:
        tracker = self._tracker
        assert tracker is not None
        keys = self._keys[qi]
        lease = tracker.leases[qi]
        errors = Outage(first=0.5, cap=30.0)
        token = False  # woke on a wake-up token (a send's) that no receive has used yet
        while True:
            with self._lock:
                gather_until = None
                self._wanting.add(qi)
                while not self._halting and (tracker.free < tracker.want or not self._my_turn(qi)):
                    if tracker.free == 0 or not self._my_turn(qi):
                        if token and tracker.free == 0:
                            break  # no slot for it: hand the wake-up on first (below)
                        self._slot_cv.wait()
                        continue
                    if tracker.pending_count >= self.settings.batch_size:
                        break  # a batch of acks waits: carry it now
                    # Some slots are free: wait a moment for more, so one round trip carries a batch.
                    now = time.monotonic()
                    gather_until = gather_until or now + self.settings.flush_interval
                    if now >= gather_until:
                        break
                    self._slot_cv.wait(gather_until - now)
                self._wanting.discard(qi)
                halting = self._halting
                # No slot for the wake-up this receiver took: another consumer's receiver
                # long-polling this queue must get it now (one spurious wake-up at worst).
                hand_on = token and (halting or tracker.free == 0)
                if not (halting or hand_on):
                    self._last_turn[qi] = next(self._turns)
                    if self._wanting:
                        self._slot_cv.notify_all()  # the next queue in turn may go
                    n = tracker.reserve()
                    flush = tracker.take()
                    self._poked.discard(qi)
                    tracker.receiving += 1
            if halting or hand_on:
                if token:
                    self._client.hand_on(keys.wake)
                    token = False
                if halting:
                    return
                continue
            token = False
            try:
                got = self._exchange(flush, [_core.receive(keys, n, lease)], self._halt_event)
            finally:
                with self._lock:
                    tracker.receiving -= 1
                    if tracker.full:
                        self._maint_cv.notify()
            result = got[0] if got else None
            if not isinstance(result, tuple):
                with self._lock:
                    tracker.unreserve(n)
                    self._slot_cv.notify_all()
                if isinstance(result, Exception):
                    delay, starts = errors.failed()
                    if starts:
                        log.error("queue %r: receive failed: %s; retrying with backoff", keys.name, result)
                    self._halt_event.wait(delay)
                continue
            if errors.ok() is not None:
                log.warning("queue %r: receiving again", keys.name)
            messages, next_ms, notify = result
            if notify is not None:  # requests this receive dead-lettered: tell their senders
                self._notify(notify)
            with self._lock:
                tracker.unreserve(n - len(messages))
                if len(messages) < n and len(self._receivers) > 1:
                    self._slot_cv.notify_all()  # slots this receiver did not fill
                if messages:
                    now = time.monotonic()
                    self._dispatch(tracker.received(qi, messages, now))
                    due = tracker.heartbeat_in(now)
                    if min(STALL, due if due is not None else STALL) + now < self._maint_wake_at:
                        self._maint_cv.notify()
            if messages or next_ms == 0:
                continue
            timeout = _core.WAIT_CHUNK if next_ms < 0 else min(next_ms / 1000, _core.WAIT_CHUNK)
            try:
                token = self._client.wait(keys.wake, timeout, on_block=functools.partial(self._on_block, qi))
            except ConnectionError as e:
                with self._lock:
                    delay, starts = self._outage.failed()
                if starts:
                    log.warning("lost the server (%s); retrying with backoff until it is back", e)
                self._halt_event.wait(delay)
            finally:
                with self._lock:
                    self._unblockers.pop(qi, None)

    # ------------------------------------------------------------ workers

    def _dispatch(self, jobs: list[Job]) -> None:
        """Queue jobs for the workers (lock held); wake one or start one."""
        self._work.extend(jobs)
        self._helper()

    def _helper(self) -> None:
        """Wake an idle worker or start one (lock held)."""
        if self._idle:
            self._work_cv.notify()
        elif self._threads < self.settings.concurrency:
            self._spawn()

    def _spawn(self) -> None:
        self._threads += 1
        threading.Thread(target=self._guarded, args=(self._worker,), name="rqueue-worker", daemon=True).start()

    def _take(self) -> Job:
        """Pop the next job (lock held); get a helper if the jobs left would wait too long."""
        job = self._work.popleft()
        job.started = True
        self._takes += 1
        if self._work and self._avg * len(self._work) > HANDOFF:
            self._helper()
        return job

    def _finish(self, tracker: Tracker, job: Job, reply: Any, error: BaseException | None, seconds: float) -> Outcome:
        """Record an outcome (lock held); wake whoever waits on it."""
        self._avg += (seconds - self._avg) * 0.1
        now = time.monotonic()
        decision = tracker.finish(job, reply, error, now)
        free = tracker.free
        if free == 1 or free == tracker.want or self._halting or tracker.full:
            self._slot_cv.notify_all()  # a receiver may go (or start gathering); stop() may finish
        if decision.flush_now:
            due = tracker.flush_in(now)
            if due is not None and now + due < self._maint_wake_at:
                self._maint_cv.notify()
        return decision.outcome

    def _worker(self) -> None:
        tracker = self._tracker
        assert tracker is not None
        self._local.worker = True  # stop() from a handler must not wait for its own job
        resolve = self._resolve
        lock = self._lock
        work = self._work
        job: Job | None = None
        reply: Any = None
        error: BaseException | None = None
        name = ""
        seconds = 0.0
        report = bool(self._hooks)
        try:
            while True:
                finished = None
                with lock:
                    if job is not None:
                        outcome = self._finish(tracker, job, reply, error, seconds)
                        finished = job
                    job = self._take() if work and not self._halting else None
                if finished is not None and (error is not None or report):
                    self._report(finished, name, outcome, seconds, error)
                if job is None:
                    with lock:
                        while not work or self._halting:
                            if self._closing:
                                self._threads -= 1
                                return
                            self._idle += 1
                            woke = self._work_cv.wait(IDLE_TIMEOUT)
                            self._idle -= 1
                            if not woke and (not work or self._halting):
                                self._threads -= 1
                                return
                        job = self._take()
                t0 = time.perf_counter()
                reply = error = None
                try:
                    handler = resolve(job.message)
                    name = handler.name
                    reply = handler.fn(handler.argument(job.message))
                except BaseException as e:  # noqa: BLE001 - every failure is the message's outcome
                    error = e
                seconds = time.perf_counter() - t0
        except BaseException as e:  # the consumer's own bug, not a handler's: stop the consumer
            with lock:
                self._crash(e)
                self._threads -= 1
                if job is not None:
                    tracker.forget(job)  # held by a dead thread: the shutdown must not wait for it
                self._slot_cv.notify_all()
            raise

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

    def _maintain(self) -> None:
        tracker = self._tracker
        assert tracker is not None
        while True:
            with self._lock:
                while True:
                    if self._maint_exit:
                        return
                    now = time.monotonic()
                    f = tracker.flush_in(now)
                    h = tracker.heartbeat_in(now)
                    if f == 0 or h == 0:
                        break
                    stall = None
                    if self._work and not self._halting:
                        if self._takes == self._takes_seen:
                            self._helper()  # jobs wait behind a handler that turned slow
                        self._takes_seen = self._takes
                        stall = STALL
                    waits = [x for x in (f, h, stall) if x is not None]
                    timeout = min(waits) if waits else None
                    self._maint_wake_at = now + timeout if timeout is not None else float("inf")
                    self._maint_cv.wait(timeout)
                self._maint_wake_at = 0.0
                flush = tracker.take() if f == 0 else Flush()
                due = tracker.heartbeat(now) if h == 0 else []
            got = self._exchange(flush, tracker.heartbeat_calls(self._keys, due), self._exit_event)
            if got is None:
                with self._lock:
                    tracker.heartbeat_failed(due, time.monotonic())
                continue
            lost = sum(r.count(False) for r in got if isinstance(r, list))
            if lost:
                log.warning("%d message(s) lost their lease before the heartbeat (visibility timeout too short?)", lost)
