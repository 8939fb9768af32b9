"""SPEC 9: ``q.pause()`` / ``q.resume()``. While paused, sends are accepted and receives hand
out nothing (long polls keep waiting); a resume wakes waiting receivers at once; ``stats().paused``
tells. Sync and asyncio, on every backend."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import rqueue


def test_paused_queue_accepts_sends_and_hands_out_nothing(client: Any) -> None:
    q = client.create_queue("orders")
    q.send("before")
    q.pause()
    q.pause()  # again: no change, no error
    assert q.send("while paused")
    assert q.receive(10) == []
    s = q.stats()
    assert (s.paused, s.visible, s.in_flight, s.received_total) == (True, 2, 0, 0)
    q.resume()
    q.resume()
    assert q.stats().paused is False
    assert sorted(m.body for m in q.receive(10)) == ["before", "while paused"]


def test_resume_wakes_a_long_poll_that_waited_through_the_pause(q: Any) -> None:
    q.pause()
    got: list[Any] = []
    returned = threading.Event()

    def receiver() -> None:
        got.extend(q.receive(wait_time=30))
        returned.set()

    t = threading.Thread(target=receiver)
    t.start()
    q.send("held back")  # wakes the waiter, which finds the queue paused and waits on
    assert not returned.wait(0.3)
    resumed = time.monotonic()
    q.resume()
    assert returned.wait(10)
    latency = time.monotonic() - resumed
    t.join()
    assert [m.body for m in got] == ["held back"]
    assert latency < 5.0  # far below wait_time: woken by the resume, not a timeout


def test_a_paused_queue_receives_nothing_that_becomes_visible_meanwhile(client: Any) -> None:
    q = client.create_queue("orders", visibility_timeout=0.05)
    q.send("x")
    (m,) = q.receive()
    q.pause()
    assert q.receive(wait_time=0.3) == []  # its lease ended meanwhile: still nothing
    q.resume()
    (again,) = q.receive(wait_time=5)
    assert (again.id, again.receive_count) == (m.id, 2)


def test_pause_and_resume_of_a_queue_that_does_not_exist(client: Any) -> None:
    with pytest.raises(rqueue.QueueDoesNotExist):
        client.queue("ghost").pause()
    with pytest.raises(rqueue.QueueDoesNotExist):
        client.queue("ghost").resume()


def test_pausing_a_queue_leaves_its_dead_letter_queue_alone(client: Any) -> None:
    q = client.create_queue("orders")
    q.send("x")
    (m,) = q.receive()
    assert q.reject(m.receipt, "bad")
    q.pause()
    (dead,) = q.dead_letter_queue.receive()
    assert dead.id == m.id and q.dead_letter_queue.stats().paused is False


def test_a_consumer_takes_nothing_while_paused_and_everything_after(client: Any) -> None:
    q = client.create_queue("orders", visibility_timeout=30)
    q.pause()
    q.send_batch(["a", "b", "c"])
    seen: list[str] = []
    done = threading.Event()

    def handler(body: str) -> None:
        seen.append(body)
        if len(seen) == 3:
            done.set()

    sync_q = rqueue.connect(client.url, prefix=client.prefix).queue("orders")
    try:
        with rqueue.Consumer(sync_q, handler, concurrency=4):
            assert not done.wait(0.3)
            assert q.stats().received_total == 0
            q.resume()
            assert done.wait(10)
        assert sorted(seen) == ["a", "b", "c"]
    finally:
        sync_q.client.close()
