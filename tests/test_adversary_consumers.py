"""Adversary tests of the consumer framework (issues 9 and 17 fixes): each failed when written.

Every consumer test runs sync and asyncio on standalone, Sentinel and Cluster (the ``rig``
fixture of ``test_consumer_defects``) unless it needs a cluster node killed.
"""

from __future__ import annotations

import logging
import time

import pytest

from rqueue import _consumer as sync_consumer
from rqueue._consumer_core import Outage
from rqueue.asyncio import _consumer as async_consumer

from .test_consumer import until
from .test_consumer_defects import Rig, rig  # noqa: F401 - the fixture

#: A backoff long enough that a stop() which waits for it is plainly late.
LONG_BACKOFF = 6.0


class _LongBackoff(Outage):
    """Every failure waits LONG_BACKOFF seconds (the receive-error backoff reaches that after ~4 s)."""

    def failed(self) -> tuple[float, bool]:
        _delay, starts = super().failed()
        return LONG_BACKOFF, starts


def test_stop_is_prompt_while_a_receiver_backs_off_from_a_deleted_queue(
    rig: Rig,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Delete the queue under a running consumer: its receive fails and backs off (up to 30 s).
    stop() must end that backoff at once, as it ends a long poll; the asyncio receiver slept on
    (asyncio.sleep), so stop() took the whole backoff (or JOIN_TIMEOUT, then left the task running)."""
    monkeypatch.setattr(sync_consumer, "Outage", _LongBackoff)
    monkeypatch.setattr(async_consumer, "Outage", _LongBackoff)
    caplog.set_level(logging.ERROR, logger="rqueue.consumer")
    rig.client.create_queue("gone", visibility_timeout=30)
    c = rig.start(rig.consumer("gone", rig.handler(lambda body: None)))
    rig.client.delete_queue("gone")
    until(lambda: "receive failed" in caplog.text, timeout=20, what="the receive to fail")
    t0 = time.monotonic()
    rig.stop(c)
    took = time.monotonic() - t0
    assert took < 2, f"stop() took {took:.1f} s"
