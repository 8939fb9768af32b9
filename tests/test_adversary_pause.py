"""Adversarial tests for pause/resume (SPEC 9, commit 224bfe0), now regression tests: the
defect below is fixed (a paused receive tells waiters when the next hidden message becomes
visible, so each one's timer is right after a resume whoever took the resume's wake-up).

Defect A (fixed) (lua/receive.lua:81-83, with rqueue/_protocol/operations.py:215 and
rqueue/_consumer/control.py:222): while paused, receive.lua returns next_ms -1 even when a
message is delayed or leased and will become visible at a known time, so every waiter then
sleeps a whole WAIT_CHUNK (10 s) on the wake list instead of until that time. resume
(lua/pause.lua:27) pushes a single wake-up; only the waiter that pops it learns the real
next_ms. If that waiter gives up (a short long poll) or is busy when the next hidden message
becomes visible, every other waiter idles for up to 10 s while a message waits, though SPEC
says resume wakes them at once. Without the pause the same waiters get the message on time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import rqueue


def _bg(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        out.append(fn())
        out.append(time.monotonic())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


@pytest.mark.parametrize("hidden", ["delayed", "leased"])
def test_after_resume_a_waiter_sleeps_through_a_message_becoming_visible(lib: rqueue.Client, hidden: str) -> None:
    q = lib.create_queue("orders", visibility_timeout=30)
    t0 = time.monotonic()
    if hidden == "delayed":
        q.pause()
        q.send("later", delay=2.0)  # its wake-up stays in the list: nobody waits yet
    else:
        q.send("later")
        (_m,) = q.receive(visibility_timeout=2.0)  # visible again at t0 + 2 s
        q.pause()
        q.send("wake")  # leaves a wake-up in the list, like any send while paused
        q.send("filler", delay=60)  # keeps the wake-up check identical to the delayed case
    short_t, short = _bg(lambda: q.receive(wait_time=1.0))  # first waiter on the wake list
    time.sleep(0.3)
    long_t, long_ = _bg(lambda: q.receive(wait_time=30, max_messages=10))
    time.sleep(0.3)
    q.resume()  # one wake-up: the short waiter takes it, sees 'later' is 1.4 s off, and gives up
    short_t.join(10)
    long_t.join(15)
    if hidden == "leased":  # the short waiter got the 'wake' message; the long one must get 'later'
        assert [m.body for m in short[0]] == ["wake"]
    else:
        assert short[0] == []
    assert "later" in [m.body for m in long_[0]]
    # 'later' is visible at t0 + 2 s; the long poll should have it well before its 10 s chunk
    assert long_[1] - t0 < 5, f"long poll returned after {long_[1] - t0:.1f} s"


def test_after_resume_an_idle_consumer_leaves_a_visible_message_waiting(
    server_url: str, prefix: str, lib: rqueue.Client
) -> None:
    q = lib.create_queue("orders", visibility_timeout=30)
    q.pause()
    starts: dict[str, float] = {}
    release = threading.Event()

    def handler(body: str) -> None:
        starts[body] = time.monotonic()
        release.wait(15)

    clients = [rqueue.connect(server_url, prefix=prefix) for _ in range(2)]
    consumers = [rqueue.Consumer(c.queue("orders"), handler, concurrency=1) for c in clients]
    try:
        for c in consumers:
            c.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        q.send("first", delay=1.0)
        q.send("second", delay=2.0)
        time.sleep(0.3)
        q.resume()
        time.sleep(4)  # without the pause: 'first' starts at 1 s on one consumer, 'second' at 2 s on the other
        got = {k: round(v - t0, 1) for k, v in starts.items()}
    finally:
        release.set()
        for c in consumers:
            c.stop()
        for cl in clients:
            cl.close()
    assert set(got) == {"first", "second"}, f"started: {got}"
