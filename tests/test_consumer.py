"""The consumer framework, in process, sync (threads) and asyncio, on a real server."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

import rqueue
import rqueue.asyncio as rqa
from rqueue._consumer.core import Backoff, Settings
from rqueue._consumer.ledger import Ledger
from rqueue._protocol.keys import prefix_pattern

from .bridge import LoopThread
from .conftest import Harness, as_async, names_on_every_node, raw_client


def until(cond: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    """Await an observable event (polling a cheap check), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def empty(q: rqueue.Queue) -> bool:
    s = q.stats()
    return s.visible + s.in_flight + s.delayed == 0


# ---------------------------------------------------------------- behaviour


def test_processes_every_message_once_and_acks_in_batches(h: Harness) -> None:
    q = h.client.create_queue("jobs", visibility_timeout=30)
    q.send_batch([{"i": i} for i in range(300)])
    seen: list[int] = []
    lock = threading.Lock()

    def handler(body: dict[str, int]) -> str:
        with lock:
            seen.append(body["i"])
        return "ok"

    h.consume("jobs", handler, concurrency=8, batch_size=10)
    until(lambda: q.stats().deleted_total == 300, what="300 acks")
    assert sorted(seen) == list(range(300))
    assert empty(q)


def test_handler_return_value_answers_requests_and_tracked_sends(h: Harness) -> None:
    q = h.client.create_queue("jobs", visibility_timeout=30)

    def handler(body: dict[str, int]) -> dict[str, int]:
        if body["i"] < 0:
            raise rqueue.Reject("negative")
        return {"double": body["i"] * 2, "unsendable": object()} if body["i"] == 99 else {"double": body["i"] * 2}

    h.consume("jobs", handler, concurrency=4, batch_size=5)
    assert [q.request({"i": i}, timeout=30) for i in range(5)] == [{"double": 2 * i} for i in range(5)]
    with pytest.raises(rqueue.MessageDeadLettered, match="negative"):
        q.request({"i": -1}, timeout=30)
    assert q.request({"i": 99}, timeout=30) is None  # a reply that cannot be encoded arrives as None
    events: list[rqueue.Event] = []
    done = threading.Event()

    def on_event(e: rqueue.Event) -> None:
        events.append(e)
        if e.kind == "processed":
            done.set()

    q.send({"i": 21}, on_event=on_event)
    assert done.wait(30)
    assert [e.kind for e in events] == ["received", "processed"]
    assert events[-1].reply == {"double": 42}
    until(lambda: empty(q), what="all acked")


def test_failure_retries_with_backoff_then_dead_letters_with_the_error(h: Harness) -> None:
    q = h.client.create_queue("jobs", visibility_timeout=30, max_receive_count=3)
    q.send({"i": 1})
    results: list[rqueue.HandlerResult] = []
    calls: list[float] = []

    def handler(m: rqueue.Message) -> None:
        calls.append(time.monotonic())
        raise ValueError(f"boom on receive {m.receive_count}")

    h.consume("jobs", handler, retry_base=0.05, retry_cap=0.2, hooks=[results.append])
    until(lambda: q.stats().dead == 1, what="the dead letter")
    (dead,) = q.dead_letter_queue.receive(1)
    assert dead.body == {"i": 1}
    assert dead.dead_letter is not None
    assert "ValueError: boom on receive 3" in dead.dead_letter.detail
    assert "max_receive_count 3" in dead.dead_letter.detail
    until(lambda: len(results) == 3, what="three results")
    assert [r.outcome for r in results] == ["retried", "retried", "dead_lettered"]
    assert all(isinstance(r.error, ValueError) for r in results)
    assert len(calls) == 3


def test_reject_dead_letters_at_once_with_the_reason(h: Harness) -> None:
    q = h.client.create_queue("jobs", visibility_timeout=30, max_receive_count=5)
    q.send({"i": 1})
    results: list[rqueue.HandlerResult] = []

    def handler(body: Any) -> None:
        raise rqueue.Reject("customer does not exist")

    h.consume("jobs", handler, hooks=[results.append])
    until(lambda: q.stats().dead == 1, what="the dead letter")
    (dead,) = q.dead_letter_queue.receive(1)
    assert dead.dead_letter is not None
    assert (dead.dead_letter.reason, dead.dead_letter.detail) == ("rejected", "customer does not exist")
    assert [r.outcome for r in results] == ["rejected"]
    assert q.stats().received_total == 1


@dataclasses.dataclass
class Order:
    id: int
    amount: float


class Refund(pydantic.BaseModel):
    order_id: int
    reason: str


def test_typed_handlers_get_decoded_bodies_and_bad_bodies_are_rejected(h: Harness) -> None:
    q = h.client.create_queue("orders", visibility_timeout=30)
    r = h.client.create_queue("refunds", visibility_timeout=30)
    got: list[Any] = []

    def on_order(order: Order) -> None:
        got.append(order)

    def on_refund(refund: Refund) -> None:
        got.append(refund)

    q.send_batch([{"id": 1, "amount": 9.5}, {"id": 2}])
    r.send_batch([{"order_id": 1, "reason": "broken"}, {"order_id": "x"}])
    h.consume("orders", on_order)
    h.consume("refunds", on_refund)
    until(lambda: q.stats().dead == 1 and r.stats().dead == 1 and len(got) == 2, what="typed outcomes")
    assert Order(1, 9.5) in got and Refund(order_id=1, reason="broken") in got
    (bad_order,) = q.dead_letter_queue.receive(1)
    (bad_refund,) = r.dead_letter_queue.receive(1)
    assert bad_order.dead_letter is not None and bad_refund.dead_letter is not None
    assert bad_order.dead_letter.detail.startswith("body does not fit Order")
    assert "amount" in bad_order.dead_letter.detail
    assert bad_refund.dead_letter.detail.startswith("body does not fit Refund")
    assert "order_id" in bad_refund.dead_letter.detail


def test_router_dispatches_on_the_type_attribute(h: Harness) -> None:
    q = h.client.create_queue("events", visibility_timeout=30)
    got: list[tuple[str, Any]] = []
    router = rqueue.Router()

    @router.route("order.created")
    def created(order: Order) -> None:
        got.append(("created", order))

    @router.route("order.cancelled")
    def cancelled(m: rqueue.Message) -> None:
        got.append(("cancelled", m.body))

    q.send({"id": 1, "amount": 2.0}, attributes={"type": "order.created"})
    q.send({"id": 1}, attributes={"type": "order.cancelled"})
    q.send({"id": 3}, attributes={"type": "order.lost"})
    q.send({"id": 4})
    h.consume("events", router)
    until(lambda: len(got) == 2 and q.stats().dead == 2, what="routing")
    assert sorted(got, key=str) == [("cancelled", {"id": 1}), ("created", Order(1, 2.0))]
    details = sorted(m.dead_letter.detail for m in q.dead_letter_queue.receive(10) if m.dead_letter)
    assert details == ["no handler for type='order.lost'", "no handler for type=None"]


def test_never_holds_more_messages_than_free_slots(h: Harness) -> None:
    q = h.client.create_queue("jobs", visibility_timeout=30)
    q.send_batch([{"i": i} for i in range(20)])
    release = threading.Event()
    started: list[int] = []

    def handler(body: dict[str, int]) -> None:
        started.append(body["i"])
        assert release.wait(60)

    h.consume("jobs", handler, concurrency=3, batch_size=10, blocking=True)
    until(lambda: len(started) == 3, what="three running")
    for _ in range(20):  # the consumer keeps its hands off the rest while all slots are busy
        assert q.stats().in_flight == 3
        time.sleep(0.01)
    release.set()
    until(lambda: q.stats().deleted_total == 20, what="all done")
    assert sorted(started) == list(range(20))


def test_heartbeat_keeps_a_handler_three_times_the_visibility_timeout_from_redelivery(h: Harness) -> None:
    q = h.client.create_queue("slow", visibility_timeout=0.5)
    q.send({"i": 1})
    runs: list[int] = []

    def handler(m: rqueue.Message) -> None:
        runs.append(m.receive_count)
        time.sleep(1.5)

    h.consume("slow", handler, concurrency=4, blocking=True)
    until(lambda: q.stats().deleted_total == 1, what="the ack")
    assert runs == [1]
    assert q.stats().received_total == 1


def test_one_consumer_serves_several_queues_fairly(h: Harness) -> None:
    a = h.client.create_queue("a", visibility_timeout=30)
    b = h.client.create_queue("b", visibility_timeout=30)
    a.send_batch([{"q": "a"} for _ in range(200)])
    b.send_batch([{"q": "b"} for _ in range(200)])
    order: list[str] = []

    def handler(body: dict[str, str]) -> None:
        order.append(body["q"])

    h.consume(["a", "b"], handler, concurrency=2, batch_size=5)
    until(lambda: len(order) == 400, what="both queues drained")
    first = Counter(order[:100])
    assert first["a"] >= 25 and first["b"] >= 25, first


@pytest.mark.cluster
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_on_a_cluster_one_consumer_serves_queues_on_every_node_and_answers_requests(
    mode: str, cluster_url: str, prefix: str, request: pytest.FixtureRequest
) -> None:
    raw = raw_client(cluster_url)
    names = names_on_every_node(cluster_url)  # one queue on each master
    loop = request.getfixturevalue("loop_thread") if mode == "async" else None
    h = Harness(mode, cluster_url, prefix, loop)
    try:
        qs = [h.client.create_queue(n, visibility_timeout=30) for n in names]
        for q in qs:
            q.send_batch([{"i": i} for i in range(20)])

        def handler(m: rqueue.Message) -> dict[str, Any]:
            return {"queue": m.queue, "i": m.body["i"]}

        h.consume(names, handler, concurrency=4, batch_size=5)
        replies: dict[str, Any] = {}

        def ask(q: rqueue.Queue) -> None:
            replies[q.name] = q.request({"i": -1}, timeout=30)

        askers = [threading.Thread(target=ask, args=(q,)) for q in qs]
        for t in askers:
            t.start()
        for t in askers:
            t.join(60)
        assert replies == {q.name: {"queue": q.name, "i": -1} for q in qs}
        until(lambda: all(q.stats().deleted_total == 21 for q in qs), what="every queue drained")
        assert all(empty(q) for q in qs)
    finally:
        h.close()
        for key in list(raw.scan_iter(match=prefix_pattern(prefix), count=1000)):
            raw.unlink(key)
        raw.close()


def test_stop_returns_promptly_from_an_idle_long_poll_and_leaves_nothing_hidden(h: Harness) -> None:
    q = h.client.create_queue("idle", visibility_timeout=30)
    h.consume("idle", lambda body: None)
    time.sleep(0.2)  # let the receiver block in its long poll (the point of this test)
    t0 = time.monotonic()
    h.stop_all()
    assert time.monotonic() - t0 < 2.0
    q.send({"i": 1})
    assert q.stats().visible == 1


def test_graceful_stop_finishes_in_flight_work_and_acks_it(h: Harness) -> None:
    q = h.client.create_queue("jobs", visibility_timeout=30)
    q.send_batch([{"i": i} for i in range(10)])
    started = threading.Event()
    done: list[int] = []

    def handler(body: dict[str, int]) -> None:
        started.set()
        time.sleep(0.5)
        done.append(body["i"])

    h.consume("jobs", handler, concurrency=2, batch_size=2, blocking=True)
    assert started.wait(30)
    h.stop_all()
    s = q.stats()
    assert s.in_flight == 0
    assert s.deleted_total == len(done) >= 1
    assert s.visible == 10 - len(done)


def test_prometheus_hook_counts_outcomes(h: Harness) -> None:
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    hook = rqueue.PrometheusHook(registry)
    q = h.client.create_queue("jobs", visibility_timeout=30)
    q.send_batch([{"i": i} for i in range(10)])

    def handler(body: dict[str, int]) -> None:
        if body["i"] == 3:
            raise rqueue.Reject("three")

    h.consume("jobs", handler, hooks=[hook])
    until(lambda: q.stats().deleted_total == 9 and q.stats().dead == 1, what="all outcomes")

    def value(outcome: str) -> float:
        total = 0.0
        for metric in registry.collect():
            for sample in metric.samples:
                if sample.name == "rqueue_messages_total" and sample.labels["outcome"] == outcome:
                    total += sample.value
        return total

    until(lambda: value("ok") == 9 and value("rejected") == 1, what="metrics")
    counts = [s.value for m in registry.collect() for s in m.samples if s.name == "rqueue_processing_seconds_count"]
    assert sum(counts) == 10


# ---------------------------------------------------------------- validation


def test_bad_arguments_raise_clear_errors(backend_url: str, prefix: str) -> None:
    with rqueue.connect(backend_url, prefix=prefix) as c:
        q = c.create_queue("v")

        async def ahandler(body: Any) -> None:
            pass

        with pytest.raises(rqueue.InvalidParameter, match="rqueue.asyncio.Consumer"):
            rqueue.Consumer(q, ahandler)
        with pytest.raises(rqueue.InvalidParameter, match="concurrency must be an integer from 1"):
            rqueue.Consumer(q, print, concurrency=0)
        with pytest.raises(rqueue.InvalidParameter, match="batch_size"):
            rqueue.Consumer(q, print, batch_size=1001)
        with pytest.raises(rqueue.InvalidParameter, match="exactly one argument"):
            rqueue.Consumer(q, lambda a, b: None)
        with pytest.raises(rqueue.QueueDoesNotExist):
            rqueue.Consumer(c.queue("missing"), print).start()
        c.delete_queue("v")


# ---------------------------------------------------------------- the core, no server


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    b = Backoff(0.5, 60)
    assert [b.delay(n, lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert b.delay(30, lambda: 1.0) == 60
    assert b.delay(3, lambda: 0.0) == 0.0


def _settings(**kw: Any) -> Settings:
    opts: dict[str, Any] = {
        "concurrency": 4,
        "batch_size": 3,
        "retry_base": 0.5,
        "retry_cap": 60,
        "flush_interval": 0.005,
        "shutdown_timeout": 1,
        "visibility_timeout": None,
    }
    opts.update(kw)
    return Settings.of(**opts)


def _msg(i: int, rc: int = 1) -> rqueue.Message:
    return rqueue.Message(str(i), {}, {}, f"{i}.{i}", rc, 0, 0, "q")


def test_tracker_slots_flush_by_count_and_unstarted_release() -> None:
    t = Ledger(_settings(), [30.0], [None])
    assert t.reserve() == 3 and t.free == 1
    jobs = t.received(0, [_msg(1), _msg(2)], 0.0)[0]
    t.unreserve(1)
    assert t.free == 2
    jobs[0].started = True
    assert t.finish(jobs[0], "r", None, 0.0)[1]  # (outcome, flush now): first pending ack starts the timer
    assert t.flush_in(0.001) == pytest.approx(0.004)
    release = t.take_unstarted()
    assert release.releases == {0: ["2.2"]} and t.free == 4 and not t.jobs
    flush = t.take()
    assert flush.deletes == {0: [("1.1", "r")]} and t.flush_in(0.0) is None
    more = t.received(0, [_msg(i) for i in range(3, 6)], 0.0)[0]
    decisions = [t.finish(j, None, None, 0.0)[1] for j in more]
    assert decisions == [True, False, True]  # the third reaches batch_size
    assert t.flush_in(0.0) == 0.0


def test_tracker_heartbeat_extends_leases_at_half_the_timeout() -> None:
    t = Ledger(_settings(), [10.0], [None])
    (job,) = t.received(0, [_msg(1)], 100.0)[0]
    assert t.heartbeat_in(100.0) == pytest.approx(5.0)
    assert t.heartbeat(104.0) == []
    assert t.heartbeat(105.0) == [(0, ["1.1"])]
    assert job.lease_end == 115.0


def test_a_crashed_internal_thread_stops_run_with_an_error(
    backend_url: str, prefix: str, loop_thread: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the consumer's own receiver must not leave a worker idling forever."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(Ledger, "received", broken)
    client = rqueue.connect(backend_url, prefix=prefix)
    q = client.create_queue("jobs")
    q.send("x")
    outcome: list[BaseException | None] = []

    def run_sync() -> None:
        try:
            rqueue.Consumer(q, lambda body: None).run()
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)

    t = threading.Thread(target=run_sync)
    t.start()
    t.join(60)
    assert not t.is_alive()
    assert isinstance(outcome[0], RuntimeError) and "injected bug" in str(outcome[0])

    async def run_async() -> None:
        ac = await rqa.connect(backend_url, prefix=prefix)
        try:
            await rqa.Consumer(ac.queue("jobs"), as_async(lambda body: None)).run()
        finally:
            await ac.aclose()

    q.send("y")
    with pytest.raises(RuntimeError, match="injected bug"):
        loop_thread.run(run_async(), timeout=60)
    client.delete_queue("jobs")
    client.close()
