"""``rqueue.Consumer``: sync handlers on a pool of threads.

Threads: one receiver per queue (receive as many messages as there are free
slots, merged with pending acks in one round trip; long poll when idle), a
maintainer (flushes acks after a few ms, extends leases) and workers that grow
on demand up to ``concurrency`` and exit when idle. What receivers, maintainer
and shutdown do is written once, I/O-free, in ``rqueue._consumer.programs``
over ``Control``; this module runs each program's steps under one lock and
does what they ask (round trips, waits) outside it, and runs the workers.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

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
from rqueue._sync.client import Client, Queue

#: A worker thread with nothing to do for this long exits (the pool shrinks).
IDLE_TIMEOUT = 10.0
#: A worker wakes a helper for the jobs left behind it only when they would wait longer than
#: this at the measured handler speed: fast handlers run back to back on one thread.
HANDOFF = 0.0005
#: Jobs waiting this long with no worker taking one get a helper anyway (a handler that was
#: fast turned slow); the maintainer checks.
STALL = 0.005


class _Pool:
    """The worker threads: how many, how many idle, how fast handlers run (lock held)."""

    def __init__(self) -> None:
        self.threads = 0
        self.idle = 0
        self.avg = HANDOFF  # moving average of handler seconds (starts pessimistic: hand off)
        self.takes = 0  # jobs taken so far; the maintainer's stall check compares it
        self.takes_seen = -1


class Consumer(ConsumerBase):
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
        options = (concurrency, batch_size, retry_base, retry_cap, flush_interval, shutdown_timeout, visibility_timeout)
        self._lock = threading.RLock()  # re-entrant: a signal handler may take it on the main thread
        self._slot_cv = threading.Condition(self._lock)  # slots freed, a receiver's turn, stop requested
        self._work_cv = threading.Condition(self._lock)  # idle workers
        self._maint_cv = threading.Condition(self._lock)  # the maintainer
        cv = self._slot_cv
        wakes = Wakes(cv.notify_all, self._maint_cv.notify, self._helper, self._halted, self._closing, self._stalled)
        super().__init__(setup(queue_or_queues, handler, Queue, False, hooks, options), wakes)
        parts = self._setup
        self.queues: list[Queue] = parts.queues
        self._client: Client = parts.client
        self._halt_event = threading.Event()  # stopping: receivers' backoffs end at once
        self._exit_event = threading.Event()  # the maintainer exits: its backoff ends at once
        self._done = threading.Event()  # the shutdown is over
        self._pool = _Pool()
        self._local = threading.local()  # .worker is True on this consumer's worker threads
        self._unblockers: dict[int, Callable[[], None]] = {}  # receivers' long polls under way
        self._receivers: list[threading.Thread] = []
        self._maintainer: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start receiving in background threads; returns at once."""
        self._check_new()
        attrs = [q.attributes() for q in self.queues]  # also: QueueDoesNotExist early
        backoffs = [Outage(*RECEIVE_BACKOFF) for _ in attrs]
        with self._lock:
            ctl = self._open(attrs, backoffs, "threads", STALL)
        self._maintainer = self._thread("rqueue-maintainer", self._drive, maintain(ctl))
        for qi, name in enumerate(self._setup.names):
            self._receivers.append(self._thread(f"rqueue-receiver-{name}", self._drive, receive(ctl, qi)))

    def _thread(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        t = threading.Thread(target=self._guarded, args=(target, *args), name=name, daemon=True)
        t.start()
        return t

    def run(self) -> None:
        """Consume until ``stop()`` or SIGINT/SIGTERM, then stop gracefully.

        A second signal stops at once: unfinished messages come back after
        their visibility timeout. If one of the consumer's own threads dies
        of a bug, it stops gracefully too and ``run()`` raises RuntimeError,
        so a worker process exits non-zero instead of idling forever.
        """
        self._life.in_run = True  # before any thread starts: a crash leaves the shutdown to run()
        self.start()
        restore = self._install_signals()
        try:
            with self._lock:
                while not self._life.halted:
                    self._slot_cv.wait()
            self._shutdown()
        finally:
            for sig, previous in restore:
                signal.signal(sig, previous)
        with self._lock:
            self._life.raise_crash("thread")

    def _guarded(self, target: Callable[..., None], *args: Any) -> None:
        """Run a receiver, the maintainer or a worker; a crash stops the consumer instead of leaving it idle."""
        try:
            target(*args)
        except BaseException as e:  # noqa: BLE001 - logged by _crashed; the consumer stops
            with self._lock:
                then = self._crashed(e, f"thread {threading.current_thread().name}")
            if then is Then.BACKGROUND:  # started with start(): nobody waits in run() to stop it
                threading.Thread(target=self._shutdown, name="rqueue-stopper", daemon=True).start()

    def _halted(self) -> None:
        """A stop was requested (lock held): whoever waits must look (run(), receivers, workers)."""
        self._slot_cv.notify_all()
        self._work_cv.notify_all()
        self._halt_event.set()

    def _closing(self) -> None:
        """Workers and the maintainer exit (lock held)."""
        self._maint_cv.notify_all()
        self._work_cv.notify_all()
        self._exit_event.set()

    def stop(self) -> None:
        """Stop gracefully: no more receiving; unstarted messages visible again at once
        (one call per queue); in-flight ones finish within ``shutdown_timeout`` and are
        acknowledged. Calling it again while stopping stops at once.

        From inside a handler it returns at once (it cannot wait for its own
        message): the consumer stops in the background, and that handler's
        message is acknowledged when it returns. If an internal thread crashed,
        raises RuntimeError (as ``run()`` does) once stopped.
        """
        with self._lock:
            then = self._stop_request(inside=getattr(self._local, "worker", False))
        if then is Then.BACKGROUND:
            threading.Thread(target=self._shutdown, name="rqueue-stopper", daemon=True).start()
        elif then is Then.SHUTDOWN:
            self._shutdown()  # or waits for the one under way
            with self._lock:
                self._life.raise_crash("thread")

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
            signal.signal(sig, self._signalled)
        return restore

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            self._on_signal(signum)

    def _shutdown(self) -> None:
        """Stop (``programs.shutdown``); runs once, other callers wait for it."""
        ctl = self._control
        assert ctl is not None
        with self._lock:
            first = self._life.claim_shutdown()
        if not first:
            self._done.wait()
            return
        try:
            self._drive(shutdown(ctl))
        finally:
            self._done.set()

    # ------------------------------------------------------------ programs

    def _drive(self, program: Program) -> None:
        """Run ``program``: its steps under the lock, what it asks for outside it (a WAIT is a
        Condition wait, which lets go of the lock); a result goes back in, an exception is thrown in."""
        lock = self._lock
        cursor = Cursor(program)
        with lock:
            while (step := cursor.next()) is not None:
                ask, arg = step
                if ask is Ask.WAIT:
                    (self._slot_cv if arg[0] is Signal.SLOTS else self._maint_cv).wait(arg[1])
                    continue
                lock.release()
                try:
                    cursor.result = self._do(ask, arg)
                except BaseException as e:  # noqa: BLE001 - the program decides (it re-raises what it cannot handle)
                    cursor.error = e
                finally:
                    lock.acquire()

    def _do(self, ask: Ask, arg: Any) -> Any:
        """One thing a program asks for, done on this thread without the lock."""
        match ask:
            case Ask.EXCHANGE:
                calls = self._control.calls(*arg) if self._control is not None else []
                return self._client.run_many(calls) if calls else []
            case Ask.CLIENT:
                return getattr(self._client, arg[0])(arg[1])
            case Ask.LONG_POLL:
                return self._long_poll(*arg)
            case Ask.PAUSE:
                (self._halt_event if arg[0] is Until.HALT else self._exit_event).wait(arg[1])
            case Ask.UNBLOCK:
                with self._lock:
                    unblockers = [u for qi, u in self._unblockers.items() if arg is None or qi in arg]
                for unblock in unblockers:
                    unblock()
            case Ask.JOIN:  # workers exit by themselves once closing
                for t in (
                    self._receivers if arg is Join.RECEIVERS else [self._maintainer] if arg is Join.MAINTAINER else []
                ):
                    if t is not None:
                        t.join(JOIN_TIMEOUT)

    def _long_poll(self, qi: int, timeout: float) -> bool:
        """Wait for a send's wake-up on queue ``qi``; True if one came (a token to use or hand on)."""
        try:
            on_block = functools.partial(self._on_block, qi)
            return self._client.wait(self._setup.keys[qi].wake, timeout, on_block=on_block)
        finally:
            with self._lock:
                self._unblockers.pop(qi, None)

    def _on_block(self, qi: int, unblock: Callable[[], None]) -> None:
        with self._lock:
            if self._control is not None and self._control.may_wait(qi):
                self._unblockers[qi] = unblock
            else:
                unblock()

    # ------------------------------------------------------------ workers

    def _helper(self) -> None:
        """Wake an idle worker or start one (lock held)."""
        if self._pool.idle:
            self._work_cv.notify()
        elif self._pool.threads < self.settings.concurrency:
            self._pool.threads += 1
            self._thread("rqueue-worker", self._worker)

    def _take(self, ctl: Control) -> Job | None:
        """The next job (lock held); get a helper if the jobs left would wait too long."""
        job = ctl.take()
        if job is not None:
            pool = self._pool
            pool.takes += 1
            if ctl.work and pool.avg * len(ctl.work) > HANDOFF:
                self._helper()
        return job

    def _next(self, ctl: Control) -> Job | None:
        """Wait (lock held) for a job; None: this worker exits (idle too long, or closing)."""
        pool = self._pool
        while (job := self._take(ctl)) is None:
            if self._life.closing:
                return None
            pool.idle += 1
            woke = self._work_cv.wait(IDLE_TIMEOUT)
            pool.idle -= 1
            if not woke and (not ctl.work or self._life.halted):
                return None
        return job

    def _worker(self) -> None:
        ctl = self._control
        assert ctl is not None
        self._local.worker = True  # stop() from a handler must not wait for its own job
        resolve = self._setup.resolve
        lock = self._lock
        pool = self._pool
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
                        pool.avg += (seconds - pool.avg) * 0.1
                        outcome = ctl.finished(job, reply, error, time.monotonic())
                        finished = job
                    job = self._take(ctl)
                if finished is not None and (error is not None or report):
                    self._report(finished, name, outcome, seconds, error)
                if job is None:
                    with lock:
                        job = self._next(ctl)
                        if job is None:
                            pool.threads -= 1
                            return
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
                self._life.crash(e)  # _guarded logs it and stops
                pool.threads -= 1
                if job is not None:
                    ctl.ledger.forget(job)  # held by a dead thread: the shutdown must not wait for it
            raise

    # ------------------------------------------------------------ maintainer

    def _stalled(self) -> bool:
        """Jobs wait for a worker (lock held); none was taken since the last look: get a helper."""
        pool = self._pool
        if self._control is None or not self._control.work or self._life.halted:
            return False
        if pool.takes == pool.takes_seen:
            self._helper()  # jobs wait behind a handler that turned slow
        pool.takes_seen = pool.takes
        return True
