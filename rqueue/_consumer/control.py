"""Every decision of a running consumer, without I/O; the runners do the round trips and the waiting.

``Control`` decides when a receiver goes (fairness across queues, gathering
free slots for a batch, handing on a wake-up it cannot use), what a receive
brings (jobs, who to wake, how long to long-poll), what a round trip that
failed or carried problems means (outage backoff and its log lines), what a
finished handler means (outcome, who to wake, hooks), when the maintainer
flushes and heartbeats, and how long a shutdown waits. The thread runner
calls it under its lock, the asyncio runner on its loop.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rqueue._consumer.core import Settings, Setup
from rqueue._consumer.flush import Flush, flush_problems
from rqueue._consumer.jobs import GroupJob, Job
from rqueue._consumer.ledger import Ledger
from rqueue._consumer.lifecycle import Cause, Lifecycle, Outage
from rqueue._consumer.metrics import HandlerResult, Hook, Outcome, emit
from rqueue._protocol import operations as _core
from rqueue._protocol.errors import ConnectionError
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.models import QueueAttributes
from rqueue._protocol.operations import Call

log = logging.getLogger("rqueue.consumer")

#: A receiver's backoff after a receive that failed with an error (not a lost connection).
RECEIVE_BACKOFF = (0.5, 30.0)

#: Leases to extend, by queue index.
Due = list[tuple[int, list[str]]]


@dataclass(frozen=True, slots=True)
class Wakes:
    """How a runner wakes its threads or tasks; ``Control`` calls these (under the thread runner's lock)."""

    #: Receivers waiting for slots (and the shutdown waiting for jobs) must look.
    slots: Callable[[], None]
    #: The maintainer must look.
    maint: Callable[[], None]
    #: Jobs were queued in ``Control.work``: a worker must take them.
    jobs: Callable[[], None]
    #: A stop was requested: everyone waiting must look; backoffs end.
    halted: Callable[[], None]
    #: Workers and the maintainer must exit.
    closing: Callable[[], None]
    #: Jobs wait for a worker (threads: get a helper if none was taken since the last look).
    stalled: Callable[[], bool] = bool


class Gate(enum.Enum):
    """A receiver's next step."""

    GO = "go"  #: receive now (``Control.go``)
    WAIT = "wait"  #: wait until woken (a slot frees, another receiver goes, stopping)
    GATHER = "gather"  #: wait until the time given, or until woken, then look again
    HAND_ON = "hand on"  #: pass the wake-up token on to another consumer, then look again
    HALT = "halt"  #: stopping: the receiver exits


@dataclass(slots=True)
class Arrival:
    """What a receiver does after a receive."""

    #: Tell senders of requests this receive dead-lettered (best effort).
    notify: Call[Any] | None = None
    #: Back off this long first (stopping cuts it short).
    pause: float = 0.0
    #: Long-poll this long for a wake-up before the next receive; None: receive again at once.
    wait: float | None = None


def open_control(
    setup: Setup,
    attrs: Sequence[QueueAttributes],
    life: Lifecycle,
    errors: Sequence[Outage],
    wakes: Wakes,
    *,
    stall: float | None = None,
    what: str,
) -> Control:
    """The control of a consumer starting now, with its queues' attributes (visibility timeouts,
    max_receive_count) and one receive-error backoff per queue."""
    vt = setup.settings.visibility_timeout
    ledger = Ledger(
        setup.settings,
        [vt if vt is not None else a.visibility_timeout for a in attrs],
        [a.max_receive_count for a in attrs],
        [k.is_dlq for k in setup.keys],
        [a.fifo for a in attrs],
    )
    life.to(Cause.START)
    log.info("consuming %s with up to %d %s", ", ".join(setup.names), setup.settings.concurrency, what)
    return Control(ledger, life, setup.keys, setup.names, setup.hooks, errors, wakes, stall=stall)


class Control:
    """The decisions of one started consumer over its ``Ledger``; not thread-safe: callers lock."""

    def __init__(
        self,
        ledger: Ledger,
        life: Lifecycle,
        keys: Sequence[QueueKeys],
        names: Sequence[str],
        hooks: Sequence[Hook],
        errors: Sequence[Outage],
        wakes: Wakes,
        *,
        stall: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.wakes = wakes
        #: Jobs waiting for a worker, in order.
        self.work: collections.deque[Job] = collections.deque()
        self.life = life
        self.settings: Settings = ledger.settings
        self.keys = list(keys)
        self.names = list(names)
        self.hooks = list(hooks)
        #: Per queue: the backoff after receive errors.
        self.errors = list(errors)
        #: The backoff while the server is unreachable (any round trip).
        self.outage = Outage()
        #: The maintainer also looks this often while jobs wait for a worker (threads: a handler turned slow).
        self.stall = stall
        #: Queues whose receiver must look again before long-polling (a retry may be visible soon).
        self.poked: set[int] = set()
        #: Receivers waiting for slots, and when each was last served (fairness).
        self.wanting: set[int] = set()
        self._last_turn = [0] * len(self.keys)
        self._turns = itertools.count(1)
        #: When the maintainer wakes next by itself (0: it is busy, inf: only when woken).
        self.maint_wake_at = 0.0

    # ------------------------------------------------------------ receivers

    def admit(self, qi: int, token: bool, now: float, gather_until: float | None) -> tuple[Gate, float | None]:
        """Receiver ``qi``'s next step. ``token``: it woke on a send's wake-up no receive used yet.

        A receiver goes when at least ``want`` slots are free and it is its turn (of the
        receivers waiting for slots, the one served longest ago). With fewer free it gathers
        for up to ``flush_interval`` so one round trip carries a batch, unless a batch of acks
        waits. With none free, a wake-up token goes on to another consumer first.
        """
        if self.life.halted:
            self.wanting.discard(qi)
            return (Gate.HAND_ON if token else Gate.HALT), None
        book = self.ledger
        wanting = self.wanting
        wanting.add(qi)
        turn = len(wanting) == 1 or min(wanting, key=lambda o: (self._last_turn[o], o)) == qi
        free = book.free
        if free < book.want or not turn:
            if free == 0 or not turn:
                if token and free == 0:
                    wanting.discard(qi)
                    return Gate.HAND_ON, None
                return Gate.WAIT, None
            if book.pending_count < self.settings.batch_size:
                gather_until = gather_until or now + self.settings.flush_interval
                if now < gather_until:
                    return Gate.GATHER, gather_until
        wanting.discard(qi)
        return Gate.GO, None

    def go(self, qi: int) -> tuple[int, Flush]:
        """Receiver ``qi`` goes: the slots it reserved and the pending acks it carries."""
        book = self.ledger
        self._last_turn[qi] = next(self._turns)
        n = book.reserve()
        flush = book.take()
        self.poked.discard(qi)
        book.receiving += 1
        if self.wanting:
            self.wakes.slots()  # the next queue in turn may go
        return n, flush

    def receive_call(self, qi: int, n: int) -> Call[Any]:
        return _core.receive(self.keys[qi], n, self.ledger.leases[qi])

    def calls(self, flush: Flush, tail: list[Call[Any]]) -> list[Call[Any]]:
        """One round trip: ``flush`` carried out, then ``tail``. Reads no shared state (the flush is the
        caller's): the thread runner builds it outside its lock."""
        return flush.calls(self.keys) + tail if flush else tail

    def receive_ended(self) -> None:
        """A receive round trip ended (either way); pending acks it did not carry may have to go now."""
        book = self.ledger
        book.receiving -= 1
        if book.full:
            self.wakes.maint()

    def arrived(self, qi: int, n: int, result: Any, now: float) -> Arrival:
        """Receive ``result`` (a tuple, an Exception, or None: connection lost) came: queue its jobs."""
        book = self.ledger
        if not isinstance(result, tuple):
            book.unreserve(n)
            self.wakes.slots()
            if not isinstance(result, Exception):
                return Arrival()
            delay, starts = self.errors[qi].failed()
            if starts:
                log.error("queue %r: receive failed: %s; retrying with backoff", self.names[qi], result)
            return Arrival(pause=delay)
        if self.errors[qi].ok() is not None:
            log.warning("queue %r: receiving again", self.names[qi])
        messages, next_ms, notify = result
        if not messages:
            book.unreserve(n)
            if len(self.keys) > 1:
                self.wakes.slots()  # slots this receiver did not fill
            wait = None if next_ms == 0 else _core.WAIT_CHUNK if next_ms < 0 else min(next_ms / 1000, _core.WAIT_CHUNK)
            return Arrival(notify, wait=wait)
        jobs, used, stale = book.received(qi, messages, now)
        book.unreserve(n - used)
        if used < n and len(self.keys) > 1:
            self.wakes.slots()  # slots this receiver did not fill
        for j in stale:  # held FIFO messages whose group came again: not to be run
            if j in self.work:
                self.work.remove(j)
        self.work.extend(jobs)
        self.wakes.jobs()
        soon = book.heartbeat_in(now) or 0.0  # jobs are held: never None
        if self.stall is not None:
            soon = min(self.stall, soon)
        if now + soon < self.maint_wake_at:
            self.wakes.maint()
        return Arrival(notify)

    def may_wait(self, qi: int) -> bool:
        """May receiver ``qi`` long-poll now? Not when stopping, nor when poked (look again first)."""
        return not self.life.halted and qi not in self.poked

    @staticmethod
    def notify_failed(e: BaseException) -> None:
        log.warning("could not tell senders about dead-lettered requests (%s); they time out instead", e)

    # ------------------------------------------------------------ round trips

    def lost(self, e: BaseException) -> float:
        """A round trip or long poll lost the server: seconds to back off (logged once per outage)."""
        delay, starts = self.outage.failed()
        if starts:
            log.warning("lost the server (%s); retrying with backoff until it is back", e)
        return delay

    def failed(self, flush: Flush, e: BaseException, now: float) -> float | None:
        """A round trip carrying ``flush`` raised ``e``: keep the work for the next one; seconds to back
        off if the server is unreachable, None if ``e`` is a bug the caller re-raises (the shutdown sends
        the work)."""
        self.ledger.give_back(flush, now)
        return self.lost(e) if isinstance(e, ConnectionError) else None

    def done(self, flush: Flush, results: list[Any], tail: int) -> tuple[list[Any], set[int]]:
        """A round trip worked: the results of its last ``tail`` calls, and the queues whose receivers
        must look again now (retries may be visible sooner than their long poll ends)."""
        lasted = self.outage.ok()
        if lasted is not None:
            log.warning("server reachable again after %.1f s", lasted)
        if not flush:
            return results[len(results) - tail :], set()
        n = len(results) - tail
        self.problems(flush, results[:n])
        poke = {qi for qi, _r, _s in flush.retries}
        self.poked |= poke
        return results[n:], poke

    def problems(self, flush: Flush, results: Sequence[Any]) -> None:
        for line in flush_problems(flush, results, self.names):
            log.warning("%s", line)

    @staticmethod
    def unsent(e: BaseException) -> None:
        log.warning("could not reach the server while stopping (%s); those messages return after their timeout", e)

    # ------------------------------------------------------------ workers

    def finished(self, job: Job, reply: Any, error: BaseException | None, now: float) -> Outcome:
        """A handler returned ``reply`` or raised ``error``: record it and wake whoever must look."""
        book = self.ledger
        outcome, flush_now, after = book.finish(job, reply, error, now)
        if after is not None:
            # FIFO: its group goes on in the same slot; the worker that finished takes it next
            self.work.appendleft(after)
            if self.life.halted or book.full:
                self.wakes.slots()
        elif (free := book.free) == 1 or free == book.want or self.life.halted or book.full:
            self.wakes.slots()  # a receiver may go (or start gathering); the shutdown may finish
        if flush_now:
            due = book.flush_in(now)
            if due is not None and now + due < self.maint_wake_at:
                self.wakes.maint()
        return outcome

    def take(self) -> Job | None:
        """The next job for a worker (marked started), or None if none may start."""
        if not self.work or self.life.halted:
            return None
        job = self.work.popleft()
        job.started = True
        return job

    def report(self, job: Job, handler: str, outcome: Outcome, seconds: float, error: BaseException | None) -> None:
        """Log a handler's failure; give every outcome to the hooks."""
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
        if self.hooks:
            emit(self.hooks, HandlerResult(job.message.queue, handler, outcome, seconds, job.message.id, error))
        if isinstance(job, GroupJob) and job.released:
            self._released(job, job.released)

    def _released(self, failed: GroupJob, released: Sequence[GroupJob]) -> None:
        """FIFO: the held messages behind a failed one of their group were given back unrun: logged,
        and each is a ``released`` result for the hooks (no handler ran: handler '', 0 s)."""
        log.info(
            "gave back %d later message(s) of group %r of %r unrun, after message %s; they come after it",
            len(released),
            failed.message.group,
            failed.message.queue,
            failed.message.id,
        )
        if self.hooks:
            for j in released:
                emit(self.hooks, HandlerResult(j.message.queue, "", "released", 0.0, j.message.id, None))

    # ------------------------------------------------------------ maintainer

    def chores(self, now: float) -> tuple[Flush, Due] | float | None:
        """The maintainer's work due now (acks to flush, leases to extend), else seconds until some
        is (None: only when woken); with a ``stall``, it looks again that soon while jobs wait for a
        worker."""
        book = self.ledger
        f = book.flush_in(now)
        h = book.heartbeat_in(now)
        if f == 0 or h == 0:
            self.maint_wake_at = 0.0
            return (book.take() if f == 0 else Flush()), (book.heartbeat(now) if h == 0 else [])
        stall = self.stall if self.stall is not None and self.wakes.stalled() else None
        waits = [x for x in (f, h, stall) if x is not None]
        timeout = min(waits) if waits else None
        self.maint_wake_at = now + timeout if timeout is not None else float("inf")
        return timeout

    def heartbeat_calls(self, due: Due) -> list[Call[Any]]:
        return self.ledger.heartbeat_calls(self.keys, due)

    def chores_done(self, due: Due, got: list[Any] | None, now: float) -> None:
        """The maintainer's round trip ended: ``got`` the heartbeats' results, None if not sent."""
        if got is None:
            self.ledger.heartbeat_failed(due, now)
            return
        lost = sum(r.count(False) for r in got if isinstance(r, list))
        if lost:
            log.warning("%d message(s) lost their lease before the heartbeat (visibility timeout too short?)", lost)

    # ------------------------------------------------------------ stopping

    def release(self) -> Flush:
        """Stopping: drop the jobs not started; the flush makes their messages visible at once."""
        self.work.clear()
        return self.ledger.take_unstarted()

    def drain_wait(self, deadline: float, now: float) -> float | None:
        """The shutdown waits this long for running jobs (then looks again); None: done waiting
        (none left, aborting, or the deadline passed: logged)."""
        jobs = self.ledger.jobs
        if self.life.aborting or not jobs:
            return None
        left = deadline - now
        if left <= 0:
            log.warning("%d message(s) still running at the shutdown deadline", len(jobs))
            return None
        return left
