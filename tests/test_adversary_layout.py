"""Adversarial review of storage layout 0.2 (commit 8b6f33b: per-message state in the
message's header, short ids, receipt tokens from the clock, in-place upgrade).

Each ``xfail(strict=True)`` test proves one defect: it fails while the defect exists.
The other tests are attacks that held, kept for the coverage they add.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import pytest

import rqueue
from rqueue._protocol import codec as _codec
from rqueue._protocol.keys import QueueKeys

from .conftest import keys_of, server_ms


def align_tokens(r: Any, behind: Any, ahead: Any) -> None:
    """Receive a throwaway message of ``behind`` until its next receive token is the one
    ``ahead`` will issue next (what two queues created a few hundred µs apart reach on
    their own after that many more receive calls on one of them); then delete it."""
    target = int(r.hget(keys_of(ahead).meta, "tok"))
    assert int(r.hget(keys_of(behind).meta, "tok")) < target
    behind.send("pad")
    m = None
    while int(r.hget(keys_of(behind).meta, "tok")) < target:
        (m,) = behind.receive(visibility_timeout=0)
    assert m is not None and behind.delete(m.receipt)
    assert r.hget(keys_of(behind).meta, "tok") == r.hget(keys_of(ahead).meta, "tok")


# ---------------------------------------------------------------- receipts are no longer unique across queues


# Fixed: the consumer keys the jobs it holds by (queue, receipt); receipts are unique per queue only.
def test_consumer_of_two_queues_processes_each_message_once(lib: rqueue.Client, r: Any) -> None:
    a = lib.create_queue("a", visibility_timeout=1)
    b = lib.create_queue("b", visibility_timeout=1)  # created a few hundred µs after 'a'
    b.send("pad")
    (m,) = b.receive()
    assert b.delete(m.receipt)
    align_tokens(r, a, b)
    assert a.send("work-a") == b.send("work-b")  # ids count from 1 in every queue: both '12'

    calls: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def handle(msg: rqueue.Message) -> None:
        with lock:
            calls[msg.body] += 1
        time.sleep(2.5)  # longer than the 1 s lease: the consumer's heartbeat must extend it

    consumer = rqueue.Consumer([a, b], handle, concurrency=4, batch_size=1)
    consumer.start()
    try:
        time.sleep(4.5)
    finally:
        consumer.stop()
    assert dict(calls) == {"work-a": 1, "work-b": 1}


def test_receipts_of_a_queue_and_its_dead_letter_queue_coincide_but_stay_apart(lib: rqueue.Client) -> None:
    """A queue and its DLQ start their token counters at the same value, so a dead letter's
    first DLQ receipt equals its last receipt in the source queue; neither works on the other."""
    q = lib.create_queue("orders", visibility_timeout=30)
    q.send("x")
    (m,) = q.receive()
    assert q.reject(m.receipt, "bad")
    dlq = q.dead_letter_queue
    (d,) = dlq.receive()
    assert d.receipt == m.receipt  # same string, different queues
    assert q.delete(d.receipt) is False
    assert dlq.change_visibility(d.receipt, 0) is True
    assert q.redrive() == 1
    assert dlq.delete(d.receipt) is False  # moved back: the DLQ receipt is dead
    (again,) = q.receive()
    assert again.receipt != m.receipt and again.receive_count == 1
    assert q.delete(m.receipt) is False and q.delete(again.receipt) is True


# ---------------------------------------------------------------- upgrade: a delayed message of the old layout


# Fixed: the upgrade gives a delayed message of 0.1 its 'D' header (upgrade.lua mark_delayed).
def test_upgraded_delayed_message_keeps_retention_from_its_visibility(lib: rqueue.Client, r: Any) -> None:
    q = lib.create_queue("orders", visibility_timeout=30, retention=60)
    k = keys_of(q)
    (mid,) = q.send_batch(["late"])
    # What 0.1 stored for it: sent 59 s ago with a 58 s delay, so visible for 1 s (its
    # retention runs until 59 s from now); no header (0.1 had none), no receipt state.
    now = server_ms(r)
    stored = r.hget(k.msgs, mid)
    r.hset(k.msgs, mid, b"%013d" % (now - 59_000) + stored[13:])
    r.zadd(k.vis, {mid: now - 1_000})
    r.hdel(k.meta, "tok", "v")
    q = lib.create_queue("orders", visibility_timeout=30, retention=60)  # the upgrade

    (m,) = q.receive(visibility_timeout=0)
    assert m.body == "late"
    time.sleep(1.5)  # 60.5 s after its send, 2.5 s after it became visible
    got = q.receive()  # empty: it expired, its retention counted from the send
    assert [(x.id, x.receive_count) for x in got] == [(mid, 2)]
    assert q.stats().expired_total == 0


# ---------------------------------------------------------------- ids repeat once the counter's day is over


# Fixed: delete_queue keeps the id counter for good (it had a 1-day TTL), so a queue made again
# never reissues an id a past life's tracker (which never got a final event) still holds.
def test_a_tracker_of_a_deleted_queue_never_gets_a_later_messages_events(server_url: str, prefix: str, r: Any) -> None:
    sender = rqueue.connect(server_url, prefix=prefix)
    other = rqueue.connect(server_url, prefix=prefix)
    try:
        q = sender.create_queue("orders", visibility_timeout=30)
        old = q.send_tracked("old")
        sender.delete_queue("orders")  # 'old' is gone without a final event
        k = keys_of(q)
        assert r.pttl(k.seq) == -1  # the id counter outlives the queue, with no expiry
        q2 = other.create_queue("orders", visibility_timeout=30)
        new = q2.send_tracked("new")
        assert new.message_id != old.message_id  # never the id of a message someone still tracks
        (m,) = q2.receive()
        assert q2.delete(m.receipt, reply="for the new one")
        assert new.wait("processed", timeout=5).reply == "for the new one"
        time.sleep(0.3)
        assert old.events == []  # nothing happened to the old message
    finally:
        sender.close()
        other.close()
        for key in r.scan_iter(match=f"{prefix}:*"):
            r.unlink(key)


# ---------------------------------------------------------------- attacks that held (coverage)

_BODIES: list[Any] = [
    "R1:2:3|not a header",
    b"D123|R9:9:9|\x00|",
    {"R": "1:2:3|", "D": [1, 2]},
    "|",
]


@pytest.mark.parametrize("tracked", [False, True])
def test_header_like_bodies_keep_counts_through_change_visibility(lib: rqueue.Client, tracked: bool) -> None:
    q = lib.create_queue("orders", visibility_timeout=30)
    attrs = {"k": "R1:1:1|", "b": b"D1|"}
    if tracked:
        ids = [q.send(b, attributes=attrs, on_event=lambda e: None) for b in _BODIES]
        ids += [q.send(b, on_event=lambda e: None) for b in _BODIES]
    else:
        ids = q.send_batch(_BODIES, attributes=attrs) + q.send_batch(_BODIES)
    first = q.receive(10)
    assert [m.id for m in first] == ids
    assert all(m.receipt.endswith("e") == tracked for m in first)
    assert q.change_visibility_batch([m.receipt for m in first], 0) == [True] * 8
    second = q.receive(10)
    assert [(m.id, m.body, m.attributes, m.sent_at) for m in second] == [
        (m.id, m.body, m.attributes, m.sent_at) for m in first
    ]
    assert [(m.receive_count, m.first_received_at) for m in second] == [(2, m.first_received_at) for m in first]
    assert all(m.receipt.endswith("e") == tracked for m in second)
    assert q.delete_batch([m.receipt for m in first]) == [False] * 8
    s = q.stats()
    assert (s.visible, s.in_flight, s.delayed) == (0, 8, 0)
    assert q.delete_batch([m.receipt for m in second] * 2) == [True] * 8 + [False] * 8
    assert q.stats().deleted_total == 8


def test_ids_sort_across_the_two_character_prefix(lib: rqueue.Client, r: Any) -> None:
    """8 -> 9 digits is where the id's prefix grows from '8' to '90'."""
    q = lib.create_queue("orders", visibility_timeout=0)
    r.set(keys_of(q).seq, 99_999_997)  # fast-forward the counter
    ids = q.send_batch(["a", "b", "c", "d"])
    assert ids == ["899999998", "899999999", "90100000000", "90100000001"]
    assert [m.id for m in q.receive(4)] == ids
    assert [m.id for m in q.receive(4)] == ids  # and again, by the same visible-at (vt 0)


def test_request_given_up_while_held_then_deleted_with_a_reply_leaves_no_key(lib: rqueue.Client, r: Any) -> None:
    q = lib.create_queue("orders", visibility_timeout=30)
    out: dict[str, BaseException] = {}

    def ask() -> None:
        try:
            q.request("hi", timeout=0.5)
        except BaseException as e:  # noqa: BLE001
            out["e"] = e

    t = threading.Thread(target=ask)
    t.start()
    (m,) = q.receive(wait_time=2)
    t.join()
    assert isinstance(out["e"], rqueue.RequestTimeout) and not out["e"].withdrawn
    assert m.receipt.endswith("r")
    stored = r.hget(keys_of(q).msgs, m.id)
    assert stored.startswith(b"R") and _codec.REQUEST.encode() not in stored[stored.index(b"|") + 1 :][:14]
    assert q.delete(m.receipt, reply="late") is True
    assert r.exists(keys_of(q).reply(m.id)) == 0


def _strip_to_legacy(r: Any, k: QueueKeys, mid: str, state: bytes) -> None:
    """What 0.1 kept for a received message: no header, its receipt state in 'state'."""
    stored = r.hget(k.msgs, mid)
    bar = stored.find(b"|") if stored[:1] in (b"R", b"D") else -1
    r.hset(k.msgs, mid, stored[bar + 1 :])
    r.hset(k.state, mid, state)


def test_upgrade_folds_a_dead_letter_queues_state_and_skips_moved_messages(lib: rqueue.Client, r: Any) -> None:
    q = lib.create_queue("orders", visibility_timeout=30)
    k, d = keys_of(q), keys_of(q).dlq()
    moved, held = q.send_batch(["moved", "held"])
    got = {m.body: m for m in q.receive(2)}
    assert q.reject(got["moved"].receipt, "bad")
    (_dead,) = q.dead_letter_queue.receive(visibility_timeout=0)
    # 0.1 state: the dead letter received twice in the DLQ (visible again), a main-queue entry
    # left for the message that moved, and 'held' in flight under a 0.1 receipt.
    _strip_to_legacy(r, d, moved, b"1700000000000007:2:1700000000123")
    r.hset(k.state, moved, b"1700000000000001:1:1700000000000")
    _strip_to_legacy(r, k, held, b"1700000000000003:1:1700000000456:1700000000400")
    r.hdel(k.meta, "tok", "v")
    r.hdel(d.meta, "tok", "v")

    q = lib.create_queue("orders", visibility_timeout=30)  # returns 2, then the upgrade
    assert r.exists(k.state) == 0 and r.exists(d.state) == 0
    assert r.hexists(k.msgs, moved) is False  # the moved message was not brought back
    s = q.stats()
    assert (s.visible, s.in_flight, s.dead) == (0, 1, 1)
    (again,) = q.dead_letter_queue.receive()
    assert (again.id, again.body, again.receive_count, again.first_received_at) == (moved, "moved", 3, 1700000000123)
    assert again.dead_letter is not None and again.dead_letter.reason == "rejected"
    assert q.dead_letter_queue.delete(f"{moved}.1700000000000007") is False  # re-received since
    assert q.delete(f"{held}.1700000000000003") is True


# Fixed: subscribe seeds the token counter of a 0.1 subscription and runs the upgrade.
def test_subscribe_upgrades_a_subscription_with_a_clock_token_counter(lib: rqueue.Client, r: Any) -> None:
    topic = lib.topic("news")
    topic.subscribe("s1")
    topic.subscribe("s2")
    for name in ("s1", "s2"):  # as 0.1 left them: no 'tok'
        k = topic._keys.subscription(name)
        r.hdel(k.meta, "tok", "v")
        r.hdel(k.dlq().meta, "tok", "v")
    topic.subscribe("s1")  # refresh: the upgrade
    topic.subscribe("s2")
    topic.publish("x")
    (m1,) = topic.subscription("s1").receive()
    (m2,) = topic.subscription("s2").receive()
    assert m1.receipt != m2.receipt  # both are '11.1'
    assert int(m1.receipt.split(".")[1]) > 10**15  # counted from the clock, as create_queue does
