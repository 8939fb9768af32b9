"""FIFO queues through the plain queue API (no consumer), against a model, on every backend.

The property test runs random sends (random groups), receives of random sizes,
failures (change_visibility 0 or with a delay), give-backs (unreceive), deletes
and stale receipts, then drains the queue, and checks after every receive:

- no group has two messages in flight at once, unless one receive returned them
  as consecutive messages (a message hidden by a delay counts as in flight
  until the delay has passed);
- the messages a receive returns of a group are the first undeleted ones of
  that group, in send order (nothing skipped);
- receive_count counts receives, less the ones given back (unreceive);
- every message is deleted exactly once in the end.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rqueue
from rqueue._protocol import operations as _core

from .conftest import keys_of

#: Group names that also hold the characters of the stored header ('~', ':', '|') and non-ASCII.
GROUPS = ["a", "b|1", "~2:", "é"]


def unreceive(client: Any, q: Any, receipts: list[str]) -> list[bool]:
    return client.run(_core.unreceive(keys_of(q), receipts))  # type: ignore[no-any-return]


# ---------------------------------------------------------------- unreceive, by example


def test_unreceive_puts_messages_back_in_their_place_and_uncounts_their_receive(client: Any) -> None:
    q = client.create_queue("f", fifo=True, max_receive_count=5)
    q.send_batch(["a1", "a2", "a3"], group="A")
    q.send("b1", group="B")
    a1, a2, a3, b1 = q.receive(10)
    assert [m.receive_count for m in (a1, a2, a3, b1)] == [1, 1, 1, 1]
    assert unreceive(client, q, [a3.receipt, a2.receipt, a2.receipt]) == [True, True, False]
    assert q.receive(10) == []  # a1 still holds group A
    assert q.change_visibility(a2.receipt, 0) is False  # given back: its receipt is stale
    assert q.change_visibility(a1.receipt, 0) is True
    again = q.receive(10)
    assert [(m.body, m.receive_count) for m in again] == [("a1", 2), ("a2", 1), ("a3", 1)]
    assert again[0].first_received_at == a1.first_received_at  # received before: its first receive stays
    assert again[1].first_received_at == again[2].first_received_at >= a2.first_received_at  # as never received
    assert unreceive(client, q, [again[0].receipt]) == [True]  # back to 1 receive, its first one kept
    assert unreceive(client, q, [m.receipt for m in again[1:]]) == [True, True]
    third = q.receive(10)
    assert [(m.body, m.receive_count, m.first_received_at) for m in third][:1] == [("a1", 2, a1.first_received_at)]
    assert [(m.body, m.receive_count) for m in third[1:]] == [("a2", 1), ("a3", 1)]
    assert q.delete_batch([m.receipt for m in third] + [b1.receipt]) == [True] * 4
    s = q.stats()
    assert (s.visible, s.in_flight, s.deleted_total, s.received_total) == (0, 0, 4, 10)


def test_messages_given_back_behind_a_failing_one_are_never_dead_lettered_for_it(client: Any) -> None:
    """The reason unreceive exists: change_visibility 0 would count their receives, and behind a
    message that keeps failing they would reach max_receive_count without ever having run."""
    q = client.create_queue("f", fifo=True, max_receive_count=2)
    q.send_batch(["a1", "a2"], group="A")
    for attempt in (1, 2):
        a1, a2 = q.receive(10)
        assert (a1.receive_count, a2.receive_count) == (attempt, 1)
        assert unreceive(client, q, [a2.receipt]) == [True]
        assert q.change_visibility(a1.receipt, 0) is True
    (a2,) = q.receive(10)  # a1 reached max_receive_count and went to the dead-letter queue
    assert (a2.body, a2.receive_count) == ("a2", 1)
    assert q.stats().dead == 1


def test_unreceive_refuses_a_queue_that_is_not_fifo(client: Any) -> None:
    q = client.create_queue("plain")
    q.send("x")
    (m,) = q.receive()
    with pytest.raises(rqueue.InvalidParameter, match="queue must be a FIFO queue"):
        unreceive(client, q, [m.receipt])
    assert q.stats().in_flight == 1


def test_lowering_the_delay_never_lets_a_later_message_overtake_a_delayed_one_of_its_group(client: Any) -> None:
    """Found while building the FIFO consumer: with the queue's delay lowered, a2 (sent after)
    went straight to its group's line while a1 still waited for the old delay, and was handed
    out first. Now a send waits until the last delayed message of its group is due (send.lua,
    gd); other groups go on."""
    q = client.create_queue("f", fifo=True, delay=0.3)
    q.send("a1", group="A")
    q.set_attributes(delay=0)
    q.send_batch(["a2", "b1"], group=["A", "B"])
    assert [m.body for m in q.receive(10)] == ["b1"]
    assert q.stats().delayed == 2
    assert [(m.body, m.receive_count) for m in q.receive(10, wait_time=5)] == [("a1", 1), ("a2", 1)]
    q.send("a3", group="A")  # the old delay has passed: nothing waits any more
    assert q.stats().delayed == 0


# ---------------------------------------------------------------- the model


@dataclass
class Model:
    """What the queue must hold, from the calls made so far."""

    #: Group -> its message ids in send order.
    order: dict[str, list[str]] = field(default_factory=dict)
    group_of: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    #: Id -> its receipt, for the messages this test holds in flight.
    held: dict[str, str] = field(default_factory=dict)
    #: Id -> (monotonic time before the call, delay): hidden by change_visibility, in flight
    #: until the delay has passed.
    hidden: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Id -> receives that count (receive_count).
    count: Counter[str] = field(default_factory=Counter)
    #: Receipts that can never be valid again: their message was received again or deleted.
    stale: list[str] = field(default_factory=list)
    last_receipt: dict[str, str] = field(default_factory=dict)
    deliveries: int = 0

    def sent(self, group: str, ids: list[str]) -> None:
        self.order.setdefault(group, []).extend(ids)
        self.group_of.update(dict.fromkeys(ids, group))

    def undeleted(self, group: str) -> list[str]:
        return [i for i in self.order[group] if i not in self.deleted]

    def received(self, msgs: list[rqueue.Message], ended: float) -> None:
        """Check one receive's messages (``ended``: monotonic time after it returned)."""
        groups = [m.group for m in msgs]
        runs = [g for g, _ in itertools.groupby(groups)]
        assert len(runs) == len(set(runs)), f"a group's messages are not consecutive: {groups}"
        for g in runs:
            assert g is not None
            ids = [m.id for m in msgs if m.group == g]
            busy = [i for i in self.held if self.group_of[i] == g]
            assert not busy, f"group {g!r} handed out while {busy} are in flight"
            for i in [i for i in self.hidden if self.group_of[i] == g]:
                since, delay = self.hidden.pop(i)
                assert ended - since >= delay - 0.002, f"group {g!r} handed out {delay - (ended - since):.3f} s early"
            assert ids == self.undeleted(g)[: len(ids)], f"group {g!r}: got {ids}, expected {self.undeleted(g)}"
        self.deliveries += len(msgs)
        for m in msgs:
            self.count[m.id] += 1
            assert m.receive_count == self.count[m.id], (m.id, m.receive_count, self.count[m.id])
            if m.id in self.last_receipt:
                self.stale.append(self.last_receipt[m.id])
            self.held[m.id] = self.last_receipt[m.id] = m.receipt

    def done(self) -> bool:
        return len(self.deleted) == len(self.group_of)


Op = tuple[Any, ...]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from(GROUPS), st.integers(1, 4)),
        st.tuples(st.just("receive"), st.integers(1, 6)),
        st.tuples(st.just("delete"), st.integers(0, 99)),
        st.tuples(st.just("fail"), st.integers(0, 99), st.sampled_from([0, 0, 0.05, 0.15])),
        st.tuples(st.just("unreceive"), st.integers(0, 99), st.integers(1, 3)),
        st.tuples(st.just("stale"), st.integers(0, 99)),
    ),
    min_size=20,
    max_size=60,
)


def _pick(model: Model, k: int) -> tuple[str, str]:
    ids = sorted(model.held, key=lambda i: (len(i), i))
    mid = ids[k % len(ids)]
    return mid, model.held[mid]


def step(client: Any, q: Any, model: Model, op: Op) -> None:
    kind = op[0]
    if kind == "send":
        model.sent(op[1], q.send_batch([f"{op[1]}{i}" for i in range(op[2])], group=op[1]))
    elif kind == "receive":
        msgs = q.receive(op[1])
        model.received(msgs, time.monotonic())
    elif kind == "stale":
        if model.stale:
            receipt = model.stale[op[1] % len(model.stale)]
            assert q.change_visibility(receipt, 0) is False
            assert q.delete(receipt) is False
    elif model.held:
        mid, receipt = _pick(model, op[1])
        if kind == "delete":
            assert q.delete(receipt) is True
            model.deleted.add(mid)
            model.stale.append(receipt)
        elif kind == "fail":
            before = time.monotonic()
            assert q.change_visibility(receipt, op[2]) is True
            if op[2]:
                model.hidden[mid] = (before, op[2])
        else:  # unreceive: this one and up to op[2] - 1 more of the held (any groups)
            picked = [mid, *[i for i in model.held if i != mid][: op[2] - 1]]
            assert unreceive(client, q, [model.held[i] for i in picked]) == [True] * len(picked)
            for i in picked:
                model.count[i] -= 1
            for i in picked[1:]:
                del model.held[i]
        del model.held[mid]


def drain(q: Any, model: Model) -> None:
    """Give back what is held, then receive and delete until every message is deleted once."""
    if model.held:
        assert q.change_visibility_batch(list(model.held.values()), 0) == [True] * len(model.held)
        model.held.clear()
    deadline = time.monotonic() + 30
    while not model.done():
        assert time.monotonic() < deadline, f"not drained: {sorted(set(model.group_of) - model.deleted)}"
        msgs = q.receive(10, wait_time=1)
        model.received(msgs, time.monotonic())
        if msgs:
            assert q.delete_batch([m.receipt for m in msgs]) == [True] * len(msgs)
            for m in msgs:
                assert m.id not in model.deleted
                model.deleted.add(m.id)
                del model.held[m.id]
    s = q.stats()
    assert (s.visible, s.in_flight, s.delayed, s.dead) == (0, 0, 0, 0)
    assert s.deleted_total == s.sent_total == len(model.group_of)
    assert s.received_total == model.deliveries  # a receive given back still counts there


def test_fifo_order_and_exclusive_groups_hold_under_random_calls(client: Any) -> None:
    names = itertools.count()

    @settings(
        max_examples=150,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(ops)
    def run(script: list[Op]) -> None:
        q = client.create_queue(f"m{next(names)}", fifo=True, visibility_timeout=60)
        model = Model()
        try:
            for op in script:
                step(client, q, model, op)
            drain(q, model)
        finally:
            client.delete_queue(q.name)

    run()
