"""Core defects of the correctness sweeps (issue 9: 8-13, issue 17: 9), on every backend.

Each test failed on the main branch before its fix.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import Any

import pytest

import rqueue
from rqueue._protocol.keys import QueueKeys

NON_FINITE = [math.nan, math.inf, -math.inf]


def _stored(raw: Any, prefix: str, name: str) -> int:
    """How many messages the queue ``name`` (or ``name:dlq``) holds, read from its index."""
    return int(raw.zcard(QueueKeys.for_queue(prefix, name).vis))


# ---------------------------------------------------------------- 8: one receive, each message once


def test_zero_visibility_receive_never_returns_a_message_twice(client: Any) -> None:
    """A pass that dead-letters something must not re-read what it delivered at visible-at = now."""
    q = client.create_queue("orders", max_receive_count=2)
    q.send("poison")
    for _ in range(2):
        q.receive(visibility_timeout=0)
    q.send("fresh")
    got = q.receive(10, visibility_timeout=0)
    assert [(m.body, m.receive_count) for m in got] == [("fresh", 1)]
    assert q.stats().dead == 1


def test_zero_visibility_receive_returns_or_dead_letters_never_both(client: Any) -> None:
    q = client.create_queue("orders", max_receive_count=1)
    q.send("poison")
    q.receive(visibility_timeout=0)
    fresh = q.send("fresh")
    (m,) = q.receive(10, visibility_timeout=0)
    assert (m.id, m.receive_count) == (fresh, 1)
    s = q.stats()
    assert (s.dead, s.dead_lettered_total, s.visible) == (1, 1, 1)
    assert [d.body for d in q.dead_letter_queue.receive(10)] == ["poison"]
    assert q.delete(m.receipt) is True


# ---------------------------------------------------------------- 17/9: visible behind due dead letters


def _due_for_the_dlq(q: Any, n: int) -> None:
    """n messages received once (max_receive_count=1) and visible again: the next receive buries them."""
    for i in range(0, n, 1000):
        q.send_batch(list(range(i, min(n, i + 1000))))
        assert len(q.receive(1000, visibility_timeout=0)) == min(1000, n - i)


def test_receive_reaches_a_message_behind_messages_due_for_the_dlq(client: Any) -> None:
    q = client.create_queue("orders", max_receive_count=1)
    _due_for_the_dlq(q, 30)
    q.send("fresh")
    assert [m.body for m in q.receive()] == ["fresh"]
    s = q.stats()
    assert (s.dead, s.visible, s.in_flight) == (30, 0, 1)


def test_receive_beyond_one_scripts_budget_still_returns_in_one_call(client: Any) -> None:
    """More due entries than one script call moves: the client calls again at once, even without a wait."""
    q = client.create_queue("orders", max_receive_count=1)
    _due_for_the_dlq(q, 2500)
    q.send("fresh")
    assert [m.body for m in q.receive(wait_time=0)] == ["fresh"]
    assert q.stats().dead == 2500


# ---------------------------------------------------------------- 9: a lease taken while waiters sleep


def _blpop_clients(raw: Any, key: str) -> int:
    if hasattr(raw, "get_node_from_key"):
        entries = raw.client_list(target_nodes=raw.get_node_from_key(key))
    else:
        entries = raw.client_list()
    return sum(1 for e in entries if e.get("cmd") == "blpop")


def test_long_poll_wakes_when_a_lease_taken_while_it_waited_ends(client: Any, raw: Any) -> None:
    """Two receivers wait on an empty queue; the one the send wakes takes the message and dies
    (no delete). The other must get it when that lease ends, not a whole wait chunk later."""
    q = client.create_queue("orders")
    wake = q._keys.wake
    before = _blpop_clients(raw, wake)
    results: list[tuple[float, list[Any]]] = []
    lock = threading.Lock()

    def waiter() -> None:
        got = q.receive(visibility_timeout=1, wait_time=8)
        with lock:
            results.append((time.monotonic(), got))

    threads = [threading.Thread(target=waiter) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    # Both asleep on an empty queue: registered with the client, and their lane's BLPOP
    # blocked (two waits of one client on one key share one BLPOP).
    while client._waiter.waiting() < 2 or _blpop_clients(raw, wake) < before + 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    q.send("x")
    for t in threads:
        t.join(20)
    (t1, first), (t2, second) = results
    assert [(m.body, m.receive_count) for m in first] == [("x", 1)]
    assert [(m.body, m.receive_count) for m in second] == [("x", 2)]
    assert t1 - t0 < 0.5
    assert 0.9 < t2 - t0 < 3, t2 - t0


# ---------------------------------------------------------------- 10: dead-letter queues take no sends


def test_send_to_a_dead_letter_queue_is_refused(client: Any, raw: Any, prefix: str) -> None:
    q = client.create_queue("orders")
    for dlq in (q.dead_letter_queue, client.queue("orders:dlq")):
        with pytest.raises(rqueue.InvalidParameter, match="dead-letter queue"):
            dlq.send("x")
        with pytest.raises(rqueue.InvalidParameter, match="dead-letter queue"):
            dlq.send_batch(["a", "b"])
    assert _stored(raw, prefix, "orders:dlq") == 0
    assert q.dead_letter_queue.stats().sent_total == 0
    assert q.dead_letter_queue.receive(10) == []


def test_dead_letter_without_a_recorded_reason_is_still_received(client: Any, raw: Any, prefix: str) -> None:
    """An entry of a DLQ without a 'why' record (written by an older version's send to a DLQ)
    is handed back with reason 'unknown', never a raw ValueError after the script hid the batch."""
    q = client.create_queue("orders", max_receive_count=1)
    q.send("real")
    q.receive(visibility_timeout=0)
    q.receive()  # buries 'real' (max_receives)
    dlq = QueueKeys.for_queue(prefix, "orders:dlq")
    now = int(raw.time()[0]) * 1000
    raw.hset(dlq.msgs, "999999", f"{now:013d}sstray")
    raw.zadd(dlq.vis, {"999999": now})
    got = {m.body: m for m in q.dead_letter_queue.receive(10)}
    assert sorted(got) == ["real", "stray"]
    real, stray = got["real"].dead_letter, got["stray"].dead_letter
    assert real is not None and (real.reason, real.detail) == ("max_receives", "1")
    assert stray is not None and (stray.reason, stray.detail, stray.dead_at) == ("unknown", "", now)
    assert stray.source_queue == "orders"
    assert q.dead_letter_queue.delete(got["stray"].receipt)


# ---------------------------------------------------------------- 11: delay up to the retention


def _shrink_retention(raw: Any, prefix: str, name: str, ms: int) -> None:
    # Retention is at least 60 s by contract; shrink the stored value so the test does not
    # sleep a minute. The scripts read it on every call.
    raw.hset(QueueKeys.for_queue(prefix, name).meta, "retention", ms)


def test_delay_equal_to_retention_is_received_then_expires_a_retention_later(
    client: Any, raw: Any, prefix: str
) -> None:
    q = client.create_queue("orders", visibility_timeout=0.05)
    _shrink_retention(raw, prefix, "orders", 600)
    t0 = time.monotonic()
    q.send("x", delay=0.6)
    (m,) = q.receive(wait_time=3)
    assert m.body == "x" and time.monotonic() - t0 >= 0.59
    assert q.stats().dead == 0
    # Its retention runs from when it became visible (sent_at + 600 ms): it may still be received...
    (again,) = q.receive(wait_time=3)
    assert again.id == m.id and again.receive_count == 2
    # ...until a retention after that moment (server time).
    while int(raw.time()[0]) * 1000 + int(raw.time()[1]) // 1000 <= m.sent_at + 1200:
        time.sleep(0.01)
    assert q.receive() == []
    s = q.stats()
    assert (s.dead, s.expired_total) == (1, 1)
    (d,) = q.dead_letter_queue.receive()
    assert d.dead_letter is not None and d.dead_letter.reason == "expired"


def test_queue_whose_delay_equals_its_retention_delivers(client: Any, raw: Any, prefix: str) -> None:
    q = client.create_queue("orders")
    _shrink_retention(raw, prefix, "orders", 300)
    raw.hset(QueueKeys.for_queue(prefix, "orders").meta, "delay", 300)
    q.send_batch(["a", "b"])
    assert sorted(m.body for m in q.receive(10, wait_time=3)) == ["a", "b"]
    assert q.stats().dead == 0


def test_redriven_message_is_not_expired_again_at_once(client: Any, raw: Any, prefix: str) -> None:
    """An expired message moved back by redrive starts a new retention: no ping-pong to the DLQ."""
    q = client.create_queue("orders")
    _shrink_retention(raw, prefix, "orders", 500)
    q.send("old")
    time.sleep(0.55)
    assert q.receive() == []
    assert q.stats().dead == 1
    assert q.redrive() == 1
    (m,) = q.receive()  # within 500 ms of the redrive, though sent over 500 ms ago
    assert m.body == "old" and m.receive_count == 1
    s = q.stats()
    assert (s.dead, s.expired_total, s.in_flight) == (0, 1, 1)


# ---------------------------------------------------------------- 12: NaN and infinities


@dataclasses.dataclass
class Reading:
    value: float


@pytest.mark.parametrize("x", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_not_nulled(client: Any, raw: Any, prefix: str, x: float) -> None:
    q = client.create_queue("orders")
    with pytest.raises(rqueue.InvalidParameter, match="attribute 'v'.*finite"):
        q.send("x", attributes={"v": x})
    for body, where in [
        (x, "body"),
        ({"a": [1, {"b": x}]}, r"body\['a'\]\[1\]\['b'\]"),
        ((1, x), r"body\[1\]"),
        (Reading(x), r"body\.value"),
    ]:
        with pytest.raises(rqueue.InvalidParameter, match=f"{where} must be a finite number"):
            q.send(body)
    q.send_batch([{"n": 1}])
    with pytest.raises(rqueue.InvalidParameter, match=r"bodies\[1\]\['n'\] must be a finite number"):
        q.send_batch([{"n": 2}, {"n": x}])
    assert [m.body for m in q.receive(10)] == [{"n": 1}]  # the refused batch stored nothing


def test_non_finite_reply_is_refused(q: Any) -> None:
    q.send_tracked("x")
    (m,) = q.receive()
    with pytest.raises(rqueue.InvalidParameter, match=r"reply\['r'\] must be a finite number"):
        q.delete(m.receipt, reply={"r": math.nan})
    assert q.delete(m.receipt, reply={"r": 1.5})


def test_null_and_the_word_null_still_round_trip(q: Any) -> None:
    body = {"a": None, "s": "null", "l": [None, 1.5, -0.0, 1e308]}
    q.send(body, attributes={"s": "null", "f": 1e-300})
    (m,) = q.receive()
    assert m.body == body and m.attributes == {"s": "null", "f": 1e-300}


# ---------------------------------------------------------------- 13: lone surrogates


def test_lone_surrogates_are_refused_as_invalid_parameter(q: Any) -> None:
    bad = "abc\ud800"
    with pytest.raises(rqueue.InvalidParameter, match="^body must be valid Unicode text"):
        q.send(bad)
    with pytest.raises(rqueue.InvalidParameter, match=r"^bodies\[1\] must be valid Unicode text"):
        q.send_batch(["ok", bad])
    with pytest.raises(rqueue.InvalidParameter, match="^body must be .* surrogates not allowed"):
        q.send({"k": [bad]})
    with pytest.raises(rqueue.InvalidParameter, match="^attribute 'a' must be valid Unicode text"):
        q.send("x", attributes={"a": bad})
    with pytest.raises(rqueue.InvalidParameter, match="^attribute .* must be valid Unicode text"):
        q.send("x", attributes={bad: "v"})
    assert q.receive(10) == []
    q.send_tracked("x")
    (m,) = q.receive()
    with pytest.raises(rqueue.InvalidParameter, match="^reply must be valid Unicode text"):
        q.delete(m.receipt, reply=bad)
    assert q.delete(m.receipt, reply="fine")
