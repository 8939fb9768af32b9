"""Adversary tests of the consumer framework (issues 9 and 17 fixes): each failed when written.

Every consumer test runs sync and asyncio on standalone, Sentinel and Cluster (the ``rig``
fixture of ``test_consumer_defects``) unless it needs a cluster node killed.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from rqueue._consumer import tasks as async_consumer
from rqueue._consumer import threads as sync_consumer
from rqueue._consumer.lifecycle import Outage

from .conftest import drop_keys, names_on_every_node, raw_client
from .servers import Cluster
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


@pytest.mark.cluster
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.xfail(
    strict=True,
    reason="a cluster node down starves a multi-queue consumer's queues on healthy nodes: acks for the "
    "down node's queue ride in every receive (and every flush) of the others, and run_many fails the whole "
    "batch, so nothing is received or acknowledged anywhere until the node is back",
)
def test_a_node_down_does_not_stop_a_consumer_of_a_queue_on_a_healthy_node(
    mode: str, restartable_cluster: Cluster, prefix: str, request: pytest.FixtureRequest
) -> None:
    """README: on a cluster with a node down, "its queues wait for it". The queues of a consumer
    on the healthy nodes must go on (with cluster-require-full-coverage no, they are served)."""
    cluster = restartable_cluster
    loop = request.getfixturevalue("loop_thread") if mode == "async" else None
    r = Rig(mode, cluster.url, prefix, loop)
    up, down = names_on_every_node(cluster.url, 2)
    qu, qd = r.client.create_queue(up, visibility_timeout=30), r.client.create_queue(down, visibility_timeout=30)
    node = cluster.node_for(qd._keys.meta)
    busy, gate = threading.Event(), threading.Event()
    seen: list[str] = []

    def handler(body: str) -> None:
        if body == "hold":
            busy.set()
            assert gate.wait(60)
        seen.append(body)

    try:
        with cluster.serving_while_a_node_is_down():
            r.start(r.consumer([up, down], r.handler(handler, blocking=True), concurrency=4, shutdown_timeout=1))
            qd.send("hold")
            assert busy.wait(10)
            node.kill()
            gate.set()  # its ack now waits for the node that is down
            until(lambda: seen == ["hold"], timeout=10, what="the held handler to return")
            qu.send("on a healthy node")
            until(lambda: "on a healthy node" in seen, timeout=15, what="the healthy node's message handled")
            until(lambda: qu.stats().deleted_total == 1, timeout=15, what="its ack")
    finally:
        gate.set()
        r.close()
        raw = raw_client(cluster.url)
        drop_keys(raw, prefix)
        raw.close()
