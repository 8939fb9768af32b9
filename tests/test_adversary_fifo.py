"""Adversarial review of FIFO queues (SPEC 10) and queue attributes / set_attributes (SPEC 9).

Each test proved a defect when the review wrote it (its docstring says what broke and
why); all are fixed, and the tests stay as regression tests:
- a receive over many dead-lettered messages: bounded to N ids per call (receive.lua);
- a lowered delay letting a later message overtake: a FIFO message becomes visible no
  earlier than the one of its group sent before it (send.lua, gd);
- redrive chunks out of order: a FIFO source's dead letters go back in id order, from the
  dead-letter queue's index of them, with a cursor (redrive.lua);
- a subscription's refresh after set_attributes: a refresh keeps the stored attributes;
- the dead-letter queue's visibility timeout: decided and documented (it keeps its own);
- oldest_age missing a message behind a held group: stats reads held groups' heads too.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import rqueue
from rqueue._protocol import operations as _core
from tests.conftest import keys_of, server_ms


def _age_messages(r: Any, msgs_key: str, ms: int) -> None:
    """Rewrite the sent_at of every stored FIFO message (behind its 'G~<len>:<group>|'
    header) to ``ms`` ago, as if the queue had been left alone that long."""
    old = b"%013d" % (server_ms(r) - ms)
    p = r.pipeline(transaction=False)
    for mid, m in r.hgetall(msgs_key).items():
        i = m.index(b"|") + 1  # the test's groups hold no '|'
        p.hset(msgs_key, mid, m[:i] + old + m[i + 13 :])
    p.execute()


def test_lowering_the_queue_delay_lets_a_later_message_overtake_its_group(client: Any) -> None:
    """SPEC 10: within a group, messages are delivered in send order; README: a new
    `delay` applies to the next send.

    Breaks: a1 is sent while the queue's delay is 1 s, then set_attributes(delay=0),
    then a2 to the same group. a2 is handed out at once, before a1 (and then holds the
    group, so a1 comes after a2 was processed).

    Why: lua/send.lua:89-99 puts a delayed FIFO message in vis only, outside its
    group's line (gm) and without touching gr, while an undelayed one goes straight
    into gm and makes the group ready (send.lua:102-104); nothing holds the group for
    an earlier message that is still delayed. receive.lua:170-189 only moves a delayed
    message into gm when its own time comes. (SQS makes a FIFO queue's delay change
    retroactive for this reason.)
    """
    q = client.create_queue("orders", fifo=True, delay=1)
    q.send("a1", group="A")
    q.set_attributes(delay=0)
    q.send("a2", group="A")
    got = q.receive(10, wait_time=3)
    assert [m.body for m in got][:1] == ["a1"]


def test_a_receive_between_redrive_chunks_delivers_a_group_out_of_order(client: Any) -> None:
    """README: redrive() puts a dead letter back into its group "in its original send
    order".

    Breaks: group X's x0..x999 were received together and dead-lettered, x0 last (so it
    died last); with one more dead letter (Y) there are 1001, so redrive() takes two
    script calls. A consumer's receive between the two calls (or a redriving process
    that dies after the first) gets x1, x2, ... while x0, sent first, is still in the
    dead-letter queue: x0 comes after every later message of its group.

    Why: lua/redrive.lua:35 picks each chunk by dead-letter time (the DLQ's vis score),
    not by id, and redrive.lua:61-65 makes the group ready after each chunk, so a
    group's younger messages can go back (and be delivered) before its older ones.
    Fix: on a FIFO source take chunks in id order (e.g. hold a group that still has
    dead letters waiting, or index the DLQ by id), so no chunk moves a message ahead
    of an older one of its group.
    """
    q = client.create_queue("orders", fifo=True)
    q.send("y", group="Y")
    (y,) = q.receive(1)
    assert q.reject(y.receipt)
    q.send_batch([f"x{i}" for i in range(1000)], group="X")
    got = q.receive(1000)
    assert [m.body for m in got] == [f"x{i}" for i in range(1000)]
    time.sleep(0.005)
    assert all(q.reject_batch([m.receipt for m in got[1:]]))
    time.sleep(0.005)
    assert q.reject(got[0].receipt)  # x0 dies last
    # the first of redrive()'s chunk calls, then a consumer's receive
    assert client.run(_core.redrive(keys_of(q))).moved == 1000
    xs = [m.body for m in q.receive(1000) if m.group == "X"]
    assert xs[:1] == ["x0"]


def test_a_receive_over_many_expired_messages_fails_half_done_and_loses_a_message(lib: Any, r: Any) -> None:
    """SPEC 4/10: expired messages are removed and counted, a group moves on past its
    dead letters, bad conditions never lose a stored message; README: one receive looks
    at no more than its batch + 1000 entries.

    Breaks: a FIFO queue left alone past its retention with 9 groups of 1000 messages,
    plus one fresh message in group zz. receive(1000) raises ServerError ("too many
    results to unpack") after writing half its changes: the 9000 are copied into the
    dead-letter queue but stay in the source's msgs hash too (expired_total not
    counted), and zz's fresh message was taken out of gm and counted in flight in gf,
    but never written to vis: it is in no index, never delivered again, and group zz
    is held for ever (stats: visible 0, in_flight 0, groups_in_flight 1).

    Why: lua/receive.lua:194-256 gives every ready group up to max - n_out ids, and
    dead letters do not raise n_out, so one call can look at max * max messages (up to
    1,000,000) with no budget; every one it buries goes into `gone`, and
    receive.lua:257 HDELs them with unpack(gone): past ~8000 Lua's C stack limit
    errors, after bury() and the per-group ZREM/HINCRBY (receive.lua:249-252) already
    ran (a script error does not roll back). Fix: a budget of entries looked at per
    call as in the standard path (stop and answer next_ms 0), and HDEL per group.
    """
    q = lib.create_queue("orders", fifo=True, retention=60)
    k = keys_of(q)
    for g in range(9):
        q.send_batch([f"{g}-{i}" for i in range(1000)], group=f"g{g}")
    _age_messages(r, k.msgs, 61_000)
    q.send("fresh", group="zz")
    got: list[Any] = []
    error = None
    try:
        got = q.receive(1000)
    except rqueue.RQueueError as e:  # the defect: a ServerError
        error = e
    for _ in range(20):  # a correct implementation may need a few calls
        if any(m.body == "fresh" for m in got):
            break
        got = q.receive(1000)
    assert error is None, error
    assert [m.body for m in got] == ["fresh"]


def test_set_attributes_on_a_subscription_breaks_its_refresh(client: Any) -> None:
    """SPEC 9: set_attributes changes any attribute of a live queue; SPEC 5: a
    subscription (a queue with all of the above) not refreshed within its TTL is
    removed with its backlog.

    Breaks: after s.set_attributes(visibility_timeout=60) on a subscription, its
    consumer's keep-alive s.refresh() raises QueueAlreadyExists, every time: the
    subscription can no longer be kept alive and is reaped with its backlog at the end
    of its TTL.

    Why: AsyncSubscription.refresh (rqueue/_async/topic.py:37-46) re-sends the
    attributes given to subscribe(), and lua/subscribe.lua:57-60 compares them with the
    stored ones (attributes_exist_error), which set_attributes (lua/set_attributes.lua)
    changed. Fix: a refresh should only push the expiry (or refresh with the stored
    attributes), or set_attributes should be refused on subscriptions.
    """
    t = client.topic("events")
    s = t.subscribe("billing", ttl=60)
    s.set_attributes(visibility_timeout=60)
    s.refresh()  # raises QueueAlreadyExists
    assert s.attributes().visibility_timeout == 60


def test_set_attributes_changes_only_the_queue_its_dead_letter_queue_keeps_its_own(client: Any) -> None:
    """Found by review: README said a dead-letter queue "has the source's visibility timeout",
    but set_attributes on the source left the DLQ at the old one. Decided (README): a
    dead-letter queue starts with the source's visibility timeout and keeps its own
    attributes after; q.dead_letter_queue.set_attributes changes them."""
    q = client.create_queue("orders", fifo=True)
    q.set_attributes(visibility_timeout=60)
    assert q.dead_letter_queue.attributes().visibility_timeout == 30
    q.dead_letter_queue.set_attributes(visibility_timeout=60)
    assert q.dead_letter_queue.attributes().visibility_timeout == 60


def test_a_consumer_on_a_fifo_queue_runs_a_group_out_of_order_across_a_retry(lib: Any) -> None:
    """SPEC 10 (FIFO consumers): a Consumer runs one group's messages one after another
    in order, never side by side; when one fails, the later messages of that group that
    it holds are made visible again without running, so order is kept across retries.

    Breaks: a1, a2, a3 of group A; the handler fails a1 once. The Consumer received the
    three in one batch, ran them side by side, retried a1 after its backoff and
    acknowledged a2 and a3 meanwhile: processed order a2, a3, a1.

    Why: nothing in rqueue/_consumer knows groups (no FIFO consumer was built): jobs of
    one batch go to the pool independently, and a retry (change_visibility) of a1 does
    not give back a2/a3. Fix: per-group serial execution in the consumer and, on
    failure, change_visibility(0) of the group's later held messages.
    """
    q = lib.create_queue("orders", fifo=True)
    q.send_batch(["a1", "a2", "a3"], group="A")
    done: list[str] = []
    lock = threading.Lock()
    failed = {"a1": False}

    def handler(body: str) -> None:
        time.sleep(0.05)
        with lock:
            if body == "a1" and not failed["a1"]:
                failed["a1"] = True
                raise RuntimeError("first attempt fails")
            done.append(body)

    c = rqueue.Consumer(q, handler, concurrency=4, batch_size=10)
    c.start()
    deadline = time.monotonic() + 15
    while len(done) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    c.stop()
    assert done == ["a1", "a2", "a3"]


def test_stats_oldest_age_misses_a_message_waiting_behind_its_group(client: Any) -> None:
    """SPEC 4: stats().oldest_age is the age of the oldest message.

    Breaks: a1 (sent first) and a2 (1.2 s later) were received together; a1 was given
    back (change_visibility 0) and waits in its group, held by a2 in flight. stats()
    reports oldest_age ~0 s (a2's age) while a1, 1.2 s old, is stored and visible
    (stats().visible == 1): a monitor alarming on oldest_age never sees a group that
    is stuck behind a message in flight.

    Why: lua/stats.lua:36-47 looks only at the first 10 entries of vis and at the head
    of the first ready group (gr); a FIFO message waiting in gm whose group is in flight
    (gf) is in neither. Fix: also read the heads of the groups in gf (or keep the
    oldest waiting member's id), e.g. the smallest id in gm's first members per group.
    """
    q = client.create_queue("orders", fifo=True)
    q.send("a1", group="A")
    time.sleep(1.2)
    q.send("a2", group="A")
    a1, _a2 = q.receive(2)
    assert q.change_visibility(a1.receipt, 0)
    assert q.receive(10) == []  # a1 is back in its group, held by a2
    s = q.stats()
    assert (s.visible, s.in_flight) == (1, 1)
    assert s.oldest_age >= 1.2


def test_a_message_without_a_group_on_a_fifo_queue_becomes_a_group_of_its_own(lib: Any, r: Any) -> None:
    """Found by review: a FIFO receive dropped a message in vis without a group (an older
    client's send during a rolling upgrade), uncounted. Now it becomes a group of its own."""
    q = lib.create_queue("orders", fifo=True)
    keys = keys_of(q)
    r.hset(keys.msgs, "99000000001", b"%013dsplain" % server_ms(r))
    r.zadd(keys.vis, {"99000000001": 1})
    (m,) = q.receive(10)
    assert (m.body, m.group) == ("plain", "99000000001")
    assert q.delete(m.receipt)
    s = q.stats()
    assert (s.visible, s.in_flight, s.groups) == (0, 0, 0)
