"""A consumer's lifecycle, without I/O: one state, one transition table, for both runners.

    NEW --start--> RUNNING --stop from outside--> STOPPING --again--> ABORTING
                      |                              ^                   |
                      +--stop inside/crash--> HALTING +--stop from outside |
    HALTING / STOPPING / ABORTING --drained--> CLOSING --closed--> STOPPED

A stop from outside is ``stop()`` called outside a handler, a signal or (asyncio)
a cancellation; the second one stops at once. A stop from inside a handler or a
crash of the consumer's own machinery stops gracefully and leaves the next
outside request to be the first. ``Outage`` is the backoff (and its log lines)
while the server is unreachable.
"""

from __future__ import annotations

import enum
import logging
import random
import time

log = logging.getLogger("rqueue.consumer")


class State(enum.Enum):
    """Where a consumer is in its life."""

    NEW = "new"  #: made, not started
    RUNNING = "running"  #: receiving and starting jobs
    HALTING = "halting"  #: stopping, asked by a handler or a crash: the next outside request is the first
    STOPPING = "stopping"  #: stopping gracefully, asked from outside: the next outside request aborts
    ABORTING = "aborting"  #: stopping at once: running jobs are not waited for
    CLOSING = "closing"  #: jobs done (or given up): workers and maintainer exit, the last acks go out
    STOPPED = "stopped"


class Cause(enum.Enum):
    """What moves a consumer from one state to the next."""

    START = "start"
    OUTSIDE = "stop from outside"  #: stop() outside a handler, a signal, a cancellation
    INSIDE = "stop from a handler"
    CRASH = "crash"  #: the consumer's own thread or task died of a bug
    DRAINED = "drained"  #: the shutdown is done waiting for running jobs
    CLOSED = "closed"  #: the last acks went out


_S, _C = State, Cause
#: The one transition table: (state, cause) -> next state. A pair not listed is a bug.
TRANSITIONS: dict[tuple[State, Cause], State] = {
    (_S.NEW, _C.START): _S.RUNNING,
    (_S.NEW, _C.OUTSIDE): _S.STOPPING,  # stopped before started: start() then only stops
    (_S.NEW, _C.INSIDE): _S.HALTING,
    (_S.NEW, _C.CRASH): _S.HALTING,
    (_S.RUNNING, _C.OUTSIDE): _S.STOPPING,
    (_S.RUNNING, _C.INSIDE): _S.HALTING,
    (_S.RUNNING, _C.CRASH): _S.HALTING,
    (_S.HALTING, _C.START): _S.HALTING,
    (_S.HALTING, _C.OUTSIDE): _S.STOPPING,
    (_S.HALTING, _C.INSIDE): _S.HALTING,
    (_S.HALTING, _C.CRASH): _S.HALTING,
    (_S.HALTING, _C.DRAINED): _S.CLOSING,
    (_S.STOPPING, _C.START): _S.STOPPING,
    (_S.STOPPING, _C.OUTSIDE): _S.ABORTING,
    (_S.STOPPING, _C.INSIDE): _S.STOPPING,
    (_S.STOPPING, _C.CRASH): _S.STOPPING,
    (_S.STOPPING, _C.DRAINED): _S.CLOSING,
    (_S.ABORTING, _C.START): _S.ABORTING,
    (_S.ABORTING, _C.OUTSIDE): _S.ABORTING,
    (_S.ABORTING, _C.INSIDE): _S.ABORTING,
    (_S.ABORTING, _C.CRASH): _S.ABORTING,
    (_S.ABORTING, _C.DRAINED): _S.CLOSING,
    (_S.CLOSING, _C.OUTSIDE): _S.CLOSING,
    (_S.CLOSING, _C.INSIDE): _S.CLOSING,
    (_S.CLOSING, _C.CRASH): _S.CLOSING,
    (_S.CLOSING, _C.CLOSED): _S.STOPPED,
    (_S.STOPPED, _C.OUTSIDE): _S.STOPPED,
    (_S.STOPPED, _C.INSIDE): _S.STOPPED,
    (_S.STOPPED, _C.CRASH): _S.STOPPED,
}

_LIVE = frozenset({State.NEW, State.RUNNING})
_ASKED = frozenset({State.STOPPING, State.ABORTING})
_CLOSING = frozenset({State.CLOSING, State.STOPPED})


class Then(enum.Enum):
    """What the caller of ``stop()`` (or a crashed thread or task) does next."""

    RETURN = "return"  #: nothing: not started, or someone else shuts down
    BACKGROUND = "background"  #: start the shutdown in the background, return at once
    SHUTDOWN = "shutdown"  #: run the shutdown (or wait for the one under way), then raise a crash


class Lifecycle:
    """A consumer's state, who shuts it down, and the crash it must report. Not thread-safe: callers lock."""

    def __init__(self) -> None:
        self._state = State.NEW
        self.halted = self.aborting = self.closing = False
        self.state = State.NEW
        #: run() waits and will shut down (else a crash or a stop from a handler shuts down in the background).
        self.in_run = False
        #: The shutdown was started (it runs once; later stop() calls wait for it).
        self.shutdown_claimed = False
        self.crashed: BaseException | None = None
        self._crash_raised = False

    def to(self, cause: Cause) -> State:
        """Move on by ``cause`` (the table); a transition it does not list is a bug: RuntimeError."""
        try:
            state = TRANSITIONS[self.state, cause]
        except KeyError:
            raise RuntimeError(f"consumer lifecycle: no transition from {self.state.name} on {cause.value}") from None
        self.state = state
        return state

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, state: State) -> None:
        self._state = state
        # Read on every job: plain attributes, derived from the state here and nowhere else.
        #: No more receiving, no more starting jobs: a stop was requested.
        self.halted = state not in _LIVE
        #: Running jobs are not waited for.
        self.aborting = state is State.ABORTING
        #: Workers and the maintainer exit.
        self.closing = state in _CLOSING

    def request_stop(self, *, outside: bool) -> None:
        """A stop request from outside a handler (stop(), a signal, a cancellation) or from inside one."""
        self.to(Cause.OUTSIDE if outside else Cause.INSIDE)

    def signal(self, signum: int) -> None:
        """SIGINT/SIGTERM: the first stops gracefully, the second at once."""
        if self.state in _ASKED:
            log.warning("signal %d again: stopping now; unfinished messages return after their timeout", signum)
        else:
            log.info("signal %d: stopping gracefully (send it again to stop now)", signum)
        self.to(Cause.OUTSIDE)

    def crash(self, e: BaseException) -> Then:
        """The consumer's own thread or task died of ``e``: stop, and remember the first such error.
        BACKGROUND if nobody else will shut down (started with start(), no shutdown under way)."""
        if self.crashed is None:
            self.crashed = e
        self.to(Cause.CRASH)
        return Then.BACKGROUND if self.shutdown_in_background else Then.RETURN

    def stop(self, *, inside: bool, started: bool) -> Then:
        """``stop()`` was called, from a handler if ``inside``: record the request; what the caller does.

        From inside a handler it cannot wait for its own message: it returns at once and the
        shutdown runs in the background (unless run() or a shutdown under way does it).
        """
        self.request_stop(outside=not inside)
        if not started:
            return Then.RETURN
        if inside:
            return Then.BACKGROUND if self.shutdown_in_background else Then.RETURN
        return Then.SHUTDOWN

    def claim_shutdown(self) -> bool:
        """True for the one caller that runs the shutdown."""
        first = not self.shutdown_claimed
        self.shutdown_claimed = True
        return first

    @property
    def shutdown_in_background(self) -> bool:
        """Nobody will shut down unless it is started now: not run(), not a shutdown under way."""
        return not self.in_run and not self.shutdown_claimed

    def raise_crash(self, what: str) -> None:
        """Raise the crash as RuntimeError, once (run() or stop() does, once stopped)."""
        if self.crashed is None or self._crash_raised:
            return
        self._crash_raised = True
        raise RuntimeError(f"consumer stopped: an internal {what} crashed: {self.crashed!r}") from self.crashed


class Outage:
    """Backoff while the server is unreachable; says when to log (once per outage)."""

    def __init__(self, first: float = 0.05, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0
        self.since: float | None = None

    def failed(self) -> tuple[float, bool]:
        """Seconds to wait before trying again, and whether this starts an outage."""
        self.failures += 1
        starts = self.since is None
        if starts:
            self.since = time.monotonic()
        ceiling = min(self.cap, self.first * 2.0 ** min(self.failures - 1, 20))
        return ceiling / 2 + random.random() * ceiling / 2, starts

    def ok(self) -> float | None:
        """The call worked: seconds the outage lasted, or None if there was none."""
        if self.since is None:
            return None
        lasted = time.monotonic() - self.since
        self.since = None
        self.failures = 0
        return lasted
