"""The half of both consumers that does no I/O: arguments, lifecycle, control, reporting.

``rqueue.Consumer`` (threads) and ``rqueue.asyncio.AsyncConsumer`` (tasks)
derive from ``ConsumerBase``; they add only their threads or tasks, their
waiting and their round trips.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rqueue._consumer.control import Control, Wakes, open_control
from rqueue._consumer.core import Settings, Setup
from rqueue._consumer.jobs import Job
from rqueue._consumer.lifecycle import Lifecycle, Outage, Then
from rqueue._consumer.metrics import Outcome
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.models import QueueAttributes

log = logging.getLogger("rqueue.consumer")


class ConsumerBase:
    """A consumer's validated parts, its lifecycle and (once started) its ``Control``."""

    def __init__(self, parts: Setup, wakes: Wakes) -> None:
        self.settings: Settings = parts.settings
        self._setup = parts
        self._wakes = wakes
        self._life = Lifecycle()
        self._control: Control | None = None

    def _check_new(self) -> None:
        if self._control is not None:
            raise InvalidParameter("this consumer was already started; make a new one")

    def _open(
        self, attrs: Sequence[QueueAttributes], errors: Sequence[Outage], what: str, stall: Any = None
    ) -> Control:
        """Start: the control over the queues' attributes (``what`` the workers are, for the log)."""
        self._control = open_control(self._setup, attrs, self._life, errors, self._wakes, stall=stall, what=what)
        return self._control

    def _crashed(self, e: BaseException, where: str) -> Then:
        """The consumer's own thread or task (``where``) died of ``e``: log it, stop, wake everyone."""
        log.critical("consumer %s crashed; stopping", where, exc_info=e)
        then = self._life.crash(e)
        self._wakes.halted()
        return then

    def _stop_request(self, inside: bool) -> Then:
        """stop() was called (from a handler if ``inside``): what it does next (``Lifecycle.stop``)."""
        then = self._life.stop(inside=inside, started=self._control is not None)
        self._wakes.halted()
        return then

    def _on_signal(self, signum: int, *frame: object) -> None:
        """SIGINT/SIGTERM: the first stops gracefully, the second at once."""
        self._life.signal(signum)
        self._wakes.halted()

    def _report(self, job: Job, handler: str, outcome: Outcome, seconds: float, error: BaseException | None) -> None:
        assert self._control is not None
        self._control.report(job, handler, outcome, seconds, error)
