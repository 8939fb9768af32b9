"""Consumer defects of issues 9 (2-7) and 17 (2, 4): each test failed on the main they were found on.

Every consumer test here runs sync and asyncio, on standalone, Sentinel and Cluster, with
its own ``rig`` fixture (a client, consumers of either kind, cleanup of the test's keys).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import rqueue
import rqueue.asyncio as rqa
from rqueue._consumer import core
from rqueue._consumer.core import Settings
from rqueue._consumer.flush import Flush, flush_problems
from rqueue._consumer.ledger import Ledger
from rqueue._protocol.keys import QueueKeys, prefix_pattern

from .bridge import LoopThread
from .conftest import raw_client
from .test_consumer import until


class Rig:
    """A sync client for sends and checks, and consumers of the fixture's kind (sync or asyncio)."""

    def __init__(self, mode: str, url: str, prefix: str, loop: LoopThread | None) -> None:
        self.mode, self.url, self.prefix, self.loop = mode, url, prefix, loop
        self.client = rqueue.connect(url, prefix=prefix)
        self._aclient: rqa.AsyncClient | None = None
        self._cleanups: list[Callable[[], None]] = []

    @property
    def is_async(self) -> bool:
        return self.mode == "async"

    def run(self, coro: Any, timeout: float = 60) -> Any:
        assert self.loop is not None
        return self.loop.run(coro, timeout)

    def handler(self, fn: Callable[..., Any], *, blocking: bool = False) -> Callable[..., Any]:
        """``fn`` for the thread consumer; an async twin (same annotations) for the asyncio one."""
        if not self.is_async:
            return fn

        @functools.wraps(fn)
        async def twin(arg: Any) -> Any:
            return await asyncio.to_thread(fn, arg) if blocking else fn(arg)

        return twin

    def consumer(self, names: str | list[str], handler: Callable[..., Any], **opts: Any) -> Any:
        """A consumer of ``names`` (not started); an async rig needs an async ``handler``."""
        names = [names] if isinstance(names, str) else names
        if not self.is_async:
            c: Any = rqueue.Consumer([self.client.queue(n) for n in names], handler, **opts)
        else:
            if self._aclient is None:
                self._aclient = self.run(rqa.connect(self.url, prefix=self.prefix))
            ac = self._aclient
            c = rqa.Consumer([ac.queue(n) for n in names], handler, **opts)
        self._cleanups.append(functools.partial(self.stop, c))
        return c

    def start(self, c: Any) -> Any:
        if self.is_async:
            self.run(c.start())
        else:
            c.start()
        return c

    def stop(self, c: Any) -> None:
        if self.is_async:
            self.run(c.stop())
        else:
            c.stop()

    def run_in_background(self, c: Any) -> Callable[[float], BaseException | None]:
        """Start ``c.run()``; the result waits for it to end and gives what it raised (or None)."""
        if self.is_async:
            assert self.loop is not None
            fut = asyncio.run_coroutine_threadsafe(c.run(), self.loop.loop)

            def result_async(timeout: float) -> BaseException | None:
                try:
                    fut.result(timeout)
                except BaseException as e:  # noqa: BLE001 - the test inspects it
                    return e
                return None

            return result_async
        outcome: list[BaseException | None] = []

        def target() -> None:
            try:
                c.run()
                outcome.append(None)
            except BaseException as e:  # noqa: BLE001 - the test inspects it
                outcome.append(e)

        t = threading.Thread(target=target, daemon=True)
        t.start()

        def result_sync(timeout: float) -> BaseException | None:
            t.join(timeout)
            if t.is_alive():
                raise AssertionError(f"run() still running after {timeout} s")
            return outcome[0]

        return result_sync

    def close(self) -> None:
        while self._cleanups:
            self._cleanups.pop()()
        if self._aclient is not None:
            self.run(self._aclient.aclose())
        self.client.close()


@pytest.fixture(params=["sync", "async"])
def rig(request: pytest.FixtureRequest, backend_url: str, prefix: str) -> Iterator[Rig]:
    loop = request.getfixturevalue("loop_thread") if request.param == "async" else None
    r = Rig(request.param, backend_url, prefix, loop)
    yield r
    r.close()
    raw = raw_client(backend_url)
    for key in list(raw.scan_iter(match=prefix_pattern(prefix), count=1000)):
        raw.unlink(key)
    raw.close()


def outcomes(results: list[rqueue.HandlerResult]) -> dict[str, list[str]]:
    by_id: dict[str, list[str]] = defaultdict(list)
    for r in results:
        by_id[r.message_id].append(r.outcome)
    return dict(by_id)


# ---------------------------------------------------------------- 9/2: unencodable replies


def test_unencodable_reply_reaches_the_sender_as_none_and_no_ack_is_lost(rig: Rig) -> None:
    q = rig.client.create_queue("jobs", visibility_timeout=30)
    results: list[rqueue.HandlerResult] = []
    runs: Counter[str] = Counter()

    class Opaque:
        pass

    replies: dict[str, Any] = {
        "surrogate": "file-\udcff.txt",  # os.fsdecode of a non-UTF-8 name
        "nested": {"name": "\ud800"},
        "nan": float("nan"),
        "object": Opaque(),
        "huge-int": 2**70,
        "ok": "fine",
    }

    def handler(m: rqueue.Message) -> Any:
        runs[m.id] += 1
        return replies.get(m.body, "\udcff")  # plain sends never send their reply, so never check it

    c = rig.consumer("jobs", rig.handler(handler), concurrency=4, batch_size=10, hooks=[results.append])
    rig.start(c)
    ids = q.send_batch([f"plain {i}" for i in range(50)])
    for kind in ("surrogate", "nested", "nan", "object", "huge-int"):
        assert q.request(kind, timeout=20) is None, kind
    assert q.request("ok", timeout=20) == "fine"  # still consuming
    events: list[rqueue.Event] = []
    done = threading.Event()

    def on_event(e: rqueue.Event) -> None:
        events.append(e)
        if e.kind == "processed":
            done.set()

    q.send("surrogate", on_event=on_event)
    assert done.wait(20)
    assert events[-1].kind == "processed" and events[-1].reply is None
    until(lambda: q.stats().deleted_total == 57, timeout=20, what="every ack")
    s = q.stats()
    assert (s.received_total, s.visible, s.in_flight) == (57, 0, 0)  # no message ran twice
    assert all(runs[i] == 1 for i in ids) and sum(runs.values()) == 57
    until(lambda: len(results) == 57, what="57 results")
    assert Counter(r.outcome for r in results) == {"ok": 57}


def _keys(name: str = "q") -> QueueKeys:
    return QueueKeys.for_queue("t", name)


def test_flush_calls_never_raise_and_a_bad_item_goes_alone() -> None:
    """Building a flush's calls handles each bad item alone; the rest go out, chunked to 1000."""
    keys = [_keys("a"), _keys("a:dlq")]
    f = Flush()
    f.deletes[0] = [(f"{i}.{i}r", "\udc80" if i == 3 else i) for i in range(1, 6)]
    f.deletes[0] += [(f"{i}.{i}", None) for i in range(10, 2510)]
    f.rejects.append((0, "7.7", 12345))  # type: ignore[arg-type]  # a reason that slipped through unchecked
    f.rejects.append((1, "8.8", "a dead letter cannot be rejected"))  # the Ledger never does this
    f.rejects.append((0, "9.9", "fine"))
    f.releases[0] = [f"{i}.{i}" for i in range(3000, 5500)]
    f.retries.append((0, "not a receipt", 1.0))
    calls = f.calls(keys)
    # acks: 2505 in chunks of 1000 (the tracked ones in the first); the unencodable reply became None
    assert [c.script.name for c in calls] == ["delete"] * 3 + ["reject"] + ["change_visibility"] * 3
    assert len(f.deletes[0]) == 2505 and b"rjnull" in calls[0].args  # 3.3r's reply went as None
    assert f.rejects == [(0, "9.9", "fine")] and f.retries == []
    assert sum(len(c.args) - 1 for c in calls[-3:]) == 2 * 2500
    results: list[Any] = [[True] * 1000, [True] * 1000, [True] * 505, [False]]
    results += [[True] * 1000, [True] * 1000, [True] * 500]
    assert flush_problems(f, results, ["a", "a:dlq"]) == [
        "1 message(s) finished after their lease ended (visibility timeout passed without a heartbeat); "
        "another consumer may process them again"
    ]


# ---------------------------------------------------------------- 9/3: Reject reasons, machinery crashes


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


REASONS: list[tuple[Any, str]] = [
    (ValueError("bad input"), "ValueError: bad input"),
    (42, "42"),
    (None, "rejected by the handler"),
    ("", "rejected by the handler"),
    ("x" * 100_000, "x" * 4000),
    (Unprintable(), "<unprintable Unprintable>"),
    ("bad \udc80 name", "bad \\udc80 name"),
    (b"raw", "b'raw'"),
]


def test_reject_reason_is_any_object_made_a_bounded_string() -> None:
    assert core.MAX_REASON == 4000
    for reason, text in REASONS:
        assert core.reject_reason(rqueue.Reject(reason)) == text
    assert core.reject_reason(rqueue.Reject("\udc80" * 5000)) == "\\udc80" * 666 + "\\udc"


def test_reject_with_any_reason_object_dead_letters_with_its_text(rig: Rig) -> None:
    q = rig.client.create_queue("jobs", visibility_timeout=30, max_receive_count=5)
    results: list[rqueue.HandlerResult] = []

    def handler(body: dict[str, int]) -> None:
        raise rqueue.Reject(REASONS[body["i"]][0])

    c = rig.consumer("jobs", rig.handler(handler), hooks=[results.append], shutdown_timeout=5)
    rig.start(c)
    q.send_batch([{"i": i} for i in range(len(REASONS))])
    until(lambda: q.stats().dead == len(REASONS), timeout=15, what="every dead letter")
    details = {m.body["i"]: m.dead_letter.detail for m in q.dead_letter_queue.receive(100) if m.dead_letter}
    assert details == {i: text for i, (_, text) in enumerate(REASONS)}
    until(lambda: len(results) == len(REASONS), what="every result")
    assert {r.outcome for r in results} == {"rejected"}
    assert q.stats().received_total == len(REASONS)


@pytest.mark.parametrize("where", ["finish", "report"])
def test_a_crash_in_a_worker_stops_run_with_an_error_at_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Not a handler's exception: the consumer's own machinery in a worker. run() raises promptly."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected bug")

    q = rig.client.create_queue("jobs", visibility_timeout=30)
    q.send_batch(["x", "y", "z"])
    if where == "finish":
        monkeypatch.setattr(Ledger, "finish", broken)
    else:
        monkeypatch.setattr(rqueue.Consumer if not rig.is_async else rqa.Consumer, "_report", broken)
    ran: list[str] = []
    hooks = [lambda r: None]  # so every outcome is reported
    c = rig.consumer("jobs", rig.handler(ran.append), concurrency=1, shutdown_timeout=60, hooks=hooks)
    result = rig.run_in_background(c)
    t0 = time.monotonic()
    error = result(20)
    assert isinstance(error, RuntimeError) and "injected bug" in str(error), error
    assert time.monotonic() - t0 < 10  # not the 60 s shutdown_timeout
    assert ran == ["x"]  # nothing more was started after the crash
    s = q.stats()
    acked = 0 if where == "finish" else 1  # a crash after the outcome was recorded: its ack still goes out
    assert (s.visible + s.in_flight, s.deleted_total) == (3 - acked, acked)


# ---------------------------------------------------------------- 9/4: consumers of dead-letter queues


def test_a_dead_letter_queue_consumer_keeps_what_it_cannot_dead_letter(rig: Rig) -> None:
    q = rig.client.create_queue("jobs", visibility_timeout=30, max_receive_count=2)
    q.send_batch([{"i": i} for i in range(6)])
    for m in q.receive(10):
        assert q.reject(m.receipt, "first life")
    results: list[rqueue.HandlerResult] = []
    runs: dict[int, list[int]] = defaultdict(list)
    router_style = rqueue.Router({"known": lambda body: None})

    def handler(m: rqueue.Message) -> None:
        i = m.body["i"]
        runs[i].append(m.receive_count)
        if m.receive_count == 1 and i == 0:
            raise rqueue.Reject("still bad")
        if m.receive_count == 1 and i == 1:
            raise rqueue.Reject(ValueError("an exception as the reason"))
        if m.receive_count == 1 and i == 2:
            router_style.resolve(m)  # an unknown type: Reject from a Router
        if m.receive_count <= 2 and i == 3:
            raise ValueError("fails twice")  # past the source's max_receive_count: a DLQ has none

    c = rig.consumer(
        "jobs:dlq", rig.handler(handler), retry_base=0.05, retry_cap=0.1, hooks=[results.append], concurrency=8
    )
    rig.start(c)
    dlq = q.dead_letter_queue
    until(lambda: dlq.stats().deleted_total == 6, timeout=15, what="every dead letter handled")
    assert dict(runs) == {0: [1, 2], 1: [1, 2], 2: [1, 2], 3: [1, 2, 3], 4: [1], 5: [1]}
    s = dlq.stats()
    assert (s.visible, s.in_flight, s.received_total, s.dead_lettered_total) == (0, 0, 11, 0)
    until(lambda: len(results) == 11, what="every result")
    assert sorted(outcomes(results).values()) == sorted(
        [["retried", "ok"]] * 3 + [["retried", "retried", "ok"]] + [["ok"]] * 2
    )


# ---------------------------------------------------------------- 9/5: CancelledError from a handler


def test_cancelled_error_escaping_a_handler_retries_the_message(rig: Rig) -> None:
    q = rig.client.create_queue("jobs", visibility_timeout=30)
    results: list[rqueue.HandlerResult] = []
    runs: list[int] = []

    if rig.is_async:

        async def handler(m: rqueue.Message) -> str:
            runs.append(m.receive_count)
            if m.receive_count == 1:
                inner = asyncio.ensure_future(asyncio.sleep(30))
                asyncio.get_running_loop().call_soon(inner.cancel)
                await inner  # an inner task's CancelledError escapes; this worker is not cancelled
            return "done"

    else:

        def handler(m: rqueue.Message) -> str:  # type: ignore[misc]
            runs.append(m.receive_count)
            if m.receive_count == 1:
                raise asyncio.CancelledError
            return "done"

    c = rig.consumer("jobs", handler, retry_base=0.05, retry_cap=0.1, hooks=[results.append], shutdown_timeout=5)
    rig.start(c)
    assert q.request("x", timeout=15) == "done"
    assert runs == [1, 2]
    until(lambda: len(results) == 2, what="two results")
    assert [r.outcome for r in results] == ["retried", "ok"]
    assert isinstance(results[0].error, asyncio.CancelledError)
    t0 = time.monotonic()
    rig.stop(c)
    assert time.monotonic() - t0 < 2  # nothing left running
    assert q.stats().in_flight == 0


# ---------------------------------------------------------------- 9/6: tiny visibility timeouts


@pytest.mark.parametrize("vt", [0, 0.05])
def test_a_tiny_visibility_timeout_runs_each_message_once_while_held(rig: Rig, vt: float) -> None:
    q = rig.client.create_queue("jobs", visibility_timeout=vt)
    q.send_batch([{"i": i} for i in range(3)])
    runs: Counter[int] = Counter()
    hidden: list[bool] = []

    def handler(body: dict[str, int]) -> None:
        runs[body["i"]] += 1
        t_end = time.monotonic() + 1.6  # slower than the 1 s lease floor: heartbeats must hold it
        while time.monotonic() < t_end:
            hidden.append(q.stats().visible == 0)
            time.sleep(0.05)

    c = rig.consumer("jobs", rig.handler(handler, blocking=True), concurrency=4)
    rig.start(c)
    until(lambda: q.stats().deleted_total == 3, timeout=20, what="three acks")
    assert runs == {0: 1, 1: 1, 2: 1}
    assert q.stats().received_total == 3
    assert hidden and all(hidden)  # held all along: no heartbeat made one visible


def test_tracker_lease_has_a_floor_and_is_sent_with_every_extension() -> None:
    settings = Settings.of(
        concurrency=4,
        batch_size=3,
        retry_base=0.5,
        retry_cap=60,
        flush_interval=0.005,
        shutdown_timeout=1,
        visibility_timeout=None,
    )
    assert core.LEASE_FLOOR == 1.0
    t = Ledger(settings, [0.0, 0.05, 30.0], [None, None, None])
    assert t.leases == [1.0, 1.0, 30.0]
    t.received(0, [rqueue.Message("1", {}, {}, "1.1", 1, 0, 0, "q")], 100.0)
    assert t.heartbeat_in(100.0) == pytest.approx(0.5)
    due = t.heartbeat(100.5)
    (call,) = t.heartbeat_calls([_keys("a")] * 3, due)
    assert call.args[0] == 1000  # never 0: a heartbeat never makes a held message visible


# ---------------------------------------------------------------- 9/7: stop() from inside a handler


@pytest.mark.parametrize("how", ["run", "start"])
def test_stop_from_inside_a_handler_returns_at_once_and_acks_that_message(rig: Rig, how: str) -> None:
    q = rig.client.create_queue("jobs", visibility_timeout=30)
    q.send_batch(["first", "second", "third"])
    took: list[float] = []
    results: list[rqueue.HandlerResult] = []
    box: list[Any] = []

    if rig.is_async:

        async def handler(body: str) -> str:
            t0 = time.monotonic()
            await box[0].stop()
            took.append(time.monotonic() - t0)
            return "bye"

    else:

        def handler(body: str) -> str:  # type: ignore[misc]
            t0 = time.monotonic()
            box[0].stop()
            took.append(time.monotonic() - t0)
            return "bye"

    c = rig.consumer("jobs", handler, concurrency=1, batch_size=1, shutdown_timeout=5, hooks=[results.append])
    box.append(c)
    if how == "run":
        assert rig.run_in_background(c)(15) is None  # stopped gracefully, no error
    else:
        rig.start(c)
        until(lambda: c._done.is_set(), timeout=15, what="the consumer stopped")
    assert len(took) == 1 and took[0] < 1.0  # not the 5 s shutdown_timeout
    assert [r.outcome for r in results] == ["ok"]
    s = q.stats()
    assert (s.deleted_total, s.in_flight, s.visible, s.received_total) == (1, 0, 2, 1)


# ---------------------------------------------------------------- 17/2: cancelling run()


@pytest.mark.parametrize("how", ["cancel", "timeout", "taskgroup"])
def test_cancelling_run_stops_the_asyncio_consumer_as_stop_does(
    how: str, backend_url: str, prefix: str, loop_thread: LoopThread
) -> None:
    client = rqueue.connect(backend_url, prefix=prefix)
    q = client.create_queue("jobs", visibility_timeout=30)
    q.send("slow")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        ac = await rqa.connect(backend_url, prefix=prefix)
        started, gate = asyncio.Event(), asyncio.Event()

        async def handler(body: str) -> str:
            started.set()
            await gate.wait()
            return "done"

        c = rqa.Consumer(ac.queue("jobs"), handler, shutdown_timeout=30)

        async def finish_when_halted() -> None:
            """Once the receivers are done, let the running handler finish."""
            deadline = time.monotonic() + 5
            while not (c._receivers and all(t.done() for t in c._receivers)) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            seen["receivers ended while the handler ran"] = all(t.done() for t in c._receivers)
            gate.set()

        try:
            if how == "cancel":
                task = asyncio.create_task(c.run())
                await started.wait()
                helper = asyncio.create_task(finish_when_halted())
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            elif how == "timeout":

                async def fire(cm: asyncio.Timeout) -> None:
                    await started.wait()
                    cm.reschedule(asyncio.get_running_loop().time())

                helper = asyncio.create_task(finish_when_halted())
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(None) as cm:
                        fire_task = asyncio.create_task(fire(cm))
                        await c.run()
                await fire_task
            else:

                async def sibling() -> None:
                    await started.wait()
                    raise ValueError("a sibling failed")

                helper = asyncio.create_task(finish_when_halted())
                with pytest.raises(ExceptionGroup) as group:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(c.run())
                        tg.create_task(sibling())
                assert [type(e) for e in group.value.exceptions] == [ValueError]
            await helper
            seen["maintainer done"] = c._maintainer is not None and c._maintainer.done()
            seen["workers"] = len(c._workers)
        finally:
            await c.stop()
            await ac.aclose()

    loop_thread.run(scenario(), timeout=60)
    assert seen == {"receivers ended while the handler ran": True, "maintainer done": True, "workers": 0}
    s = q.stats()
    assert (s.deleted_total, s.in_flight, s.visible) == (1, 0, 0)  # the running one finished and was acked
    client.delete_queue("jobs")
    client.close()


def test_cancelling_run_twice_stops_at_once(backend_url: str, prefix: str, loop_thread: LoopThread) -> None:
    """A second cancellation while stopping is the second signal: stop now, the message comes back later."""
    client = rqueue.connect(backend_url, prefix=prefix)
    q = client.create_queue("jobs", visibility_timeout=30)
    q.send("stuck")

    async def scenario() -> float:
        ac = await rqa.connect(backend_url, prefix=prefix)
        started = asyncio.Event()

        async def handler(body: str) -> None:
            started.set()
            await asyncio.Event().wait()  # never ends by itself

        c = rqa.Consumer(ac.queue("jobs"), handler, shutdown_timeout=30)
        try:
            task = asyncio.create_task(c.run())
            await started.wait()
            task.cancel()
            deadline = time.monotonic() + 5
            while not all(t.done() for t in c._receivers):
                assert time.monotonic() < deadline, "the receivers go on after run() was cancelled"
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - t0
        finally:
            await c.stop()
            await c.stop()
            await ac.aclose()

    assert loop_thread.run(scenario(), timeout=60) < 5
    s = q.stats()
    assert (s.deleted_total, s.in_flight) == (0, 1)  # back after its visibility timeout
    client.delete_queue("jobs")
    client.close()


def test_cancelling_stop_still_stops_the_asyncio_consumer_at_once(
    backend_url: str, prefix: str, loop_thread: LoopThread
) -> None:
    """stop() given up on (a timeout around it): the shutdown is not cut short but finishes at once."""
    client = rqueue.connect(backend_url, prefix=prefix)
    q = client.create_queue("jobs", visibility_timeout=30)
    q.send("stuck")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        ac = await rqa.connect(backend_url, prefix=prefix)
        started = asyncio.Event()

        async def handler(body: str) -> None:
            started.set()
            await asyncio.Event().wait()  # never ends by itself

        c = rqa.Consumer(ac.queue("jobs"), handler, shutdown_timeout=30)
        await c.start()
        await started.wait()
        stopping = asyncio.create_task(c.stop())
        deadline = time.monotonic() + 5
        while not all(t.done() for t in c._receivers) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # the graceful stop is under way, waiting for the handler
        t0 = time.monotonic()
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        seen["seconds"] = time.monotonic() - t0 < 5
        seen["maintainer done"] = c._maintainer is not None and c._maintainer.done()
        seen["workers"] = len(c._workers)
        seen["receivers done"] = all(t.done() for t in c._receivers)
        await c.stop()
        await ac.aclose()

    loop_thread.run(scenario(), timeout=90)
    assert seen == {"seconds": True, "maintainer done": True, "workers": 0, "receivers done": True}
    assert q.stats().in_flight == 1  # stopped at once: the message comes back after its timeout
    client.delete_queue("jobs")
    client.close()


# ---------------------------------------------------------------- 17/4: handing on wake-ups


def _long_polls(rig: Rig) -> int:
    """Long polls the rig's consumers have registered: waits of one client share BLPOP
    connections ("lanes"), so the server's count of blocked clients would not tell."""
    client: Any = rig._aclient if rig.is_async else rig.client
    return 0 if client is None else int(client._waiter.waiting())


def test_a_busy_multi_queue_consumer_hands_on_a_wake_up_it_cannot_use(rig: Rig) -> None:
    a = rig.client.create_queue("a", visibility_timeout=30)
    b = rig.client.create_queue("b", visibility_timeout=30)
    gate = threading.Event()
    busy = threading.Event()
    got: list[tuple[str, float]] = []

    def on_both(body: str) -> None:
        if body == "b":
            busy.set()
            assert gate.wait(30)
        got.append(("both", time.monotonic()))

    def on_a(body: str) -> None:
        got.append(("a only", time.monotonic()))

    try:
        rig.start(rig.consumer(["a", "b"], rig.handler(on_both, blocking=True), concurrency=1))
        until(lambda: _long_polls(rig) == 2, timeout=10, what="both receivers long-polling")
        b.send("b")
        assert busy.wait(10)
        until(lambda: _long_polls(rig) == 1, timeout=10, what="the receiver for a alone polling")
        rig.start(rig.consumer("a", rig.handler(on_a)))
        until(lambda: _long_polls(rig) == 2, timeout=10, what="the second consumer polling a")
        t0 = time.monotonic()
        a.send("a")  # the busy consumer's receiver for a was first in line for this wake-up
        until(lambda: len(got) == 1, timeout=5, what="the idle consumer handling it")
        assert got[0][0] == "a only" and got[0][1] - t0 < 2
    finally:
        gate.set()
