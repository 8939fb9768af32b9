"""SPEC §2: creating, finding, listing and deleting queues."""

from __future__ import annotations

from typing import Any

import pytest

import rqueue
from rqueue._protocol.keys import QueueKeys

from .conftest import stored_keys


def test_create_queue_defaults(client: Any) -> None:
    q = client.create_queue("orders")
    a = q.attributes()
    assert (a.visibility_timeout, a.delay, a.retention, a.max_message_size, a.max_receive_count) == (
        30.0,
        0.0,
        4 * 86400.0,
        256 * 1024,
        None,
    )


def test_attributes_are_stored_in_redis_for_every_host(connect: Any) -> None:
    first, second = connect(), connect()
    first.create_queue(
        "jobs", visibility_timeout=12.5, delay=2, retention=3600, max_message_size=1024, max_receive_count=3
    )
    a = second.queue("jobs").attributes()
    assert (a.visibility_timeout, a.delay, a.retention, a.max_message_size, a.max_receive_count) == (
        12.5,
        2.0,
        3600.0,
        1024,
        3,
    )


def test_create_same_attributes_is_a_noop(client: Any) -> None:
    q = client.create_queue("orders", visibility_timeout=5, max_receive_count=2)
    q.send("kept")
    again = client.create_queue("orders", visibility_timeout=5, max_receive_count=2)
    assert again.stats().visible == 1


@pytest.mark.parametrize(
    "changed",
    [
        {"visibility_timeout": 6},
        {"delay": 1},
        {"retention": 7200},
        {"max_message_size": 10},
        {"max_receive_count": 3},
        {"max_receive_count": None},
    ],
)
def test_create_with_other_attributes_raises(client: Any, changed: dict[str, Any]) -> None:
    base = {"visibility_timeout": 5, "delay": 0, "retention": 3600, "max_message_size": 100, "max_receive_count": 2}
    client.create_queue("orders", **base)
    with pytest.raises(rqueue.QueueAlreadyExists, match="already exists"):
        client.create_queue("orders", **{**base, **changed})
    a = client.queue("orders").attributes()
    assert a.visibility_timeout == 5 and a.max_receive_count == 2


@pytest.mark.parametrize("name", ["", "a" * 81, "has space", "dot.ted", "colon:x", "ünï", "{tag}", None, 5])
def test_invalid_names(client: Any, raw: Any, prefix: str, name: Any) -> None:
    with pytest.raises(rqueue.InvalidQueueName, match="1-80 characters"):
        client.create_queue(name)
    assert stored_keys(raw, prefix) == []


def test_name_limits(client: Any) -> None:
    for name in ["a", "A" * 80, "x-_9"]:
        assert client.create_queue(name).name == name


@pytest.mark.parametrize(
    "op",
    [
        lambda q: q.send("x"),
        lambda q: q.send_batch(["x", "y"]),
        lambda q: q.receive(),
        lambda q: q.receive(wait_time=1),
        lambda q: q.delete("1.2"),
        lambda q: q.delete_batch(["1.2"]),
        lambda q: q.change_visibility("1.2", 0),
        lambda q: q.stats(),
        lambda q: q.attributes(),
        lambda q: q.purge(),
        lambda q: q.redrive(),
        lambda q: q.dead_letter_queue.receive(),
    ],
)
def test_queue_that_does_not_exist(client: Any, raw: Any, prefix: str, op: Any) -> None:
    with pytest.raises(rqueue.QueueDoesNotExist, match="'ghost' does not exist|'ghost:dlq' does not exist"):
        op(client.queue("ghost"))
    assert stored_keys(raw, prefix) == []


def test_list_and_delete_queues(client: Any, raw: Any, prefix: str) -> None:
    assert client.list_queues() == []
    for n in ["b", "a", "c"]:
        client.create_queue(n).send("m")
    client.queue("a").receive()
    assert client.list_queues() == ["a", "b", "c"]
    client.delete_queue("b")
    assert client.list_queues() == ["a", "c"]
    with pytest.raises(rqueue.QueueDoesNotExist):
        client.queue("b").send("x")
    with pytest.raises(rqueue.QueueDoesNotExist):
        client.delete_queue("b")
    client.delete_queue("a")
    client.delete_queue("c")
    # Only the id counters stay, so a queue created again never reissues an id.
    assert stored_keys(raw, prefix) == sorted(QueueKeys.for_queue(prefix, n).seq for n in "abc")


def test_deleted_and_recreated_queue_refuses_old_receipts(client: Any) -> None:
    q = client.create_queue("orders")
    q.send("old")
    (old,) = q.receive()
    client.delete_queue("orders")
    q = client.create_queue("orders")
    q.send("new")
    (new,) = q.receive()
    assert old.receipt != new.receipt
    assert q.delete(old.receipt) is False
    assert q.delete(new.receipt) is True


@pytest.mark.parametrize("burst", [1, 1000])
def test_a_queue_recreated_at_once_never_reissues_a_receipt(client: Any, raw: Any, prefix: str, burst: int) -> None:
    # Deleting and creating again within the same millisecond, also after a burst of sends
    # that ran the id counter ahead of the clock, must issue only new receipts.
    for _ in range(100 if burst == 1 else 20):
        q = client.create_queue("orders")
        q.send_batch(["x"] * burst)
        (old,) = q.receive(1)
        client.delete_queue("orders")
        q = client.create_queue("orders")
        q.send("y")
        (new,) = q.receive(1)
        assert old.receipt != new.receipt
        assert q.delete(old.receipt) is False
        assert q.delete(new.receipt) is True
        assert int(new.id) > int(old.id)  # ids carry on: none of the past life is issued again
        client.delete_queue("orders")
    # A deleted queue leaves its id counter and nothing else.
    assert stored_keys(raw, prefix) == [QueueKeys.for_queue(prefix, "orders").seq]


def test_dead_letter_queue_is_a_queue(client: Any) -> None:
    q = client.create_queue("orders")
    dlq = q.dead_letter_queue
    assert dlq.name == "orders:dlq"
    assert client.queue("orders:dlq") == dlq
    assert dlq.stats().visible == 0
    assert client.list_queues() == ["orders"]
    with pytest.raises(rqueue.InvalidParameter, match="dead-letter queue"):
        dlq.dead_letter_queue  # noqa: B018
    with pytest.raises(rqueue.InvalidParameter, match="source"):
        client.create_queue("orders:dlq")
