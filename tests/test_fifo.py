"""SPEC 10, FIFO queues, through the queue API: order within a group, one group's messages
never in flight beside another's unless one receive handed them out together, groups
independent, dead letters letting their group move on, redrive back into the group, the
queue's delay only, requests and tracked sends. Sync and asyncio, on every backend."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import rqueue
from tests.conftest import keys_of


def bodies(msgs: list[Any]) -> list[Any]:
    return [m.body for m in msgs]


def test_a_group_is_delivered_in_order_and_held_while_in_flight(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    q.send_batch(["a1", "a2", "a3"], group="A")
    q.send("b1", group="B")
    got = q.receive(2)
    assert [(m.body, m.group) for m in got] == [("a1", "A"), ("a2", "A")]
    # A is held by a1 and a2: only B's message comes
    (b1,) = q.receive(10)
    assert (b1.body, b1.group) == ("b1", "B")
    assert q.receive(10) == []
    assert q.delete(got[0].receipt)
    assert q.receive(10) == []  # a2 still holds A
    assert q.delete(got[1].receipt)
    (a3,) = q.receive(10)
    assert a3.body == "a3"
    s = q.stats()
    assert (s.visible, s.in_flight, s.groups, s.groups_in_flight) == (0, 2, 2, 2)


def test_one_receive_takes_consecutive_messages_of_the_oldest_group_first(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    q.send("b1", group="B")
    q.send_batch(["a1", "a2"], group="A")
    q.send("b2", group="B")
    q.send("c1", group="C")
    got = q.receive(10)
    # B's head is the oldest: b1 and b2 (consecutive in B), then A's, then C's
    assert [(m.group, m.body) for m in got] == [("B", "b1"), ("B", "b2"), ("A", "a1"), ("A", "a2"), ("C", "c1")]
    s = q.stats()
    assert (s.visible, s.in_flight, s.groups, s.groups_in_flight) == (0, 5, 3, 3)


def test_a_message_that_comes_back_is_delivered_again_before_the_rest_of_its_group(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    q.send_batch(["a1", "a2"], group="A")
    (a1,) = q.receive(1)
    assert q.change_visibility(a1.receipt, 0)
    again = q.receive(10)
    assert [(m.body, m.receive_count) for m in again] == [("a1", 2), ("a2", 1)]
    assert not q.change_visibility(a1.receipt, 5)  # the older receipt is stale


def test_a_lease_that_ends_gives_the_group_back_in_order(client: Any) -> None:
    q = client.create_queue("orders", fifo=True, visibility_timeout=0.2)
    q.send_batch(["a1", "a2"], group="A")
    (a1,) = q.receive(1)
    got = q.receive(10, wait_time=10)  # woken when a1's lease ends (no polling), a1 first
    assert bodies(got) == ["a1", "a2"]
    assert got[0].receive_count == 2
    # the first receipt no longer deletes it once a receive gave it out again
    assert not q.delete(a1.receipt)


def test_a_failed_first_message_holds_its_group_while_it_waits_to_retry(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    q.send_batch(["a1", "a2"], group="A")
    q.send("b1", group="B")
    a1, a2 = q.receive(2)
    # a consumer's retry: a1 hidden for a while, a2 released unrun
    assert q.change_visibility(a1.receipt, 30)
    assert q.change_visibility(a2.receipt, 0)
    assert bodies(q.receive(10)) == ["b1"]  # A waits for a1
    assert q.change_visibility(a1.receipt, 0)
    assert bodies(q.receive(10)) == ["a1", "a2"]


def test_groups_are_independent(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    for g in ("slow", "fast"):
        q.send_batch([f"{g}1", f"{g}2"], group=g)
    (slow1,) = q.receive(1)
    assert slow1.group == "slow"
    got = []
    for _ in range(2):
        (m,) = q.receive(1)
        got.append(m.body)
        assert q.delete(m.receipt)
    assert got == ["fast1", "fast2"]


def test_delete_of_a_message_put_back_leaves_its_group_in_order(client: Any) -> None:
    """A receipt is good until its message is received again, also once a receive put the
    message back in its group's line (its lease ended)."""
    q = client.create_queue("orders", fifo=True)
    q.send("b1", group="B")  # B's head is older than A's
    q.send_batch(["a1", "a2"], group="A")
    (_b1,) = q.receive(1, visibility_timeout=0.1)
    (a1,) = q.receive(1, visibility_timeout=0.1)
    deadline = time.monotonic() + 10
    while q.stats().in_flight:  # both leases end (stats moves nothing)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # a receive puts both back and hands out the older head, b1
    got = q.receive(1)
    assert bodies(got) == ["b1"]
    assert not q.change_visibility(a1.receipt, 30)  # put back: no longer in flight
    assert q.delete(a1.receipt)  # but still its latest receipt
    assert bodies(q.receive(10)) == ["a2"]
    assert q.stats().deleted_total == 1


def test_reject_dead_letters_and_the_group_moves_on_and_redrive_restores_the_order(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    q.send_batch(["a1", "a2", "a3"], group="A")
    (a1,) = q.receive(1)
    assert q.reject(a1.receipt, "bad")
    (a2,) = q.receive(1)
    assert a2.body == "a2"
    (dead,) = q.dead_letter_queue.receive(1)
    assert (dead.body, dead.group, dead.dead_letter.reason) == ("a1", "A", "rejected")
    assert q.dead_letter_queue.change_visibility(dead.receipt, 0)
    assert q.delete(a2.receipt)
    assert q.redrive() == 1
    # a1 goes back into A ahead of a3 (send order), with a new receive count
    got = q.receive(10)
    assert [(m.body, m.group, m.receive_count) for m in got] == [("a1", "A", 1), ("a3", "A", 1)]


def test_max_receive_count_dead_letters_and_the_group_moves_on(client: Any) -> None:
    q = client.create_queue("orders", fifo=True, max_receive_count=2)
    q.send_batch(["a1", "a2"], group="A")
    for _ in range(2):
        (m,) = q.receive(1)
        assert m.body == "a1"
        assert q.change_visibility(m.receipt, 0)
    got = q.receive(10)  # a1 had its two receives: dead-lettered on the way, a2 comes
    assert bodies(got) == ["a2"]
    (dead,) = q.dead_letter_queue.receive(1)
    assert (dead.body, dead.group, dead.dead_letter.reason) == ("a1", "A", "max_receives")
    s = q.stats()
    assert (s.dead, s.dead_lettered_total, s.groups, s.groups_in_flight) == (1, 1, 1, 1)


def test_the_queue_delay_applies_and_order_holds(client: Any) -> None:
    q = client.create_queue("orders", fifo=True, delay=0.3)
    q.send_batch(["a1", "a2"], group="A")
    s = q.stats()
    assert (s.visible, s.delayed) == (0, 2)
    assert q.receive(10) == []
    got = q.receive(10, wait_time=10)  # woken when the delay ends
    assert bodies(got) == ["a1", "a2"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({}, "is a FIFO queue: every send needs a group"),
        ({"group": ""}, "group must be a str of 1 to 128 characters"),
        ({"group": "x" * 129}, "group must be a str of 1 to 128 characters"),
        ({"group": 5}, "group must be a str or a list of str"),
        ({"group": "\udcff"}, "group must be a str of 1 to 128 characters"),
        ({"group": "A", "delay": 5}, "delay must be None with a group"),
        ({"delay": 5}, "is a FIFO queue: every send needs a group"),
    ],
)
def test_bad_fifo_sends_store_nothing(client: Any, kwargs: dict[str, Any], needle: str) -> None:
    q = client.create_queue("orders", fifo=True)
    with pytest.raises(rqueue.InvalidParameter) as e:
        q.send("x", **kwargs)
    assert needle in str(e.value)
    with pytest.raises(rqueue.InvalidParameter):
        q.send_batch(["x", "y"], group=["A"])
    assert q.stats().visible == 0


def test_a_group_on_a_standard_queue_is_refused(client: Any) -> None:
    q = client.create_queue("plain")
    with pytest.raises(rqueue.InvalidParameter, match="group is only for FIFO queues"):
        q.send("x", group="A")
    assert q.stats().visible == 0
    q.send("x")
    (m,) = q.receive()
    assert m.group is None


def test_groups_may_hold_any_character(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    odd = ["a|b", "~3:x|", "{tag}", "ü" * 128, "1:", "12:", "A"]
    for g in odd:
        q.send_batch([f"{g}/1", f"{g}/2"], group=g)
    seen: dict[str, list[str]] = {}
    while got := q.receive(10):
        for m in got:
            seen.setdefault(m.group, []).append(m.body)
            assert q.delete(m.receipt)
    assert seen == {g: [f"{g}/1", f"{g}/2"] for g in odd}
    assert q.stats().groups == 0


def test_purge_and_delete_queue_forget_the_groups(client: Any, raw: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    q.send_batch(["a1", "a2"], group="A")
    q.receive(1)
    q.purge()
    s = q.stats()
    assert (s.visible, s.in_flight, s.groups, s.groups_in_flight) == (0, 0, 0, 0)
    q.send("a3", group="A")
    assert bodies(q.receive(10)) == ["a3"]
    client.delete_queue("orders")
    keys = keys_of(q)
    assert raw.exists(*keys.fifo()) == 0


def test_request_and_tracked_sends_on_a_fifo_queue(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    events: list[Any] = []
    seen = threading.Event()

    def on_event(e: Any) -> None:
        events.append(e.kind)
        if e.kind == "processed":
            seen.set()

    q.send("tracked", group="A", on_event=on_event)
    (m,) = q.receive(1)
    assert m.group == "A"
    assert q.delete(m.receipt, reply="done")
    assert seen.wait(10)
    assert events == ["received", "processed"]

    reply: list[Any] = []

    def requester() -> None:
        reply.append(q.request("question", timeout=30, group="B"))

    t = threading.Thread(target=requester)
    t.start()
    (r,) = q.receive(1, wait_time=10)
    assert (r.body, r.group) == ("question", "B")
    assert q.delete(r.receipt, reply="answer")
    t.join(10)
    assert reply == ["answer"]


def test_a_request_that_times_out_unreceived_leaves_its_group(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    with pytest.raises(rqueue.RequestTimeout):
        q.request("nobody", timeout=0.05, group="A")
    q.send("after", group="A")
    assert bodies(q.receive(10)) == ["after"]
    assert q.stats().groups == 1


def test_a_paused_fifo_queue_hands_out_nothing_until_resumed(client: Any) -> None:
    q = client.create_queue("orders", fifo=True)
    q.send("a1", group="A")
    q.pause()
    assert q.receive(10) == []
    q.resume()
    assert bodies(q.receive(10)) == ["a1"]
