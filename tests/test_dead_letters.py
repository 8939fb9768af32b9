"""SPEC §2, §4: dead-letter queues, retention, purge, stats, redrive."""

from __future__ import annotations

import time
from typing import Any

import pytest

import rqueue
from rqueue._protocol.keys import QueueKeys


def test_max_receive_count_dead_letters_atomically(client: Any) -> None:
    q = client.create_queue("orders", max_receive_count=2)
    mid = q.send({"n": 1}, attributes={"type": "t"})
    for expected in (1, 2):
        (m,) = q.receive(visibility_timeout=0)
        assert m.receive_count == expected
    assert q.receive() == []  # third receive would exceed: dead-lettered instead
    s = q.stats()
    assert (s.visible, s.in_flight, s.dead, s.dead_lettered_total) == (0, 0, 1, 1)
    (d,) = q.dead_letter_queue.receive()
    assert (d.id, d.body, d.attributes, d.receive_count) == (mid, {"n": 1}, {"type": "t"}, 1)
    assert d.dead_letter is not None
    assert (d.dead_letter.reason, d.dead_letter.detail, d.dead_letter.source_queue) == ("max_receives", "2", "orders")
    assert d.sent_at == m.sent_at
    assert q.dead_letter_queue.delete(d.receipt)
    assert q.stats().dead == 0


def test_receive_skips_dead_letters_and_still_fills_the_batch(client: Any) -> None:
    q = client.create_queue("orders", max_receive_count=1)
    q.send("poison")
    q.receive(visibility_timeout=0)
    q.send_batch(["a", "b"])
    assert [m.body for m in q.receive(2)] == ["a", "b"]
    assert q.stats().dead == 1


def test_reject_dead_letters_now_with_reason(q: Any) -> None:
    q.send("bad")
    (m,) = q.receive()
    assert q.reject(m.receipt, "ValueError: no | good") is True
    assert q.reject(m.receipt, "again") is False
    (d,) = q.dead_letter_queue.receive()
    assert d.dead_letter is not None
    assert (d.dead_letter.reason, d.dead_letter.detail) == ("rejected", "ValueError: no | good")
    assert q.stats().dead_lettered_total == 1


def test_redrive_moves_back_with_count_zero_but_not_in_flight(client: Any) -> None:
    q = client.create_queue("orders", max_receive_count=1)
    ids = q.send_batch(["a", "b", "c"])
    for m in q.receive(3):
        q.reject(m.receipt, "r")
    dlq = q.dead_letter_queue
    (held,) = dlq.receive(1)  # in flight in the DLQ: stays
    assert q.redrive() == 2
    back = q.receive(10)
    assert sorted(m.id for m in back) == sorted(i for i in ids if i != held.id)
    assert all(m.receive_count == 1 for m in back)
    assert q.stats().dead == 1
    assert dlq.delete(held.receipt)


def test_redrive_many(client: Any) -> None:
    q = client.create_queue("orders")
    for _ in range(3):
        q.send_batch(list(range(1000)))
    for _ in range(3):
        q.reject_batch([m.receipt for m in q.receive(1000)], "r")
    assert q.stats().dead == 3000
    assert q.redrive() == 3000
    assert q.stats().visible == 3000


def _age_queue(raw: Any, prefix: str, name: str, retention_ms: int) -> None:
    # Retention is at least 60 s by contract; shrink the stored value so the
    # test does not sleep a minute. The scripts read it on every call.
    raw.hset(QueueKeys.for_queue(prefix, name).meta, "retention", retention_ms)


def test_expired_messages_move_to_dead_letters_and_are_counted(client: Any, raw: Any, prefix: str) -> None:
    q = client.create_queue("orders")
    q.send("old")
    _age_queue(raw, prefix, "orders", 50)
    time.sleep(0.1)
    q.send("fresh")
    assert [m.body for m in q.receive(10)] == ["fresh"]
    s = q.stats()
    assert (s.expired_total, s.dead) == (1, 1)
    (d,) = q.dead_letter_queue.receive()
    assert d.body == "old"
    assert d.dead_letter is not None and d.dead_letter.reason == "expired"


def test_dead_letters_expire_from_their_death(client: Any, raw: Any, prefix: str) -> None:
    q = client.create_queue("orders")
    q.send("x")
    (m,) = q.receive()
    q.reject(m.receipt, "r")
    raw.hset(QueueKeys.for_queue(prefix, "orders:dlq").meta, "retention", 50)
    time.sleep(0.1)
    dlq = q.dead_letter_queue
    assert dlq.receive() == []
    assert dlq.stats().expired_total == 1
    assert q.stats().dead == 0


def test_stats_counts_exactly(client: Any) -> None:
    q = client.create_queue("orders", max_receive_count=5)
    q.send_batch(["a", "b", "c", "d"])
    q.send("later", delay=60)
    a, b = q.receive(2)
    q.delete(a.receipt)
    q.change_visibility(b.receipt, 0)  # received before, visible again: not in flight
    (c,) = q.receive(1)
    q.reject(c.receipt, "r")
    s = q.stats()
    assert (s.visible, s.in_flight, s.delayed, s.dead) == (2, 0, 1, 1)
    assert (s.sent_total, s.received_total, s.deleted_total, s.dead_lettered_total, s.expired_total) == (5, 3, 1, 1, 0)
    assert 0 <= s.oldest_age < 5


def test_oldest_age_grows(q: Any) -> None:
    assert q.stats().oldest_age == 0.0
    q.send("x")
    time.sleep(0.05)
    assert q.stats().oldest_age >= 0.04


def test_purge(client: Any) -> None:
    q = client.create_queue("orders", max_receive_count=1)
    q.send_batch(["a", "b", "c"])
    (m,) = q.receive()
    q.reject(m.receipt, "r")
    q.receive()
    assert q.purge() == 2
    s = q.stats()
    assert (s.visible, s.in_flight, s.dead, s.sent_total) == (0, 0, 1, 3)
    assert q.dead_letter_queue.purge() == 1
    assert q.stats().dead == 0
    q.send("after")
    assert [x.body for x in q.receive()] == ["after"]


def test_dead_letter_queue_cannot_dead_letter_or_redrive(q: Any) -> None:
    dlq = q.dead_letter_queue
    with pytest.raises(rqueue.InvalidParameter):
        dlq.redrive()
    with pytest.raises(rqueue.InvalidParameter):
        dlq.reject("1.1")
