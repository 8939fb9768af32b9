"""SPEC §3: bodies, attributes, sizes, message fields and receipts."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

import rqueue


@dataclasses.dataclass
class Order:
    id: int
    items: list[str]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("héllo", "héllo"),
        ("", ""),
        (b"\x00\xffraw", b"\x00\xffraw"),
        (b"", b""),
        ({"a": 1, "b": [1.5, None, True]}, {"a": 1, "b": [1.5, None, True]}),
        ([1, 2, 3], [1, 2, 3]),
        (42, 42),
        (None, None),
        (Order(7, ["x"]), {"id": 7, "items": ["x"]}),
    ],
)
def test_body_kinds_round_trip(q: Any, body: Any, expected: Any) -> None:
    q.send(body)
    (m,) = q.receive()
    assert m.body == expected
    assert type(m.body) is type(expected)


def test_attributes_round_trip(q: Any) -> None:
    attrs = {"type": "order.created", "n": 3, "f": 2.5, "blob": b"\x01\x02", "colon:and|pipe": "a:b|c"}
    q.send({"x": 1}, attributes=attrs)
    q.send("no attributes")
    first, second = q.receive(2)
    assert first.attributes == attrs
    assert second.attributes == {}


def test_message_fields_use_server_time(q: Any, raw: Any) -> None:
    before = int(raw.time()[0]) * 1000
    mid = q.send("x")
    (m,) = q.receive()
    after = int(raw.time()[0]) * 1000 + 1000
    assert m.id == mid
    assert m.receive_count == 1
    assert before <= m.sent_at <= m.first_received_at <= after
    assert m.queue == "orders"
    assert m.dead_letter is None


def test_receive_count_and_first_received_at(q: Any) -> None:
    q.send("x")
    (m1,) = q.receive()
    assert q.change_visibility(m1.receipt, 0)
    (m2,) = q.receive()
    assert m2.id == m1.id
    assert m2.receive_count == 2
    assert m2.first_received_at == m1.first_received_at
    assert m2.receipt != m1.receipt


def test_size_limit_is_exact(client: Any, raw: Any, prefix: str) -> None:
    q = client.create_queue("small", max_message_size=100)
    q.send("x" * 100)
    attrs = {"k": "v"}  # encodes as {"k":"v"}: 9 bytes
    q.send("y" * 91, attributes=attrs)
    with pytest.raises(rqueue.MessageTooLarge, match="101 bytes.*max_message_size of 100"):
        q.send("x" * 101)
    with pytest.raises(rqueue.MessageTooLarge, match="101 bytes"):
        q.send("y" * 92, attributes=attrs)
    assert q.stats().visible == 2


def test_oversized_message_in_a_batch_stores_nothing(client: Any) -> None:
    q = client.create_queue("small", max_message_size=10)
    with pytest.raises(rqueue.MessageTooLarge, match="message 2 of the batch"):
        q.send_batch(["ok", "fine", "x" * 11, "ok"])
    s = q.stats()
    assert (s.visible, s.sent_total) == (0, 0)


def test_stale_receipt_cannot_delete_or_change(q: Any) -> None:
    q.send("x")
    (old,) = q.receive(visibility_timeout=0)
    (new,) = q.receive()
    assert q.delete(old.receipt) is False
    assert q.change_visibility(old.receipt, 0) is False
    assert q.stats().in_flight == 1
    assert q.delete(new.receipt) is True
    assert q.delete(new.receipt) is False
    assert q.stats().visible + q.stats().in_flight == 0


def test_latest_receipt_works_after_its_timeout_if_nobody_took_it(q: Any) -> None:
    q.send("x")
    (m,) = q.receive(visibility_timeout=0)
    assert q.delete(m.receipt) is True


def test_delete_batch_reports_each(q: Any) -> None:
    q.send_batch(["a", "b", "c"])
    a, b, c = q.receive(3)
    assert q.delete_batch([a.receipt, "999.999", c.receipt, a.receipt]) == [True, False, True, False]
    assert q.stats().in_flight == 1
    assert q.receive() == []
    assert q.delete(b.receipt)


def test_receipt_of_another_queue_changes_nothing(client: Any) -> None:
    a = client.create_queue("a")
    b = client.create_queue("b")
    a.send("x")
    b.send("y")
    (ma,) = a.receive()
    assert b.delete(ma.receipt) is False
    assert a.delete(ma.receipt) is True


def test_send_returns_ids_in_order(q: Any) -> None:
    ids = q.send_batch([str(i) for i in range(50)])
    assert len(set(ids)) == 50
    got = q.receive(50)
    assert [m.id for m in got] == ids
    assert [m.body for m in got] == [str(i) for i in range(50)]


def test_oldest_first_across_sends(q: Any) -> None:
    first = q.send("first")
    time.sleep(0.002)
    q.send_batch(["second", "third"])
    assert [m.body for m in q.receive(3)] == ["first", "second", "third"]
    assert q.receive() == []
    assert first
