"""SPEC §4: receive, visibility, delay, long polling with instant wake-up."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest


def test_receive_hides_for_the_visibility_timeout(client: Any) -> None:
    q = client.create_queue("orders", visibility_timeout=0.3)
    q.send("x")
    (m,) = q.receive()
    assert q.receive() == []
    s = q.stats()
    assert (s.visible, s.in_flight, s.delayed) == (0, 1, 0)
    (again,) = q.receive(wait_time=5)
    assert again.id == m.id and again.receive_count == 2


def test_receive_visibility_override(q: Any) -> None:
    q.send("x")
    q.receive(visibility_timeout=0)
    (m,) = q.receive(visibility_timeout=60)
    assert q.receive() == []
    assert q.change_visibility(m.receipt, 0)
    assert [x.id for x in q.receive()] == [m.id]


def test_max_messages(q: Any) -> None:
    q.send_batch(list(range(30)))
    assert len(q.receive(1)) == 1
    assert len(q.receive(10)) == 10
    assert len(q.receive(1000)) == 19
    assert q.receive(1000) == []


def test_delay_per_message_and_queue_default(client: Any) -> None:
    q = client.create_queue("delayed", delay=0.4)
    q.send("queue default")
    q.send("now", delay=0)
    s = q.stats()
    assert (s.visible, s.delayed, s.in_flight) == (1, 1, 0)
    assert [m.body for m in q.receive(10)] == ["now"]
    t0 = time.monotonic()
    (m,) = q.receive(wait_time=5)
    assert m.body == "queue default"
    assert time.monotonic() - t0 < 1.5


def test_change_visibility_batch(q: Any) -> None:
    q.send_batch(["a", "b"])
    a, b = q.receive(2)
    assert q.change_visibility_batch([a.receipt, b.receipt, "1.1"], 0) == [True, True, False]
    assert sorted(m.body for m in q.receive(2)) == ["a", "b"]


def test_change_visibility_extends(client: Any) -> None:
    q = client.create_queue("orders", visibility_timeout=0.2)
    q.send("x")
    (m,) = q.receive()
    assert q.change_visibility(m.receipt, 60)
    assert q.receive(wait_time=0.5) == []
    assert q.stats().in_flight == 1


def test_long_poll_wakes_on_send(q: Any) -> None:
    got: list[Any] = []
    returned = threading.Event()

    def receiver() -> None:
        got.extend(q.receive(wait_time=30))
        returned.set()

    t = threading.Thread(target=receiver)
    t.start()
    assert not returned.wait(0.2)  # blocked: nothing to receive yet
    sent = time.monotonic()
    q.send("wake")
    assert returned.wait(10)
    latency = time.monotonic() - sent
    t.join()
    assert [m.body for m in got] == ["wake"]
    assert latency < 1.0  # far below wait_time: woken by the send, not a timeout


@pytest.mark.parametrize("how", ["delay", "visibility"])
def test_long_poll_wakes_when_hidden_message_becomes_visible(client: Any, how: str) -> None:
    q = client.create_queue("orders", visibility_timeout=0.35)
    if how == "delay":
        q.send("x", delay=0.35)
    else:
        q.send("x")
        q.receive()
    t0 = time.monotonic()
    (m,) = q.receive(wait_time=20)
    elapsed = time.monotonic() - t0
    assert m.body == "x"
    # The server's own BLPOP timeout ticks every 100 ms; returning well inside
    # that shows the waiter was released at the visible-at moment itself.
    assert elapsed < 0.35 + 0.08, elapsed


def test_long_poll_times_out_empty(q: Any) -> None:
    t0 = time.monotonic()
    assert q.receive(wait_time=0.3) == []
    assert 0.28 <= time.monotonic() - t0 < 2


def test_many_waiters_all_served_by_one_batch(connect: Any) -> None:
    q = connect().create_queue("orders")
    sender = connect().queue("orders")
    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(q.receive, 100, wait_time=30) for _ in range(5)]
        time.sleep(0.2)  # let them block; correctness does not depend on it
        sender.send_batch(list(range(500)))
        results = [f.result(timeout=30) for f in futures]
    assert [len(r) for r in results] == [100] * 5
    assert sorted(m.body for r in results for m in r) == list(range(500))


def test_blocking_receive_does_not_stall_other_calls(q: Any) -> None:
    done = threading.Event()

    def waiter() -> None:
        q.receive(wait_time=3)
        done.set()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    for _ in range(20):
        q.stats()
    assert time.monotonic() - t0 < 1.0
    assert not done.is_set()
    q.send("release")
    assert done.wait(10)
    t.join()


def test_wait_longer_than_socket_timeout(connect: Any) -> None:
    c = connect(socket_timeout=0.3)
    q = c.create_queue("orders")
    other = connect().queue("orders")
    timer = threading.Timer(1.0, lambda: other.send("late"))
    timer.start()
    (m,) = q.receive(wait_time=10)
    timer.join()
    assert m.body == "late"


def test_long_poll_wakes_when_a_lease_is_shortened(connect: Any) -> None:
    """A waiter sleeping until a far-off lease end is woken when it is shortened."""
    q = connect().create_queue("orders", visibility_timeout=60)
    q.send("x")
    (m,) = q.receive()
    other = connect().queue("orders")
    timer = threading.Timer(0.3, lambda: other.change_visibility(m.receipt, 0.2))
    timer.start()
    t0 = time.monotonic()
    (again,) = q.receive(wait_time=30)
    timer.join()
    assert again.id == m.id
    assert time.monotonic() - t0 < 0.5 + 0.08


class Interrupted(Exception):
    pass


def test_interrupted_waiter_hands_its_wake_up_on(server_url: str, prefix: str) -> None:
    """A waiter that took a send's wake-up token and then leaves must pass it on."""
    import rqueue

    c = rqueue.connect(server_url, prefix=prefix)
    raw = c.redis
    q = c.create_queue("orders")
    wake = q._keys.wake
    raw.delete(wake)
    raw.rpush(wake, 1)  # a send's token, waiting for a receiver

    def interrupt(unblock: Any) -> None:  # called once the wait is registered: its lane may pop the token
        raise Interrupted

    with pytest.raises(Interrupted):
        c.wait(wake, 5, on_block=interrupt)
    deadline = time.monotonic() + 5  # handed on by the waiter, or by its lane if it popped it later
    while raw.llen(wake) != 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert raw.llen(wake) == 1
    c.delete_queue("orders")
    c.close()


def test_cancelled_async_waiter_hands_its_wake_up_on(
    server_url: str, prefix: str, loop_thread: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import rqueue.asyncio as rqa
    from rqueue._async.waiter import AsyncWaiter

    real = AsyncWaiter.result

    async def popped_then_cancelled(self: AsyncWaiter, w: Any, timeout: float) -> Any:
        assert await real(self, w, timeout) is not None  # took the token...
        raise asyncio.CancelledError  # ...and was cancelled before using it

    monkeypatch.setattr(AsyncWaiter, "result", popped_then_cancelled)

    async def scenario() -> None:
        c = await rqa.connect(server_url, prefix=prefix)
        q = await c.create_queue("orders")
        wake = q._keys.wake
        await c.redis.delete(wake)
        await c.redis.rpush(wake, 1)
        with pytest.raises(asyncio.CancelledError):
            await c.wait(wake, 5)
        for _ in range(500):  # handed on in the background
            if await c.redis.llen(wake) == 1:
                break
            await asyncio.sleep(0.01)
        assert await c.redis.llen(wake) == 1
        await c.delete_queue("orders")
        await c.aclose()

    loop_thread.run(scenario())
