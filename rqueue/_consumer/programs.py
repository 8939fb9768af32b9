"""What a consumer's receivers, maintainer and shutdown do, in order, without I/O.

Each is a generator over ``Control``: it makes every decision itself and
yields what it needs done, ``(Ask, argument)``; the runner does it and sends the
result back (or throws the exception in). The thread runner runs every step
between two yields under its lock and does the I/O and the waiting outside
it (a ``WAIT`` is a Condition wait, which lets go of the lock); the asyncio
runner awaits. So the order of things (acks merged with the next receive,
gathering, handing a wake-up on, backoffs, the shutdown's steps) is written
once, and each runner only knows how to do six things.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Generator
from typing import Any

from rqueue._consumer.control import Control, Gate
from rqueue._consumer.flush import Flush
from rqueue._consumer.lifecycle import Cause
from rqueue._protocol.errors import ConnectionError
from rqueue._protocol.operations import Call

log = logging.getLogger("rqueue.consumer")


class Ask(enum.Enum):
    """What a program asks its runner to do."""

    #: (signal, seconds or None): wait until ``Signal`` is given or the time is up. Returns None.
    WAIT = "wait"
    #: (until, seconds): back off, cut short when ``until`` (HALT or EXIT) is set. Returns None.
    PAUSE = "pause"
    #: (flush, tail): one round trip, ``client.run_many(Control.calls(flush, tail))`` (built by the
    #: runner: outside the thread runner's lock). Returns the results; an exception is thrown in.
    EXCHANGE = "exchange"
    #: (method, argument): ``client.<method>(argument)``: ``run`` one call, ``hand_on`` a wake-up
    #: key. Returns its result; its exception is thrown in.
    CLIENT = "client"
    #: (queue index, seconds): long-poll that queue's wake-up key, ended early by UNBLOCK or
    #: stopping. Returns True if a token came; a ConnectionError is thrown in.
    LONG_POLL = "long poll"
    #: a set of queue indexes, or None for all: end those receivers' long polls. Returns None.
    UNBLOCK = "unblock"
    #: a ``Join``: wait (bounded) for those threads or tasks to end. Returns None.
    JOIN = "join"


class Signal(enum.Enum):
    SLOTS = "slots"  #: slots freed, a receiver's turn, stopping: receivers and the shutdown look
    MAINT = "maint"  #: the maintainer looks


class Until(enum.Enum):
    HALT = "halt"  #: set when stopping: receivers' backoffs end
    EXIT = "exit"  #: set when the maintainer exits: its backoff ends


#: How long the shutdown waits for receivers (caught in a round trip), workers or the maintainer.
JOIN_TIMEOUT = 10.0


class Join(enum.Enum):
    RECEIVERS = "receivers"
    WORKERS = "workers"  #: idle or (aborting, past the deadline) still running: cancelled where possible
    MAINTAINER = "maintainer"


Step = tuple[Ask, Any]
Program = Generator[Step, Any, None]


class Cursor:
    """A program under way, for a runner to step through: set ``result`` or ``error`` after each step."""

    __slots__ = ("error", "program", "result")

    def __init__(self, program: Program) -> None:
        self.program = program
        self.result: Any = None
        self.error: BaseException | None = None

    def next(self) -> Step | None:
        """The program's next step, given the last one's result or exception; None when it is done."""
        try:
            step = self.program.send(self.result) if self.error is None else self.program.throw(self.error)
        except StopIteration:
            return None
        self.result = self.error = None
        return step


def exchange(ctl: Control, flush: Flush, tail: list[Call[Any]], until: Until) -> Generator[Step, Any, Any]:
    """Send ``flush`` and run ``tail`` in one round trip: the tail's results, None if the server is
    unreachable (after backing off). The one place acks (with their replies) leave the consumer."""
    try:
        results = yield Ask.EXCHANGE, (flush, tail)
    except BaseException as e:
        delay = ctl.failed(flush, e, time.monotonic())
        if delay is None:
            raise  # a bug: the shutdown sends the work given back
        yield Ask.PAUSE, (until, delay)
        return None
    got, poke = ctl.done(flush, results, len(tail))
    if poke:
        yield Ask.UNBLOCK, poke  # a retry may be visible sooner than those long polls end
    return got


def send_once(ctl: Control, flush: Flush) -> Generator[Step, Any, None]:
    """Stopping: send ``flush`` once, whatever happens."""
    if not flush:
        return
    try:
        results = yield Ask.EXCHANGE, (flush, [])
    except Exception as e:  # noqa: BLE001 - stopping goes on
        ctl.unsent(e)
        return
    ctl.problems(flush, results)


def gate(ctl: Control, qi: int, token: bool) -> Generator[Step, Any, Gate]:
    """Wait until receiver ``qi`` may go, must hand its wake-up on, or must halt."""
    until: float | None = None
    while True:
        now = time.monotonic()
        step, gather_until = ctl.admit(qi, token, now, until)
        if step is Gate.WAIT:
            yield Ask.WAIT, (Signal.SLOTS, None)
        elif step is Gate.GATHER and gather_until is not None:
            until = gather_until
            yield Ask.WAIT, (Signal.SLOTS, until - now)
        else:
            return step


def receive(ctl: Control, qi: int) -> Program:
    """Receiver of queue ``qi``: as many messages as slots are free, the pending acks riding along;
    a long poll when the queue is empty; a wake-up it cannot use handed on."""
    token = False  # woke on a wake-up token (a send's) that no receive has used yet
    while True:
        step = yield from gate(ctl, qi, token)
        if step is Gate.HALT:
            return
        token = False
        if step is Gate.HAND_ON:  # no slot for it: another consumer's receiver gets it now
            yield Ask.CLIENT, ("hand_on", ctl.keys[qi].wake)
            continue
        n, flush = ctl.go(qi)
        try:
            got = yield from exchange(ctl, flush, [ctl.receive_call(qi, n)], Until.HALT)
        finally:
            ctl.receive_ended()
        arrival = ctl.arrived(qi, n, got[0] if got else None, time.monotonic())
        if arrival.notify is not None:  # requests this receive dead-lettered: tell their senders
            try:
                yield Ask.CLIENT, ("run", arrival.notify)
            except Exception as e:  # noqa: BLE001 - best effort: must not cost the messages just received
                ctl.notify_failed(e)
        if arrival.pause:
            yield Ask.PAUSE, (Until.HALT, arrival.pause)
        elif arrival.wait is not None and ctl.may_wait(qi):
            try:
                token = yield Ask.LONG_POLL, (qi, arrival.wait)
            except ConnectionError as e:
                yield Ask.PAUSE, (Until.HALT, ctl.lost(e))


def maintain(ctl: Control) -> Program:
    """Maintainer: flush acks when due (a few ms after the first, or at once when a batch is full
    and no receive will carry it), extend leases before they end."""
    while True:
        while True:
            if ctl.life.closing:
                return
            chores = ctl.chores(time.monotonic())
            if isinstance(chores, tuple):
                break
            yield Ask.WAIT, (Signal.MAINT, chores)
        flush, due = chores
        got = yield from exchange(ctl, flush, ctl.heartbeat_calls(due), Until.EXIT)
        ctl.chores_done(due, got, time.monotonic())


def shutdown(ctl: Control) -> Program:
    """Halt receivers, release unstarted jobs at once, let running ones finish within
    ``shutdown_timeout`` (unless aborting), then let workers and maintainer go and send the rest."""
    ctl.wakes.halted()
    yield Ask.UNBLOCK, None
    yield Ask.JOIN, Join.RECEIVERS
    yield from send_once(ctl, ctl.release())
    deadline = time.monotonic() + ctl.settings.shutdown_timeout
    while (left := ctl.drain_wait(deadline, time.monotonic())) is not None:
        yield Ask.WAIT, (Signal.SLOTS, left)
    ctl.life.to(Cause.DRAINED)
    ctl.wakes.closing()
    yield Ask.JOIN, Join.WORKERS
    yield Ask.JOIN, Join.MAINTAINER
    yield from send_once(ctl, ctl.ledger.take())
    ctl.life.to(Cause.CLOSED)
    log.info("stopped")
