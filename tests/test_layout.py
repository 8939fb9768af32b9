"""The storage layout: short ids in send order, per-message state only in the message's own
header, and a queue of the layout before 0.2 (a 'state' hash) upgraded in place by
create_queue, its receipts still valid. Sync and asyncio, on every backend."""

from __future__ import annotations

from typing import Any

import pytest

import rqueue
from rqueue._protocol import codec as _codec
from rqueue._protocol.keys import QueueKeys

from .conftest import keys_of


def test_ids_are_short_and_sort_in_send_order(client: Any, raw: Any) -> None:
    q = client.create_queue("orders")
    ids = q.send_batch(list(range(120)))  # crosses 9 -> 10 and 99 -> 100 in one batch
    assert ids[:3] == ["11", "12", "13"] and ids[9] == "210" and ids[99] == "3100"
    assert ids == sorted(ids)  # as strings: a sorted set breaks equal scores in send order
    got = q.receive(120)
    assert [m.body for m in got] == list(range(120))
    assert [m.id for m in got] == ids


def test_in_flight_state_lives_in_the_message_and_nothing_else(client: Any, raw: Any) -> None:
    q = client.create_queue("orders", visibility_timeout=0)
    (mid,) = q.send_batch(["a"])
    first = q.receive()[0]
    again = q.receive()[0]
    k = keys_of(q)
    assert raw.exists(k.state) == 0
    stored = raw.hget(k.msgs, mid)
    token = again.receipt.split(".")[1]
    assert stored.startswith(f"R{token}:2:{first.first_received_at}|".encode())
    assert again.receive_count == 2 and again.first_received_at == first.first_received_at
    assert q.delete(first.receipt) is False
    assert q.delete(again.receipt) is True


def _make_legacy(raw: Any, k: QueueKeys, mid: str, state: bytes, hidden_for_ms: int) -> None:
    """Turn a stored message into what the layout before 0.2 kept: no header, its receipt
    state in the 'state' hash, and the queue's meta without the receipt-token counter."""
    stored = raw.hget(k.msgs, mid)
    bar = stored.find(b"|") if stored[:1] in (b"R", b"D") else -1
    raw.hset(k.msgs, mid, stored[bar + 1 :])
    raw.hset(k.state, mid, state)
    t = raw.time()
    now = t[0] * 1000 + t[1] // 1000
    raw.zadd(k.vis, {mid: now + hidden_for_ms})
    raw.hdel(k.meta, "tok", "v")


def test_create_queue_upgrades_a_queue_of_the_layout_before(client: Any, raw: Any) -> None:
    q = client.create_queue("orders", visibility_timeout=60)
    held, back, asked = q.send_batch(["held", "back", "asked"])
    k = keys_of(q)
    # 'held' in flight under an old receipt, 'back' received twice and visible again,
    # 'asked' a request whose sender gave up ('x') while a consumer holds it.
    old_token = "1764000000000001"
    _make_legacy(raw, k, held, f"{old_token}:1:1764000000000".encode(), 60_000)
    _make_legacy(raw, k, back, b"1764000000000002:2:1764000000005", -1)
    raw.hset(k.msgs, asked, raw.hget(k.msgs, asked)[:13] + _codec.REQUEST.encode() + raw.hget(k.msgs, asked)[13:])
    _make_legacy(raw, k, asked, f"{old_token}:1:1764000000000x".encode(), 60_000)

    q = client.create_queue("orders", visibility_timeout=60)  # the upgrade, in place
    assert raw.exists(k.state) == 0
    assert raw.hget(k.meta, "tok") is not None
    (m,) = q.receive()
    assert (m.id, m.body, m.receive_count, m.first_received_at) == (back, "back", 3, 1764000000005)
    assert q.delete(f"{held}.{old_token}") is True  # a receipt issued before the upgrade
    # The request's sender gave up: deleting it now pushes no reply anywhere.
    assert q.delete(f"{asked}.{old_token}r", reply="late") is True
    assert raw.exists(k.reply(asked)) == 0
    assert q.stats().visible == 0 and q.stats().in_flight == 1


def test_upgrade_is_bounded_per_call_and_finishes(client: Any, raw: Any) -> None:
    q = client.create_queue("orders", visibility_timeout=60)
    ids = q.send_batch([str(i) for i in range(450)])
    k = keys_of(q)
    for i, mid in enumerate(ids):
        _make_legacy(raw, k, mid, f"{10**15 + i}:1:1764000000000".encode(), 60_000)
    q = client.create_queue("orders", visibility_timeout=60)
    assert raw.exists(k.state) == 0
    assert q.delete_batch([f"{mid}.{10**15 + i}" for i, mid in enumerate(ids)]) == [True] * 450


def test_a_stale_receipt_never_deletes_after_the_queue_is_made_again(client: Any) -> None:
    q = client.create_queue("orders")
    q.send("old")
    (old,) = q.receive()
    client.delete_queue("orders")
    q = client.create_queue("orders")
    q.send("new")
    (new,) = q.receive()
    assert new.id != old.id  # the id counter outlives the delete by a day
    forged = f"{new.id}.{old.receipt.split('.')[1]}"  # the old life's token on the new id
    assert q.delete(forged) is False
    assert q.delete(new.receipt) is True


@pytest.mark.parametrize("bad", ["x", "0 1", "99999999999999999999", ""])
def test_upgrade_refuses_bad_cursors_and_changes_nothing(raw: Any, prefix: str, bad: str) -> None:
    from rqueue._protocol.scripts import script

    k = QueueKeys.for_queue(prefix, "orders")
    raw.hset(k.state, "11", b"1:1:1")
    s = script("upgrade")
    with pytest.raises(Exception, match="RQ_BADARG cursor"):
        raw.eval(
            s.source,
            8,
            k.meta,
            k.msgs,
            k.state,
            k.vis,
            *(k.dlq().meta, k.dlq().msgs, k.dlq().state),
            k.dlq().vis,
            "0",
            "0",
            bad,
        )
    assert raw.hgetall(k.state) == {b"11": b"1:1:1"}


def test_message_too_large_still_refused_with_headers(client: Any) -> None:
    q = client.create_queue("orders", max_message_size=10)
    with pytest.raises(rqueue.MessageTooLarge):
        q.send("x" * 11)
