"""SPEC §8: every bad input is refused with a clear error and stores nothing."""

from __future__ import annotations

from typing import Any

import pytest

import rqueue

from .conftest import stored_keys


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"visibility_timeout": -1}, "visibility_timeout"),
        ({"visibility_timeout": 43201}, "visibility_timeout"),
        ({"visibility_timeout": "30"}, "visibility_timeout"),
        ({"visibility_timeout": float("nan")}, "visibility_timeout"),
        ({"visibility_timeout": True}, "visibility_timeout"),
        ({"retention": 59}, "retention"),
        ({"retention": 14 * 86400 + 1}, "retention"),
        ({"delay": -0.5}, "delay"),
        ({"delay": 7200, "retention": 3600}, "delay"),
        ({"max_message_size": 0}, "max_message_size"),
        ({"max_message_size": 1.5}, "max_message_size"),
        ({"max_message_size": 16 * 1024 * 1024 + 1}, "max_message_size"),
        ({"max_receive_count": 0}, "max_receive_count"),
        ({"max_receive_count": 1001}, "max_receive_count"),
    ],
)
def test_create_queue_rejects_bad_attributes(
    client: Any, raw: Any, prefix: str, kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(rqueue.InvalidParameter, match=f"^{param} must") as info:
        client.create_queue("orders", **kwargs)
    assert " from " in str(info.value) or " between " in str(info.value)
    assert stored_keys(raw, prefix) == []


def _snapshot(q: Any) -> tuple[int, int, int, int]:
    s = q.stats()
    return s.visible, s.in_flight, s.delayed, s.sent_total


class Unserialisable:
    pass


@pytest.mark.parametrize(
    ("op", "param"),
    [
        (lambda q: q.send("x", delay=-1), "delay"),
        (lambda q: q.send("x", delay=15 * 86400), "delay"),
        (lambda q: q.send(Unserialisable()), "body"),
        (lambda q: q.send_batch(["ok", Unserialisable()]), r"bodies\[1\] must be"),
        (lambda q: q.send_batch([]), "bodies"),
        (lambda q: q.send_batch(["x"] * 1001), "bodies"),
        (lambda q: q.send_batch("abc"), "bodies"),
        (lambda q: q.send("x", attributes={"k": [1]}), "attribute 'k'"),
        (lambda q: q.send("x", attributes={"": "v"}), "attribute names"),
        (lambda q: q.send("x", attributes={f"k{i}": i for i in range(17)}), "attributes"),
        (lambda q: q.send("x", attributes=["k"]), "attributes"),
        (lambda q: q.send("x", attributes={"b": True}), "attribute 'b'"),
        (lambda q: q.receive(0), "max_messages"),
        (lambda q: q.receive(1001), "max_messages"),
        (lambda q: q.receive(visibility_timeout=-1), "visibility_timeout"),
        (lambda q: q.receive(wait_time=301), "wait_time"),
        (lambda q: q.receive(wait_time=-1), "wait_time"),
        (lambda q: q.delete("not-a-receipt"), "receipt"),
        (lambda q: q.delete(None), "receipt"),
        (lambda q: q.delete_batch([]), "receipts"),
        (lambda q: q.change_visibility("1.1", -1), "seconds"),
        (lambda q: q.change_visibility("1.1", 43201), "seconds"),
        (lambda q: q.change_visibility_batch(["1.1"] * 1001, 0), "receipts"),
        (lambda q: q.reject("1.1", 5), "reason"),
    ],
)
def test_bad_input_changes_nothing(q: Any, op: Any, param: str) -> None:
    q.send("existing")
    (held,) = q.receive()
    q.send("visible")
    before = _snapshot(q)
    with pytest.raises(rqueue.InvalidParameter, match=f"^{param}"):
        op(q)
    assert _snapshot(q) == before
    assert q.delete(held.receipt)  # the held message's lease is intact


def test_send_delay_beyond_queue_retention(client: Any) -> None:
    q = client.create_queue("orders", retention=60)
    with pytest.raises(rqueue.InvalidParameter, match="delay must be between 0 and the queue's retention"):
        q.send_batch(["a", "b"], delay=61)
    assert q.stats().sent_total == 0
    q.send("ok", delay=60)
    assert q.stats().delayed == 1


def test_errors_derive_from_rqueue_error() -> None:
    for exc in (
        rqueue.QueueDoesNotExist,
        rqueue.QueueAlreadyExists,
        rqueue.InvalidQueueName,
        rqueue.MessageTooLarge,
        rqueue.InvalidParameter,
        rqueue.ConnectionError,
    ):
        assert issubclass(exc, rqueue.RQueueError)
    assert issubclass(rqueue.ConnectionError, ConnectionError)
