"""Consumers on FIFO queues (SPEC 10): one group at a time and in order, groups side by side.

Sync (threads) and asyncio consumers on standalone, Sentinel and Cluster, then
the decisions (``HeldGroups``, ``Ledger``, ``Control``) without a server.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rqueue
from rqueue._consumer.control import Control, Wakes
from rqueue._consumer.core import Settings
from rqueue._consumer.groups import HeldGroups
from rqueue._consumer.jobs import GroupJob
from rqueue._consumer.ledger import Ledger
from rqueue._consumer.lifecycle import Cause, Lifecycle, Outage
from rqueue._protocol.keys import QueueKeys

from .conftest import Harness
from .test_consumer import until


class Recorder:
    """What ran, per group, and whether two messages of one group ever ran at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.runs: dict[str, list[Any]] = {}
        self.overlaps: list[tuple[str, Any]] = []

    def start(self, group: str, item: Any) -> None:
        with self.lock:
            if self.running[group]:
                self.overlaps.append((group, item))
            self.running[group] += 1
            self.runs.setdefault(group, []).append(item)

    def end(self, group: str) -> None:
        with self.lock:
            self.running[group] -= 1


def deleted(q: rqueue.Queue, n: int) -> bool:
    return q.stats().deleted_total == n


# ---------------------------------------------------------------- order, exclusivity, parallel groups


def test_each_group_runs_in_send_order_never_two_at_once(h: Harness) -> None:
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    groups = [f"g{i}" for i in range(6)]
    for n in range(8):  # every batch: one message of each group, so groups interleave in the queue
        q.send_batch([{"g": g, "n": n} for g in groups], group=groups)
    rec = Recorder()

    def handler(body: dict[str, Any]) -> None:
        rec.start(body["g"], body["n"])
        time.sleep(0.001)  # a window for an overlap, were one possible
        rec.end(body["g"])

    h.consume("fifo", handler, concurrency=4, batch_size=10, blocking=True)
    until(lambda: deleted(q, 48), what="48 acks")
    assert rec.overlaps == []
    assert rec.runs == {g: list(range(8)) for g in groups}
    s = q.stats()
    assert (s.visible, s.in_flight, s.received_total) == (0, 0, 48)


def test_different_groups_run_side_by_side_even_when_one_receive_brought_several_of_one(h: Harness) -> None:
    """Concurrency 2: the first receive brings a1 and a2 (consecutive, one group); they take one
    slot together, so b1 gets the other and a1 and b1 meet at a barrier."""
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    q.send_batch(["a1", "a2", "a3"], group="A")
    q.send_batch(["b1", "b2", "b3"], group="B")
    barrier = threading.Barrier(2, timeout=30)
    met: list[str] = []

    def handler(body: str) -> None:
        if body in ("a1", "b1"):
            barrier.wait()
            met.append(body)

    h.consume("fifo", handler, concurrency=2, batch_size=10, blocking=True)
    until(lambda: deleted(q, 6), timeout=60, what="6 acks")
    assert sorted(met) == ["a1", "b1"]


def test_a_slow_group_does_not_hold_back_the_others(h: Harness) -> None:
    """Group A's first message waits until every message of the other groups has run, with
    concurrency 2 and ten of A's messages held behind it."""
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    q.send_batch([f"a{i}" for i in range(10)], group="A")
    others = [f"{g}{i}" for g in "BCDEF" for i in range(3)]
    q.send_batch(others, group=[o[0] for o in others])
    rest_done = threading.Event()
    ran: list[str] = []
    lock = threading.Lock()
    waited: list[bool] = []

    def handler(body: str) -> None:
        if body == "a0":
            waited.append(rest_done.wait(30))
        with lock:
            ran.append(body)
            if sum(1 for b in ran if b[0] != "a") == len(others):
                rest_done.set()

    h.consume("fifo", handler, concurrency=2, batch_size=10, blocking=True)
    until(lambda: deleted(q, 25), timeout=60, what="25 acks")
    assert waited == [True]
    assert [b for b in ran if b[0] == "a"] == [f"a{i}" for i in range(10)]


# ---------------------------------------------------------------- failures


def test_a_failure_gives_back_the_later_held_messages_unrun_and_order_survives_the_retry(h: Harness) -> None:
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    a_ids = q.send_batch(["a1", "a2", "a3"], group="A")
    q.send_batch(["b1", "b2"], group="B")
    runs: list[tuple[str, int]] = []
    results: list[rqueue.HandlerResult] = []

    def handler(m: rqueue.Message) -> None:
        runs.append((m.body, m.receive_count))
        if m.body == "a1" and m.receive_count == 1:
            raise ValueError("first try")

    # the first receive (4 slots) brings a1, a2, a3 and b1: a2 and a3 wait behind a1 when it fails
    h.consume("fifo", handler, concurrency=4, batch_size=10, retry_base=0.05, retry_cap=0.05, hooks=[results.append])
    until(lambda: deleted(q, 5), what="5 acks")
    assert [r for r in runs if r[0][0] == "a"] == [("a1", 1), ("a1", 2), ("a2", 1), ("a3", 1)]
    assert [r for r in runs if r[0][0] == "b"] == [("b1", 1), ("b2", 1)]
    until(lambda: len(results) == 8, what="8 results")
    released = sorted((r.message_id, r.handler, r.seconds, r.error) for r in results if r.outcome == "released")
    assert released == [(a_ids[1], "", 0.0, None), (a_ids[2], "", 0.0, None)]
    assert Counter(r.outcome for r in results) == {"ok": 5, "retried": 1, "released": 2}
    assert q.stats().received_total == 8  # every receive; a2 and a3 ran as received once (see above)


def test_reject_dead_letters_the_message_and_its_group_moves_on(h: Harness) -> None:
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30, max_receive_count=5)
    q.send_batch(["a1", "a2", "a3"], group="A")
    runs: list[tuple[str, int]] = []
    results: list[rqueue.HandlerResult] = []

    def handler(m: rqueue.Message) -> None:
        runs.append((m.body, m.receive_count))
        if m.body == "a1":
            raise rqueue.Reject("bad order")

    h.consume("fifo", handler, concurrency=4, batch_size=10, hooks=[results.append])
    until(lambda: deleted(q, 2) and q.stats().dead == 1, what="2 acks and a dead letter")
    assert runs == [("a1", 1), ("a2", 1), ("a3", 1)]
    (dead,) = q.dead_letter_queue.receive(1)
    assert (dead.body, dead.group) == ("a1", "A")
    assert dead.dead_letter is not None
    assert (dead.dead_letter.reason, dead.dead_letter.detail) == ("rejected", "bad order")
    until(lambda: len(results) == 5, what="5 results")
    assert Counter(r.outcome for r in results) == {"rejected": 1, "released": 2, "ok": 2}


def test_messages_behind_one_that_keeps_failing_run_once_it_is_dead_lettered(h: Harness) -> None:
    """max_receive_count 3: a1 fails three times and is dead-lettered; a2 and a3, given back after
    each failure, are not dead-lettered with it: their receives given back do not count."""
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30, max_receive_count=3)
    q.send_batch(["a1", "a2", "a3"], group="A")
    runs: list[tuple[str, int]] = []
    results: list[rqueue.HandlerResult] = []

    def handler(m: rqueue.Message) -> None:
        runs.append((m.body, m.receive_count))
        if m.body == "a1":
            raise ValueError("never works")

    h.consume("fifo", handler, concurrency=4, batch_size=10, retry_base=0.01, retry_cap=0.02, hooks=[results.append])
    until(lambda: deleted(q, 2) and q.stats().dead == 1, what="2 acks and a dead letter")
    assert runs == [("a1", 1), ("a1", 2), ("a1", 3), ("a2", 1), ("a3", 1)]
    until(lambda: len(results) == 11, what="11 results")
    assert Counter(r.outcome for r in results) == {"retried": 2, "dead_lettered": 1, "released": 6, "ok": 2}


# ---------------------------------------------------------------- stopping, long handlers


def test_a_graceful_stop_mid_group_loses_nothing_and_keeps_order_on_restart(h: Harness) -> None:
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    q.send_batch([f"a{i}" for i in range(6)], group="A")
    q.send_batch([f"b{i}" for i in range(6)], group="B")
    reached, proceed = threading.Event(), threading.Event()
    done: list[str] = []
    lock = threading.Lock()

    def handler(body: str) -> None:
        if body == "a2" and not proceed.is_set():
            reached.set()
            assert proceed.wait(60)
        with lock:
            done.append(body)

    h.consume("fifo", handler, concurrency=4, batch_size=10, blocking=True)
    assert reached.wait(30)
    stopper = threading.Thread(target=h.stop_all)
    stopper.start()
    # the stop gives back every message not started (a3.. behind a2, and what B has left)
    until(lambda: q.stats().in_flight == 1, what="only a2 in flight")
    proceed.set()
    stopper.join(60)
    assert not stopper.is_alive()
    s = q.stats()
    assert (s.in_flight, s.deleted_total) == (0, len(done))
    assert [b for b in done if b[0] == "a"] == ["a0", "a1", "a2"]
    h.consume("fifo", handler, concurrency=4, batch_size=10, blocking=True)
    until(lambda: deleted(q, 12), what="12 acks")
    assert [b for b in done if b[0] == "a"] == [f"a{i}" for i in range(6)]
    assert [b for b in done if b[0] == "b"] == [f"b{i}" for i in range(6)]


def test_held_messages_keep_their_lease_behind_a_handler_longer_than_the_visibility_timeout(h: Harness) -> None:
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=0.5)  # a lease of 1 s (the floor)
    q.send_batch(["a1", "a2", "a3"], group="A")
    runs: list[tuple[str, int]] = []

    def handler(m: rqueue.Message) -> None:
        runs.append((m.body, m.receive_count))
        if m.body == "a1":
            time.sleep(2.5)  # the point of this test: longer than the lease of a2 and a3 waiting behind it

    h.consume("fifo", handler, concurrency=4, batch_size=10, blocking=True)
    until(lambda: deleted(q, 3), what="3 acks")
    assert runs == [("a1", 1), ("a2", 1), ("a3", 1)]
    assert q.stats().received_total == 3


def test_when_held_leases_end_anyway_the_group_comes_again_and_waits_for_the_old_run(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No heartbeat reaches the server (as when it cannot be sent in time): a1 outlives the lease
    of everything held, the consumer receives group A again, drops its stale a2 and a3 unrun,
    and runs the new delivery only after a1 has returned."""
    monkeypatch.setattr(Control, "heartbeat_calls", lambda self, due: [])
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=0.5)  # a lease of 1 s (the floor)
    q.send_batch(["a1", "a2", "a3"], group="A")
    rec = Recorder()
    runs: list[tuple[str, int]] = []

    def handler(m: rqueue.Message) -> None:
        rec.start("A", m.body)
        runs.append((m.body, m.receive_count))
        if m.receive_count == 1 and m.body == "a1":
            until(lambda: q.stats().received_total == 6, what="group A received again")
        rec.end("A")

    h.consume("fifo", handler, concurrency=4, batch_size=10, blocking=True)
    until(lambda: deleted(q, 3), what="3 acks")
    assert rec.overlaps == []
    assert runs == [("a1", 1), ("a1", 2), ("a2", 2), ("a3", 2)]
    assert "2 held message(s) of FIFO queue 'fifo' lost their lease before they ran" in caplog.text


def test_many_groups_with_concurrency_one_run_one_message_at_a_time_in_order(h: Harness) -> None:
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    groups = [f"g{i}" for i in range(15)]
    for n in range(3):
        q.send_batch([{"g": g, "n": n} for g in groups], group=groups)
    rec = Recorder()

    def handler(body: dict[str, Any]) -> None:
        rec.start("all", (body["g"], body["n"]))
        rec.end("all")

    h.consume("fifo", handler, concurrency=1, batch_size=10)
    until(lambda: deleted(q, 45), what="45 acks")
    assert rec.overlaps == []
    ran = rec.runs["all"]
    assert sorted(ran) == sorted((g, n) for g in groups for n in range(3))
    assert all([n for g2, n in ran if g2 == g] == [0, 1, 2] for g in groups)


def test_two_consumers_with_failing_handlers_one_stopped_mid_way_keep_every_group_in_order(h: Harness) -> None:
    """Two consumers share a FIFO queue; some first attempts fail, some messages are rejected,
    and the first consumer stops while the second goes on. Across both, a group never runs two
    at once, finishes in send order (rejected ones in their place), and nothing is lost."""
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    groups, per_group = 8, 12
    for n in range(per_group):
        q.send_batch([{"g": g, "n": n} for g in range(groups)], group=[f"g{g}" for g in range(groups)])
    rec = Recorder()
    finished: dict[int, list[Any]] = {g: [] for g in range(groups)}
    attempts: Counter[tuple[int, int]] = Counter()

    def handler(body: dict[str, int]) -> None:
        g, n = body["g"], body["n"]
        rec.start(str(g), n)
        with rec.lock:
            attempts[g, n] += 1
            flaky = (g * 7 + n) % 5 == 0 and attempts[g, n] == 1
            rejected = (g * 3 + n) % 11 == 0
        time.sleep(0.001)
        with rec.lock:
            if rejected or not flaky:
                finished[g].append(("rejected", n) if rejected else n)
        rec.end(str(g))
        if rejected:
            raise rqueue.Reject("no")
        if flaky:
            raise ValueError("flaky")

    opts: dict[str, Any] = {"concurrency": 3, "batch_size": 5, "retry_base": 0.01, "retry_cap": 0.05}
    h.consume("fifo", handler, blocking=True, **opts)
    stop_first = h._stops.pop()
    h.consume("fifo", handler, blocking=True, **opts)
    until(lambda: q.stats().deleted_total >= groups * per_group // 3, what="a third done")
    stop_first()
    total = groups * per_group
    rejected = sum(1 for g in range(groups) for n in range(per_group) if (g * 3 + n) % 11 == 0)
    until(lambda: deleted(q, total - rejected) and q.stats().dead == rejected, timeout=60, what="all done")
    assert rec.overlaps == []
    for g in range(groups):
        assert finished[g] == [("rejected", n) if (g * 3 + n) % 11 == 0 else n for n in range(per_group)], g


def test_one_consumer_of_a_fifo_queue_a_standard_queue_and_a_dead_letter_queue(h: Harness) -> None:
    """Only the FIFO queue's messages wait for their group; its dead letters keep their group
    (for redrive) but the dead-letter queue is not FIFO: they run as any message does."""
    f = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    p = h.client.create_queue("plain", visibility_timeout=30)
    f.send_batch([f"a{i}" for i in range(5)], group="A")
    p.send_batch([f"p{i}" for i in range(5)])
    dead = f.receive(10)
    f.send_batch([f"a{i}" for i in range(5, 10)], group="A")
    assert f.reject_batch([m.receipt for m in dead], "to the dead-letter queue") == [True] * 5
    barrier = threading.Barrier(2, timeout=30)
    seen: list[tuple[str, str | None]] = []
    lock = threading.Lock()

    def handler(m: rqueue.Message) -> None:
        if m.body in ("a0", "a1"):  # two dead letters of one group, side by side
            barrier.wait()
        with lock:
            seen.append((m.body, m.group))

    h.consume(["fifo", "plain", f.dead_letter_queue.name], handler, concurrency=4, batch_size=10, blocking=True)
    until(lambda: len(seen) == 15, what="15 messages")
    assert [b for b, g in seen if b[0] == "a" and int(b[1:]) >= 5] == [f"a{i}" for i in range(5, 10)]
    assert sorted(b for b, g in seen if g is None) == [f"p{i}" for i in range(5)]
    assert sorted(b for b, g in seen if b[0] == "a" and int(b[1:]) < 5) == [f"a{i}" for i in range(5)]


# ---------------------------------------------------------------- routers and typed handlers


@dataclasses.dataclass
class Order:
    id: int


def test_a_router_with_typed_handlers_keeps_each_groups_order(h: Harness) -> None:
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    seen: list[tuple[str, str, int]] = []
    lock = threading.Lock()
    router = rqueue.Router()

    @router.route("order")
    def on_order(m: rqueue.Message) -> None:
        with lock:
            seen.append((str(m.group), "order", m.body["id"]))

    @router.route("note")
    def on_note(m: rqueue.Message) -> None:
        with lock:
            seen.append((str(m.group), "note", m.body["id"]))

    for i in range(6):
        for g in ("x", "y"):
            q.send({"id": i}, attributes={"type": "order" if i % 2 else "note"}, group=g)
    h.consume("fifo", router, concurrency=4, batch_size=10)
    until(lambda: deleted(q, 12), what="12 acks")
    for g in ("x", "y"):
        assert [(t, i) for g2, t, i in seen if g2 == g] == [("order" if i % 2 else "note", i) for i in range(6)]


def test_a_typed_handler_rejects_a_body_that_does_not_fit_and_the_group_goes_on(h: Harness) -> None:
    q = h.client.create_queue("fifo", fifo=True, visibility_timeout=30)
    q.send_batch([{"id": 1}, {"nope": 2}, {"id": 3}], group="A")
    got: list[Order] = []

    def on_order(order: Order) -> None:
        got.append(order)

    h.consume("fifo", on_order, concurrency=2)
    until(lambda: deleted(q, 2) and q.stats().dead == 1, what="2 acks and a dead letter")
    assert got == [Order(1), Order(3)]


# ---------------------------------------------------------------- the decisions, no server


def _gmsg(i: int, group: str, token: int = 1, rc: int = 1) -> rqueue.Message:
    return rqueue.Message(str(i), {}, {}, f"{i}.{token}", rc, 0, 0, "q", None, group)


class _Woken:
    def __init__(self) -> None:
        self.log: list[str] = []

    def wakes(self) -> Wakes:
        def note(what: str) -> Any:
            return lambda: self.log.append(what)

        return Wakes(note("slots"), note("maint"), note("jobs"), note("halted"), note("closing"), lambda: False)


def _fifo_control(concurrency: int = 4, batch_size: int = 10, mrc: int | None = None) -> Control:
    settings = Settings.of(concurrency, batch_size, 0.5, 60, 0.005, 1, None)
    ledger = Ledger(settings, [30.0], [mrc], [False], [True])
    life = Lifecycle()
    life.to(Cause.START)
    keys = [QueueKeys.for_queue("t", "q")]
    return Control(ledger, life, keys, ["q"], [], [Outage(0.5, 30.0)], _Woken().wakes())


def _arrive(ctl: Control, msgs: list[rqueue.Message]) -> None:
    n, _ = ctl.go(0)
    ctl.receive_ended()
    ctl.arrived(0, n, (msgs, -1, None), 0.0)


def test_a_receive_queues_only_the_first_of_each_group_and_takes_one_slot_per_group() -> None:
    ctl = _fifo_control(concurrency=4)
    _arrive(ctl, [_gmsg(1, "A"), _gmsg(2, "A"), _gmsg(3, "A"), _gmsg(4, "B")])
    assert [j.message.id for j in ctl.work] == ["1", "4"]
    assert ctl.ledger.free == 2 and len(ctl.ledger.jobs) == 4  # all four held (their leases extended)
    assert all(isinstance(j, GroupJob) for j in ctl.ledger.jobs.values())


def test_an_ok_starts_the_next_of_its_group_in_the_same_slot_and_the_last_frees_it() -> None:
    ctl = _fifo_control(concurrency=4)
    _arrive(ctl, [_gmsg(1, "A"), _gmsg(2, "A")])
    first = ctl.take()
    assert first is not None and ctl.take() is None  # a2 waits behind a1
    assert ctl.finished(first, None, None, 0.0) == "ok"
    assert [j.message.id for j in ctl.work] == ["2"] and ctl.ledger.free == 3
    second = ctl.take()
    assert second is not None
    ctl.finished(second, None, None, 0.0)
    assert ctl.ledger.free == 4 and not ctl.ledger.jobs and ctl.ledger.groups is not None
    assert ctl.ledger.groups.lines == {}
    assert ctl.ledger.pending.deletes == {0: [("1.1", None), ("2.1", None)]}


@pytest.mark.parametrize(
    ("error", "outcome"), [(ValueError("x"), "retried"), (rqueue.Reject("no"), "rejected"), (KeyError("k"), "dead")]
)
def test_a_failure_gives_back_the_rest_of_its_group_unrun(error: BaseException, outcome: str) -> None:
    ctl = _fifo_control(concurrency=4, mrc=1 if outcome == "dead" else None)
    _arrive(ctl, [_gmsg(1, "A"), _gmsg(2, "A"), _gmsg(3, "A"), _gmsg(4, "B")])
    a1 = ctl.take()
    assert a1 is not None and isinstance(a1, GroupJob)
    got = ctl.finished(a1, None, error, 0.0)
    assert got == {"dead": "dead_lettered"}.get(outcome, outcome)
    assert a1.released is not None and [j.message.id for j in a1.released] == ["2", "3"]
    pending = ctl.ledger.pending
    assert pending.unreceives == {0: ["2.1", "3.1"]} and pending.releases == {}
    assert ctl.ledger.pending_count == 3  # the failure and the two given back
    assert set(ctl.ledger.jobs) == {(0, "4.1")} and ctl.ledger.free == 3
    assert [j.message.id for j in ctl.work] == ["4"]
    calls = pending.calls(ctl.keys)
    assert [label for label, _ in pending.plan][-1] == "unreceive"
    assert calls[-1].script.name == "unreceive"


def test_released_messages_reach_the_hooks_as_released_not_as_failures() -> None:
    ctl = _fifo_control()
    results: list[rqueue.HandlerResult] = []
    ctl.hooks = [results.append]
    _arrive(ctl, [_gmsg(1, "A"), _gmsg(2, "A")])
    a1 = ctl.take()
    assert a1 is not None
    outcome = ctl.finished(a1, None, ValueError("x"), 0.0)
    ctl.report(a1, "h", outcome, 0.5, ValueError("x"))
    assert [(r.message_id, r.handler, r.outcome, r.seconds, r.error) for r in results][1:] == [
        ("2", "", "released", 0.0, None)
    ]
    assert results[0].outcome == "retried"


def test_stopping_gives_back_what_has_not_started_and_a_group_keeps_its_slot_while_one_runs() -> None:
    ctl = _fifo_control(concurrency=4)
    _arrive(ctl, [_gmsg(1, "A"), _gmsg(2, "A"), _gmsg(3, "B"), _gmsg(4, "B")])
    a1 = ctl.take()
    assert a1 is not None and ctl.ledger.free == 2
    ctl.life.request_stop(outside=True)
    flush = ctl.release()
    assert flush.releases == {0: ["2.1", "3.1", "4.1"]} and not flush.unreceives  # as for any queue
    assert ctl.ledger.free == 3  # B's slot is free; A's is a1's until it finishes
    assert ctl.finished(a1, None, None, 0.0) == "ok"
    assert ctl.ledger.free == 4 and not ctl.ledger.jobs and not ctl.work


def test_a_group_received_again_drops_its_stale_held_messages_and_waits_for_the_running_one() -> None:
    """A receive brings a group the consumer holds only after those leases ended: the held
    messages not started are dropped (they come again), the new ones wait for the running one."""
    ctl = _fifo_control(concurrency=4)
    _arrive(ctl, [_gmsg(1, "A"), _gmsg(2, "A"), _gmsg(3, "A")])
    a1 = ctl.take()
    assert a1 is not None
    _arrive(ctl, [_gmsg(1, "A", token=2, rc=2), _gmsg(2, "A", token=2, rc=2), _gmsg(5, "C")])
    assert set(ctl.ledger.jobs) == {(0, "1.1"), (0, "1.2"), (0, "2.2"), (0, "5.1")}
    assert [j.message.id for j in ctl.work] == ["5"]
    assert ctl.ledger.free == 2  # A's line kept its one slot; C took one
    ctl.finished(a1, None, None, 0.0)
    assert [j.message.receipt for j in ctl.work] == ["1.2", "5.1"]


def test_a_stale_group_whose_first_has_not_started_starts_again_from_the_new_first() -> None:
    ctl = _fifo_control(concurrency=4)
    _arrive(ctl, [_gmsg(1, "A"), _gmsg(2, "A")])
    _arrive(ctl, [_gmsg(1, "A", token=2, rc=2), _gmsg(2, "A", token=2, rc=2)])
    assert [j.message.receipt for j in ctl.work] == ["1.2"]
    assert set(ctl.ledger.jobs) == {(0, "1.2"), (0, "2.2")} and ctl.ledger.free == 3


def test_held_groups_forget_a_crashed_job_and_free_the_slot_only_when_the_line_ends() -> None:
    groups = HeldGroups([True])
    jobs = [GroupJob(_gmsg(i, "A"), 0, 0.0) for i in (1, 2)]
    start, slots, stale = groups.join(jobs)
    assert (start, slots, stale) == ([jobs[0]], 1, [])
    jobs[0].started = True
    assert groups.forget(jobs[0]) is False  # a2 still held: the shutdown gives it back
    assert groups.keep_started() == 1 and groups.lines == {}
    assert groups.forget(jobs[1]) is False


def test_a_queue_that_is_not_fifo_holds_plain_jobs_as_before() -> None:
    settings = Settings.of(4, 10, 0.5, 60, 0.005, 1, None)
    ledger = Ledger(settings, [30.0, 30.0], [None, None], [False, False], [False, True])
    jobs, used, stale = ledger.received(0, [_gmsg(1, "A"), _gmsg(2, "A")], 0.0)
    assert [type(j).__name__ for j in jobs] == ["Job", "Job"] and (used, stale) == (2, [])
    assert Ledger(settings, [30.0], [None]).groups is None


class _Sim:
    """A FIFO queue as the consumer sees it, for driving ``Control`` without a server: groups
    of numbered messages; a receive hands out consecutive messages of groups nothing of which
    is in flight (or, for a lease that ended, again what the consumer holds of a group)."""

    def __init__(self, groups: int) -> None:
        self.next = dict.fromkeys((f"g{i}" for i in range(groups)), 0)  # group -> its first undeleted
        self.out: dict[str, list[rqueue.Message]] = {}  # group -> in flight (latest delivery)
        self.token = 0
        self.ids = itertools.count(1)
        self.number: dict[str, int] = {}

    def deliver(self, group: str, k: int) -> list[rqueue.Message]:
        self.token += 1
        first = self.next[group]
        msgs = [_gmsg(10_000 * (int(group[1:]) + 1) + first + i, group, self.token) for i in range(k)]
        self.out[group] = msgs
        return msgs


def _check(ctl: Control, concurrency: int) -> None:
    book = ctl.ledger
    assert book.groups is not None
    lines = book.groups.lines
    held = {id(j) for line in lines.values() for j in line}
    assert held == {id(j) for j in book.jobs.values()}, "every held job is in a line, and only those"
    assert book.free + len(lines) == concurrency, (book.free, len(lines))
    for line in lines.values():
        assert line and all(not j.started for j in list(line)[1:]), "only the first of a line may have started"
        ids = [int(j.message.id) for j in line]
        assert ids == sorted(ids), "a line holds its group in order"
    firsts = {id(line[0]) for line in lines.values()}
    for j in ctl.work:
        assert id(j) in firsts and not j.started, "only the first of a line waits for a worker"


def _finish(ctl: Control, sim: _Sim, job: GroupJob, kind: str, done: dict[str, list[int]]) -> None:
    g = str(job.message.group)
    error = None if kind == "ok" else ValueError("x") if kind == "fail" else rqueue.Reject("r")
    ctl.finished(job, None, error, 0.0)
    current = g in sim.out and job.message.receipt in {m.receipt for m in sim.out[g]}  # else stale
    if kind == "ok":
        done.setdefault(g, []).append(int(job.message.id))
        if current:
            sim.next[g] += 1
            if sim.out[g][-1].receipt == job.message.receipt:
                del sim.out[g]
    else:  # retried (it comes back first) or dead-lettered; the rest of its line given back
        sim.out.pop(g, None)
        if kind == "reject" and current:
            sim.next[g] += 1


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
@given(st.data())
def test_the_decisions_keep_slots_lines_and_order_under_random_receives_finishes_and_stops(data: Any) -> None:
    concurrency = data.draw(st.integers(1, 5), "concurrency")
    ctl = _fifo_control(concurrency=concurrency, batch_size=data.draw(st.integers(1, 6), "batch"))
    sim = _Sim(groups=4)
    running: list[GroupJob] = []
    done: dict[str, list[int]] = {}  # group -> ids that finished ok, in order
    steps = ["receive"] * 3 + ["take"] * 4 + ["finish"] * 4 + ["stale", "stop"]
    for _ in range(data.draw(st.integers(5, 60), "steps")):
        step = data.draw(st.sampled_from(steps), "step")
        if step == "receive" and not ctl.life.halted:
            n, _flush = ctl.go(0)
            ctl.receive_ended()
            msgs: list[rqueue.Message] = []
            for g in data.draw(st.permutations(sorted(sim.next)), "order"):
                if len(msgs) < n and g not in sim.out:
                    msgs += sim.deliver(g, data.draw(st.integers(1, n - len(msgs)), "k"))
            ctl.arrived(0, n, (msgs, -1, None), 0.0)
        elif step == "stale" and sim.out and not ctl.life.halted:
            g = data.draw(st.sampled_from(sorted(sim.out)), "stale group")  # its lease ended: again
            n, _flush = ctl.go(0)
            ctl.receive_ended()
            ctl.arrived(0, n, (sim.deliver(g, min(n, len(sim.out[g])) or 1), -1, None), 0.0)
        elif step == "take" and (job := ctl.take()) is not None:
            assert isinstance(job, GroupJob)
            assert all(r.message.group != job.message.group for r in running), "two of a group at once"
            job_group = str(job.message.group)
            assert int(job.message.id) == 10_000 * (int(job_group[1:]) + 1) + sim.next[job_group], "out of order"
            running.append(job)
        elif step == "finish" and running:
            job = running.pop(data.draw(st.integers(0, len(running) - 1), "which"))
            _finish(ctl, sim, job, data.draw(st.sampled_from(["ok", "ok", "fail", "reject"]), "outcome"), done)
        elif step == "stop" and not ctl.life.halted:
            ctl.life.request_stop(outside=True)
            flush = ctl.release()
            for g, msgs in list(sim.out.items()):
                if any(m.receipt in flush.releases.get(0, []) for m in msgs):
                    del sim.out[g]  # what is not running went back (sim: the group is free once it finishes)
        _check(ctl, concurrency)
    for g, ids in done.items():
        assert ids == sorted(ids), f"group {g} finished out of order: {ids}"


def test_prometheus_counts_released_messages_without_a_processing_time() -> None:
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    hook = rqueue.PrometheusHook(registry)
    hook(rqueue.HandlerResult("q", "mod.handler", "retried", 0.25, "1", ValueError("x")))
    hook(rqueue.HandlerResult("q", "", "released", 0.0, "2", None))
    samples = {
        (s.name, s.labels.get("outcome"), s.labels["handler"]): s.value for m in registry.collect() for s in m.samples
    }
    assert samples["rqueue_messages_total", "released", ""] == 1
    assert samples["rqueue_messages_total", "retried", "mod.handler"] == 1
    assert samples["rqueue_processing_seconds_count", None, "mod.handler"] == 1
    assert ("rqueue_processing_seconds_count", None, "") not in samples
