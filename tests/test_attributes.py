"""SPEC 9-10: every queue attribute is stored in Redis, compared by create_queue, and changed
live by ``q.set_attributes``; bad values name the attribute and its range and change nothing.
Sync and asyncio, on every backend."""

from __future__ import annotations

import time
from typing import Any

import pytest

import rqueue
from rqueue import QueueAttributes

NEW = {
    "deduplication_window": 60,
    "fifo": True,
    "content_based_deduplication": True,
    "rate_limit": 2.5,
    "max_in_flight": 7,
}


def test_a_queue_stores_every_attribute(client: Any) -> None:
    q = client.create_queue("orders", visibility_timeout=12, max_receive_count=3, **NEW)
    assert q.attributes() == QueueAttributes(12.0, 0.0, 4 * 86400.0, 256 * 1024, 3, 60.0, True, True, 2.5, 7)
    assert client.queue("orders").stats().attributes == q.attributes()
    plain = client.create_queue("plain")
    assert plain.attributes() == QueueAttributes(30.0, 0.0, 4 * 86400.0, 256 * 1024, None)
    assert (plain.attributes().deduplication_window, plain.attributes().rate_limit) == (300.0, None)


@pytest.mark.parametrize(("name", "value"), list(NEW.items()))
def test_create_queue_with_another_new_attribute_raises_and_names_it(client: Any, name: str, value: Any) -> None:
    client.create_queue("orders")
    with pytest.raises(rqueue.QueueAlreadyExists, match=f"{name}="):
        client.create_queue("orders", **{name: value})
    assert client.create_queue("orders").attributes() == QueueAttributes(30.0, 0.0, 4 * 86400.0, 256 * 1024, None)


def test_create_queue_again_with_the_same_new_attributes_is_a_no_op(client: Any) -> None:
    a = client.create_queue("orders", **NEW).attributes()
    assert client.create_queue("orders", **NEW).attributes() == a


def test_set_attributes_changes_a_live_queue_for_every_handle(client: Any) -> None:
    q = client.create_queue("orders", max_receive_count=3)
    other = client.queue("orders")
    new = q.set_attributes(visibility_timeout=5, rate_limit=100, max_in_flight=50, deduplication_window=3600)
    assert new == QueueAttributes(5.0, 0.0, 4 * 86400.0, 256 * 1024, 3, 3600.0, False, False, 100.0, 50)
    assert other.attributes() == new
    back = q.set_attributes(rate_limit=None, max_in_flight=None, max_receive_count=None)
    assert (back.rate_limit, back.max_in_flight, back.max_receive_count, back.visibility_timeout) == (
        None,
        None,
        None,
        5.0,
    )
    # the new visibility timeout applies to the next receive
    q.send("x")
    before = time.time()
    (m,) = q.receive()
    assert q.receive() == []
    assert q.change_visibility(m.receipt, 0)
    assert time.time() - before < 5


def test_set_attributes_is_what_create_queue_then_compares(client: Any) -> None:
    q = client.create_queue("orders")
    q.set_attributes(max_in_flight=3)
    with pytest.raises(rqueue.QueueAlreadyExists, match="max_in_flight=3"):
        client.create_queue("orders")
    assert client.create_queue("orders", max_in_flight=3).attributes().max_in_flight == 3


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"visibility_timeout": -1}, "visibility_timeout must be from 0 to 43200 seconds"),
        ({"visibility_timeout": 43201}, "visibility_timeout"),
        ({"retention": 59}, "retention must be from 60"),
        ({"delay": 5000}, "delay must be between 0 and the queue's retention (3600 s), got 5000 s"),
        ({"max_message_size": 0}, "max_message_size must be an integer from 1 to 16777216"),
        ({"max_receive_count": 0}, "max_receive_count must be an integer from 1 to 1000"),
        ({"max_receive_count": 2.5}, "max_receive_count"),
        ({"deduplication_window": 0.5}, "deduplication_window must be from 1 to 604800 seconds"),
        ({"deduplication_window": 7 * 86400 + 1}, "deduplication_window"),
        ({"rate_limit": 0}, "rate_limit must be None (off) or a number > 0"),
        ({"rate_limit": -3}, "rate_limit"),
        ({"rate_limit": float("nan")}, "rate_limit"),
        ({"rate_limit": float("inf")}, "rate_limit"),
        ({"rate_limit": 10**7}, "rate_limit must be from 0 to 1e+06"),
        ({"rate_limit": 1e-9}, "rate_limit must be at least 0.000001"),
        ({"rate_limit": "5"}, "rate_limit must be a number"),
        ({"max_in_flight": 0}, "max_in_flight must be an integer from 1 to 1000000000"),
        ({"max_in_flight": True}, "max_in_flight"),
        ({"content_based_deduplication": 1}, "content_based_deduplication must be True or False"),
        ({"fifo": True}, "fifo cannot change"),
        ({"fifo": False}, "fifo cannot change"),
        ({"colour": "red"}, "unknown queue attribute 'colour'"),
        ({}, "at least one change"),
        # a good change beside a bad one: neither is made
        ({"visibility_timeout": 1, "max_in_flight": -1}, "max_in_flight"),
    ],
)
def test_bad_changes_name_the_attribute_and_change_nothing(client: Any, changes: dict[str, Any], needle: str) -> None:
    q = client.create_queue("orders", retention=3600, rate_limit=4)
    before = q.attributes()
    with pytest.raises(rqueue.InvalidParameter) as e:
        q.set_attributes(**changes)
    assert needle in str(e.value)
    assert q.attributes() == before


def test_set_attributes_on_a_missing_queue_raises(client: Any) -> None:
    with pytest.raises(rqueue.QueueDoesNotExist):
        client.queue("nope").set_attributes(rate_limit=1)
    assert "nope" not in client.list_queues()


def test_a_dead_letter_queue_takes_limits_but_not_dead_lettering(client: Any) -> None:
    q = client.create_queue("orders", max_receive_count=2)
    dlq = q.dead_letter_queue
    assert dlq.set_attributes(visibility_timeout=3, max_in_flight=2).max_in_flight == 2
    with pytest.raises(rqueue.InvalidParameter, match="max_receive_count"):
        dlq.set_attributes(max_receive_count=4)
    assert dlq.attributes().max_receive_count is None
    assert q.attributes().max_in_flight is None  # the source queue is its own


def test_bad_create_queue_attributes_store_nothing(client: Any) -> None:
    for bad in ({"rate_limit": 0}, {"max_in_flight": 0}, {"deduplication_window": 0}, {"fifo": "yes"}):
        with pytest.raises(rqueue.InvalidParameter):
            client.create_queue("orders", **bad)
    assert client.list_queues() == []
    with pytest.raises(rqueue.QueueDoesNotExist):
        client.queue("orders").stats()


def test_a_subscription_takes_the_new_attributes_but_not_fifo(client: Any) -> None:
    t = client.topic("events")
    s = t.subscribe("billing", rate_limit=10, max_in_flight=3, deduplication_window=30)
    a = s.attributes()
    assert (a.rate_limit, a.max_in_flight, a.deduplication_window, a.fifo) == (10.0, 3, 30.0, False)
    t.subscribe("billing", rate_limit=10, max_in_flight=3, deduplication_window=30)  # refresh: same
    with pytest.raises(rqueue.QueueAlreadyExists, match="rate_limit=10"):
        t.subscribe("billing")
    assert [i.name for i in t.subscriptions()] == ["billing"]
