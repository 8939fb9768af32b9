"""Script cache loss, client clock skew, and several processes on one queue."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from typing import Any

import pytest
import redis

import rqueue
import rqueue.asyncio as rqa
from rqueue._protocol.keys import prefix_pattern


def test_script_cache_flushed_mid_test(client: Any, raw: Any) -> None:
    q = client.create_queue("orders")
    q.send("before")
    flush = raw.script_flush
    flush()  # as after a restart or failover: EVALSHA gets NOSCRIPT
    q.send("after")
    a, b = q.receive(2)
    flush()
    assert q.delete_batch([a.receipt, b.receipt]) == [True, True]
    flush()
    assert q.stats().sent_total == 2


def test_client_clock_hours_off_changes_nothing(client: Any, raw: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    q = client.create_queue("orders", visibility_timeout=0.3)
    real_time, real_ns = time.time, time.time_ns
    monkeypatch.setattr(time, "time", lambda: real_time() + 5 * 3600)
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + 5 * 3600 * 10**9)
    server_ms = int(raw.time()[0]) * 1000
    q.send("later", delay=0.3)
    q.send("now")
    (m,) = q.receive(10)
    assert m.body == "now"
    assert abs(m.sent_at - server_ms) < 60_000  # server time, not the skewed client clock
    assert q.stats().delayed == 1
    got: list[str] = []
    while len(got) < 2:  # both become visible about 0.3 s from now, by server time
        batch = q.receive(10, wait_time=5)
        assert batch
        got.extend(x.body for x in batch)
    assert sorted(got) == ["later", "now"]


def _drain(url: str, prefix: str, out: Any, use_asyncio: bool, start: Any) -> None:
    if use_asyncio:
        asyncio.run(_adrain(url, prefix, out, start))
        return
    c = rqueue.connect(url, prefix=prefix)
    q = c.queue("orders")
    q.stats()  # connected (on Cluster: the slots known) before the barrier
    start.wait(60)  # all four connected before any drains, so the work is shared
    seen: list[str] = []
    while True:
        batch = q.receive(100, wait_time=0.5)
        if not batch:
            break
        seen.extend(m.id for m in batch)
        assert all(q.delete_batch([m.receipt for m in batch]))
    c.close()
    out.put(seen)


async def _adrain(url: str, prefix: str, out: Any, start: Any) -> None:
    async with await rqa.connect(url, prefix=prefix) as c:
        q = c.queue("orders")
        await q.stats()
        await asyncio.to_thread(start.wait, 60)
        seen: list[str] = []
        while batch := await q.receive(100, wait_time=0.5):
            seen.extend(m.id for m in batch)
            assert all(await q.delete_batch([m.receipt for m in batch]))
    out.put(seen)


@pytest.mark.parametrize("backend_url", ["standalone", "cluster"], indirect=True)
def test_four_processes_drain_each_message_exactly_once(backend_url: str, prefix: str, raw: Any) -> None:
    """Two sync and two asyncio processes share the queue; no lease expires meanwhile."""
    client = rqueue.connect(backend_url, prefix=prefix)
    q = client.create_queue("orders", visibility_timeout=120)
    ids: list[str] = []
    for i in range(0, 10_000, 1000):
        ids.extend(q.send_batch([{"n": n} for n in range(i, i + 1000)]))
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_drain, args=(backend_url, prefix, out, i % 2 == 1, start)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    got = [i for r in results for i in r]
    assert len(got) == 10_000
    assert set(got) == set(ids)
    assert sum(1 for r in results if r) >= 2  # the work really was shared
    s = q.stats()
    assert (s.received_total, s.deleted_total, s.visible, s.in_flight) == (10_000, 10_000, 0, 0)
    client.close()


def test_a_cancelled_wait_ends_at_once_even_if_a_library_swallowed_the_cancellation(
    backend_url: str, prefix: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's wait_for (redis-py sends through it) swallows a cancellation that lands just
    as the send finishes; the wait must still end, not sleep its whole timeout (a stopping
    asyncio consumer hung 10 s that way)."""
    from redis.asyncio.connection import AbstractConnection

    send = AbstractConnection.send_packed_command
    swallowed: list[bool] = []

    async def send_swallowing_a_cancel(self: Any, command: Any, check_health: bool = True) -> None:
        try:
            await asyncio.sleep(0.2)  # the cancellation lands here...
        except asyncio.CancelledError:
            swallowed.append(True)  # ...and is lost, as in wait_for when its inner send is done
        await send(self, command, check_health)

    async def go() -> float:
        async with await rqa.connect(backend_url, prefix=prefix) as c:
            q = await c.create_queue("idle")
            monkeypatch.setattr(AbstractConnection, "send_packed_command", send_swallowing_a_cancel)
            waiting = asyncio.ensure_future(c.wait(q._keys.wake, 5))
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            took = time.monotonic() - t0
            monkeypatch.undo()
            return took

    took = asyncio.run(go())
    assert swallowed == [True]
    assert took < 1.0


def test_closing_right_after_a_cancelled_wait_leaves_no_connection_open(server_url: str, prefix: str) -> None:
    """A cancelled wait hands its token on in the background; aclose() lets that finish first,
    or it would open a connection again after the close (and leak it)."""
    raw = redis.Redis.from_url(server_url)

    def connections() -> int:
        return sum(1 for c in raw.client_list() if c["name"] == prefix)

    async def go() -> int:
        c = await rqa.connect(server_url, prefix=prefix, client_name=prefix)
        q = await c.create_queue("idle")
        waiting = asyncio.ensure_future(c.wait(q._keys.wake, 5))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await c.aclose()
        await asyncio.sleep(0.3)  # a hand-on still under way would reconnect now
        return connections()

    try:
        assert asyncio.run(go()) == 0
    finally:
        for key in list(raw.scan_iter(match=prefix_pattern(prefix))):
            raw.unlink(key)
        raw.close()
