"""Adversarial review 2 of layout 0.2 (header state, half-ms scores for messages in flight,
short ids, the in-place upgrade from rqueue 0.1) and the consumer ledger keyed by
(queue index, receipt).

Each ``xfail(strict=True)`` test proves one defect: it fails while the defect exists.
"""

from __future__ import annotations

import time
from typing import Any

import rqueue
from rqueue._protocol.keys import QueueKeys

from .conftest import keys_of, server_ms


def legacy_meta(r: Any, k: QueueKeys) -> None:
    """Make the queue's and its DLQ's meta what rqueue 0.1 kept: no 'v', no 'tok'."""
    r.hdel(k.meta, "tok", "v")
    r.hdel(k.dlq().meta, "tok", "v")


def make_in_flight_0_1(r: Any, k: QueueKeys, mid: str, token: int, hidden_for_ms: int, rc: int = 1) -> None:
    """What 0.1 kept for a message it delivered: no header, state in the 'state' hash."""
    stored = r.hget(k.msgs, mid)
    bar = stored.find(b"|") if stored[:1] in (b"R", b"D") else -1
    r.hset(k.msgs, mid, stored[bar + 1 :])
    now = server_ms(r)
    r.hset(k.state, mid, f"{token}:{rc}:{now - 5000}".encode())
    r.zadd(k.vis, {mid: now + hidden_for_ms})


# ---------------------------------------------------------------- upgrade: receipt tokens


# Fixed: the upgrade raises 'tok' to past 0.1's tokens even when a receive started it (max, not HSETNX).
def test_receive_before_the_upgrade_makes_tokens_reissue_0_1_receipts(lib: rqueue.Client, r: Any) -> None:
    q = lib.create_queue("orders", visibility_timeout=30)
    k = keys_of(q)
    (mid,) = q.send_batch(["held by 0.1"])
    (pad,) = q.send_batch(["pad"])
    # 0.1: its tokens came from seq; consumer A holds '<mid>.5' with a lease of 1.5 s more.
    r.set(k.seq, 5)
    make_in_flight_0_1(r, k, mid, 5, 1500)
    legacy_meta(r, k)
    old_receipt = f"{mid}.5"

    # Every client runs 0.2 now (README: upgrade clients together, then call create_queue);
    # one of them receives through a handle before create_queue is called.
    pre = lib.queue("orders")
    for _ in range(4):
        (m,) = pre.receive(visibility_timeout=0)
        assert m.id == pad
    assert pre.delete(m.receipt)

    q = lib.create_queue("orders", visibility_timeout=30)  # the upgrade
    assert r.hget(k.meta, "v") == b"2"
    assert r.exists(k.state) == 0 and q.stats().in_flight == 1  # folded: '<mid>.5' is valid
    time.sleep(1.7)  # consumer A's lease is over; consumer B receives the message
    (again,) = q.receive()
    assert again.id == mid and again.receive_count == 2
    # README: the upgrade "starts the receipt tokens past every token 0.1 issued".
    assert again.receipt != old_receipt, "the new delivery reuses consumer A's 0.1 receipt"
    assert q.delete(old_receipt) is False  # consumer A, late, must not delete B's message


# ---------------------------------------------------------------- consumer: a queue and its own dead-letter queue


def test_consumer_of_a_queue_and_its_dead_letter_queue_holds_coinciding_receipts_apart(lib: rqueue.Client) -> None:
    """A rejected message's first DLQ receipt is the string of its last receipt in the source
    (both token counters start at the queue's creation): the consumer holds both jobs at once,
    extends both leases (handlers outlive the 1 s visibility timeout) and acks each in its queue."""
    import collections
    import threading

    q = lib.create_queue("orders", visibility_timeout=1)
    dlq = q.dead_letter_queue
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    receipts: dict[str, str] = {}
    lock = threading.Lock()

    def handle(msg: rqueue.Message) -> None:
        with lock:
            seen[(msg.queue, msg.body)] += 1
            receipts[msg.queue] = msg.receipt
        if msg.queue == "orders":
            raise rqueue.Reject("to the DLQ")
        time.sleep(2.5)  # held past its 1 s lease: the heartbeat must extend it

    q.send("x")
    consumer = rqueue.Consumer([q, dlq], handle, concurrency=4, batch_size=1)
    consumer.start()
    try:
        time.sleep(4.5)
    finally:
        consumer.stop()
    assert dict(seen) == {("orders", "x"): 1, ("orders:dlq", "x"): 1}
    assert receipts["orders"] == receipts["orders:dlq"]  # the coinciding receipts this is about
    s, d = q.stats(), dlq.stats()
    assert (s.visible, s.in_flight, d.visible, d.in_flight, d.deleted_total) == (0, 0, 0, 0, 1)
