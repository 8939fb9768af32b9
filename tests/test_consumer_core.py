"""The consumer's I/O-free core without a server: lifecycle table, Control's decisions, programs.

The runners (threads, tasks) only do what these decide; tests/test_consumer*.py
check the whole on real servers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from typing import Any

import pytest

import rqueue
import rqueue.asyncio
from rqueue._consumer import workers
from rqueue._consumer.control import Control, Gate, Wakes
from rqueue._consumer.core import Settings
from rqueue._consumer.flush import Flush
from rqueue._consumer.ledger import Ledger
from rqueue._consumer.lifecycle import TRANSITIONS, Cause, Lifecycle, Outage, State, Then
from rqueue._consumer.programs import Ask, Cursor, Join, Signal, Until, maintain, receive, shutdown
from rqueue._protocol.errors import ConnectionError
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.operations import WAIT_CHUNK

# ---------------------------------------------------------------- lifecycle


def _life(*causes: Cause) -> Lifecycle:
    life = Lifecycle()
    for c in causes:
        life.to(c)
    return life


def test_lifecycle_graceful_stop_then_a_second_request_aborts() -> None:
    life = Lifecycle()
    seen = [life.state]
    for cause in (Cause.START, Cause.OUTSIDE, Cause.OUTSIDE, Cause.DRAINED, Cause.CLOSED):
        seen.append(life.to(cause))
    assert seen == [State.NEW, State.RUNNING, State.STOPPING, State.ABORTING, State.CLOSING, State.STOPPED]


@pytest.mark.parametrize("first", [Cause.INSIDE, Cause.CRASH])
def test_lifecycle_a_stop_from_a_handler_or_a_crash_leaves_the_next_outside_request_the_first(first: Cause) -> None:
    life = _life(Cause.START, first)
    assert (life.state, life.halted, life.aborting) == (State.HALTING, True, False)
    life.request_stop(outside=False)  # more from inside: nothing new
    assert life.state is State.HALTING
    life.request_stop(outside=True)
    assert (life.state, life.aborting) == (State.STOPPING, False)
    life.request_stop(outside=True)
    assert (life.state, life.aborting) == (State.ABORTING, True)


def test_lifecycle_flags_follow_the_state() -> None:
    want = {
        State.NEW: (False, False, False),
        State.RUNNING: (False, False, False),
        State.HALTING: (True, False, False),
        State.STOPPING: (True, False, False),
        State.ABORTING: (True, True, False),
        State.CLOSING: (True, False, True),
        State.STOPPED: (True, False, True),
    }
    for state, flags in want.items():
        life = Lifecycle()
        life.state = state
        assert (life.halted, life.aborting, life.closing) == flags, state


def test_lifecycle_stopped_before_started_starts_only_to_stop() -> None:
    life = _life(Cause.OUTSIDE)
    assert life.to(Cause.START) is State.STOPPING and life.halted


@pytest.mark.parametrize(
    ("state", "cause"),
    [
        (State.NEW, Cause.DRAINED),
        (State.RUNNING, Cause.START),
        (State.RUNNING, Cause.DRAINED),
        (State.RUNNING, Cause.CLOSED),
        (State.STOPPING, Cause.CLOSED),
        (State.CLOSING, Cause.START),
        (State.STOPPED, Cause.START),
        (State.STOPPED, Cause.CLOSED),
    ],
)
def test_lifecycle_a_transition_the_table_does_not_list_is_a_bug(state: State, cause: Cause) -> None:
    life = Lifecycle()
    life.state = state
    with pytest.raises(RuntimeError, match=f"no transition from {state.name}"):
        life.to(cause)
    assert life.state is state


def test_lifecycle_every_state_can_be_reached_and_stop_requests_never_fail_once_started() -> None:
    reached = {State.NEW} | set(TRANSITIONS.values())
    assert reached == set(State)
    for state in State:
        if state is not State.NEW:
            for cause in (Cause.OUTSIDE, Cause.INSIDE, Cause.CRASH):
                assert (state, cause) in TRANSITIONS


def test_lifecycle_signals_log_graceful_then_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rqueue.consumer")
    life = _life(Cause.START)
    life.signal(15)
    life.signal(15)
    assert life.state is State.ABORTING
    assert [r.getMessage() for r in caplog.records] == [
        "signal 15: stopping gracefully (send it again to stop now)",
        "signal 15 again: stopping now; unfinished messages return after their timeout",
    ]


def test_lifecycle_raises_the_first_crash_once_and_claims_the_shutdown_once() -> None:
    life = _life(Cause.START)
    assert life.shutdown_in_background
    first, second = ValueError("first"), KeyError("second")
    life.crash(first)
    life.crash(second)
    with pytest.raises(RuntimeError, match=r"internal thread crashed: ValueError\('first'\)") as info:
        life.raise_crash("thread")
    assert info.value.__cause__ is first
    life.raise_crash("thread")  # once only
    assert life.claim_shutdown() and not life.claim_shutdown() and not life.shutdown_in_background
    life.in_run = True
    assert not life.shutdown_in_background


def test_what_stop_does_next_depends_on_where_it_is_called_and_who_shuts_down() -> None:
    assert _life().stop(inside=False, started=False) is Then.RETURN  # not started: only recorded
    assert _life(Cause.START).stop(inside=False, started=True) is Then.SHUTDOWN
    assert _life(Cause.START).stop(inside=True, started=True) is Then.BACKGROUND  # cannot wait for itself
    life = _life(Cause.START)
    life.in_run = True
    assert life.stop(inside=True, started=True) is Then.RETURN  # run() shuts down
    assert life.state is State.HALTING
    life = _life(Cause.START)
    life.claim_shutdown()
    assert life.stop(inside=True, started=True) is Then.RETURN  # a shutdown is under way
    assert life.stop(inside=False, started=True) is Then.SHUTDOWN  # waits for it


def test_a_crash_shuts_down_in_the_background_unless_run_or_a_shutdown_will() -> None:
    assert _life(Cause.START).crash(ValueError()) is Then.BACKGROUND
    life = _life(Cause.START)
    life.in_run = True
    assert life.crash(ValueError()) is Then.RETURN and life.state is State.HALTING


def test_outage_backoff_doubles_to_its_cap_and_reports_its_start_once() -> None:
    o = Outage(first=0.1, cap=0.4)
    got = [o.failed() for _ in range(4)]
    assert [s for _, s in got] == [True, False, False, False]
    for (delay, _), ceiling in zip(got, [0.1, 0.2, 0.4, 0.4], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert o.ok() is not None and o.ok() is None and o.failed()[1]


# ---------------------------------------------------------------- control


class Woken:
    """Wakes that record who was woken."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.stall = False

    def wakes(self) -> Wakes:
        def note(what: str) -> Any:
            return lambda: self.log.append(what)

        return Wakes(note("slots"), note("maint"), note("jobs"), note("halted"), note("closing"), lambda: self.stall)

    def take(self) -> list[str]:
        out, self.log = self.log, []
        return out


def _msg(i: int, rc: int = 1, queue: str = "a") -> rqueue.Message:
    return rqueue.Message(str(i), {}, {}, f"{i}.{i}", rc, 0, 0, queue)


def _control(
    queues: int = 1, concurrency: int = 4, batch_size: int = 4, mrc: int | None = None, stall: float | None = None
) -> tuple[Control, Woken]:
    settings = Settings.of(
        concurrency=concurrency,
        batch_size=batch_size,
        retry_base=0.5,
        retry_cap=60,
        flush_interval=0.005,
        shutdown_timeout=1,
        visibility_timeout=None,
    )
    names = [chr(ord("a") + i) for i in range(queues)]
    ledger = Ledger(settings, [30.0] * queues, [mrc] * queues)
    woken = Woken()
    life = _life(Cause.START)
    errors = [Outage(0.5, 30.0) for _ in names]
    keys = [QueueKeys.for_queue("t", n) for n in names]
    return Control(ledger, life, keys, names, [], errors, woken.wakes(), stall=stall), woken


def test_a_receiver_gathers_free_slots_for_a_batch_then_goes() -> None:
    ctl, woken = _control(concurrency=4, batch_size=4)  # want = 2
    ctl.ledger.reserve()  # all 4 slots busy
    assert ctl.admit(0, False, 10.0, None) == (Gate.WAIT, None)
    ctl.ledger.unreserve(1)
    assert ctl.admit(0, False, 10.0, None) == (Gate.GATHER, pytest.approx(10.005))
    assert ctl.admit(0, False, 10.004, 10.005) == (Gate.GATHER, 10.005)
    assert ctl.admit(0, False, 10.005, 10.005) == (Gate.GO, None)  # gathered long enough
    ctl.ledger.unreserve(1)
    assert ctl.admit(0, False, 10.0, None) == (Gate.GO, None)  # want reached
    n, flush = ctl.go(0)
    assert (n, ctl.ledger.free, ctl.ledger.receiving, bool(flush)) == (2, 0, 1, False)
    assert woken.take() == []  # nobody else waits for a turn


def test_a_receiver_with_a_batch_of_acks_waiting_goes_without_gathering() -> None:
    ctl, _ = _control(concurrency=4, batch_size=2)
    jobs = ctl.ledger.received(0, [_msg(1), _msg(2)], 0.0)[0]
    ctl.ledger.free = 2  # 2 busy (the jobs)
    ctl.ledger.want = 6  # more than can ever be free: only the acks can make it go
    assert ctl.admit(0, False, 0.0, None)[0] is Gate.GATHER
    for j in jobs:
        ctl.finished(j, None, None, 0.0)
    assert ctl.admit(0, False, 0.0, None) == (Gate.GO, None)
    _n, flush = ctl.go(0)
    assert flush.deletes == {0: [("1.1", None), ("2.2", None)]}


def test_receivers_take_turns_the_one_served_longest_ago_goes() -> None:
    ctl, woken = _control(queues=3, concurrency=2, batch_size=2)  # want = 1
    book = ctl.ledger
    book.free = 0
    for qi in (0, 1, 2):
        assert ctl.admit(qi, False, 0.0, None)[0] is Gate.WAIT
    book.free = 2
    assert ctl.admit(1, False, 0.0, None)[0] is Gate.WAIT  # 0 was never served and ranks first
    assert ctl.admit(0, False, 0.0, None)[0] is Gate.GO
    ctl.go(0)
    assert woken.take() == ["slots"]  # 1 and 2 still want a turn: wake them
    book.free = 2
    assert ctl.admit(2, False, 0.0, None)[0] is Gate.WAIT
    assert ctl.admit(1, False, 0.0, None)[0] is Gate.GO
    ctl.go(1)
    book.free = 2
    assert ctl.admit(0, False, 0.0, None)[0] is Gate.WAIT  # 0 was served last: 2's turn
    assert ctl.admit(2, False, 0.0, None)[0] is Gate.GO


def test_a_wake_up_a_receiver_cannot_use_is_handed_on() -> None:
    ctl, _ = _control()
    ctl.ledger.free = 0
    assert ctl.admit(0, True, 0.0, None) == (Gate.HAND_ON, None)
    assert ctl.wanting == set()
    ctl.ledger.free = 4
    ctl.life.request_stop(outside=True)
    assert ctl.admit(0, True, 0.0, None) == (Gate.HAND_ON, None)  # stopping: still hand it on
    assert ctl.admit(0, False, 0.0, None) == (Gate.HALT, None)


def test_an_arrival_queues_its_jobs_and_says_how_long_to_long_poll() -> None:
    ctl, woken = _control(queues=2, concurrency=4, batch_size=4)
    ctl.maint_wake_at = float("inf")  # the maintainer sleeps until woken
    n, _ = ctl.go(0)
    ctl.receive_ended()
    arrival = ctl.arrived(0, n, ([_msg(1), _msg(2)], -1, None), 100.0)
    assert (arrival.pause, arrival.wait, arrival.notify) == (0.0, None, None)  # messages: receive again at once
    assert [j.message.id for j in ctl.work] == ["1", "2"] and ctl.ledger.free == 2
    assert woken.take() == ["slots", "jobs", "maint"]  # 2 slots unfilled; jobs; the first lease to watch
    assert ctl.take() is ctl.ledger.jobs[0, "1.1"] and ctl.ledger.jobs[0, "1.1"].started
    for next_ms, wait in ((-1, WAIT_CHUNK), (200, 0.2), (0, None)):
        n, _ = ctl.go(1)
        assert ctl.arrived(1, n, ([], next_ms, None), 100.0).wait == wait
    ctl.life.request_stop(outside=True)
    assert ctl.take() is None  # stopping: no job starts


def test_a_failed_receive_backs_off_and_logs_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    ctl, woken = _control()
    n, _ = ctl.go(0)
    assert ctl.arrived(0, n, None, 0.0).pause == 0  # connection lost: the round trip already backed off
    assert ctl.ledger.free == 4 and woken.take() == ["slots"]
    for _ in range(2):
        n, _ = ctl.go(0)
        assert ctl.arrived(0, n, RuntimeError("NOSCRIPT"), 0.0).pause > 0
    n, _ = ctl.go(0)
    ctl.arrived(0, n, ([], -1, None), 0.0)
    assert [r.getMessage() for r in caplog.records] == [
        "queue 'a': receive failed: NOSCRIPT; retrying with backoff",
        "queue 'a': receiving again",
    ]


def test_a_finished_handler_wakes_receivers_only_when_they_can_act() -> None:
    ctl, woken = _control(concurrency=4, batch_size=4)  # want = 2
    ctl.go(0)
    jobs = ctl.ledger.received(0, [_msg(i) for i in range(4)], 0.0)[0]
    ctl.ledger.receiving = 0
    ctl.maint_wake_at = float("inf")
    outcomes = []
    for j in jobs:
        outcomes.append(ctl.finished(j, None, None, 0.0))
        outcomes.append(woken.take())
    assert outcomes == [
        "ok", ["slots", "maint"],  # a first free slot; the first pending ack starts the flush timer
        "ok", ["slots"],  # want reached
        "ok", [],
        "ok", ["slots", "maint"],  # a batch of acks and no receive to carry it: flush now
    ]  # fmt: skip


def test_a_failing_handler_is_retried_then_dead_lettered() -> None:
    ctl, _ = _control(mrc=2)
    ctl.go(0)
    first, last = ctl.ledger.received(0, [_msg(1, rc=1), _msg(2, rc=2)], 0.0)[0]
    assert ctl.finished(first, None, ValueError("x"), 0.0) == "retried"
    assert ctl.finished(last, None, ValueError("x"), 0.0) == "dead_lettered"
    flush = ctl.ledger.take()
    assert [r[1] for r in flush.retries] == ["1.1"]
    assert flush.rejects == [(0, "2.2", "failed on receive 2 of max_receive_count 2: ValueError: x")]


def test_a_round_trip_that_lost_the_server_keeps_its_work(caplog: pytest.LogCaptureFixture) -> None:
    ctl, _ = _control()
    flush = Flush(deletes={0: [("1.1", None)]})
    flush.calls(ctl.keys)
    assert ctl.failed(flush, ConnectionError("gone"), 0.0) is not None
    assert ctl.failed(Flush(), ConnectionError("gone"), 0.0) is not None
    assert ctl.ledger.pending.deletes == {0: [("1.1", None)]} and ctl.ledger.pending_count == 1
    assert ctl.failed(Flush(), KeyError("bug"), 0.0) is None  # the caller re-raises
    retry = Flush(retries=[(0, "2.2", 1.0)])
    retry.calls(ctl.keys)
    got, poke = ctl.done(retry, [[True], "tail"], 1)
    assert (got, poke, ctl.poked) == (["tail"], {0}, {0})
    assert not ctl.may_wait(0)  # a retry may be visible soon: look again before long-polling
    assert [r.getMessage() for r in caplog.records] == [
        "lost the server (gone); retrying with backoff until it is back",
        caplog.records[1].getMessage(),
    ]
    assert caplog.records[1].getMessage().startswith("server reachable again after ")


def test_the_maintainer_flushes_when_due_and_extends_leases_at_half_time() -> None:
    ctl, woken = _control(stall=0.005)
    assert ctl.chores(0.0) is None and ctl.maint_wake_at == float("inf")
    ctl.go(0)
    (job,) = ctl.ledger.received(0, [_msg(1)], 0.0)[0]
    assert ctl.chores(0.0) == 15.0
    woken.stall = True
    assert ctl.chores(0.0) == 0.005 and ctl.maint_wake_at == 0.005  # jobs wait for a worker
    woken.stall = False
    ctl.ledger.receiving = 0
    ctl.finished(job, None, None, 1.0)
    assert ctl.chores(1.001) == pytest.approx(0.004)
    flush, due = ctl.chores(1.005)  # type: ignore[misc]
    assert (flush.deletes, due, ctl.maint_wake_at) == ({0: [("1.1", None)]}, [], 0.0)
    ctl.go(0)
    ctl.ledger.received(0, [_msg(2)], 2.0)
    _flush, due = ctl.chores(17.0)  # type: ignore[misc]
    assert due == [(0, ["2.2"])] and len(ctl.heartbeat_calls(due)) == 1


def test_the_shutdown_waits_for_running_jobs_until_done_aborted_or_late(caplog: pytest.LogCaptureFixture) -> None:
    ctl, _ = _control()
    assert ctl.drain_wait(10.0, 0.0) is None
    ctl.go(0)
    ctl.ledger.received(0, [_msg(1)], 0.0)
    assert ctl.drain_wait(10.0, 4.0) == 6.0
    assert ctl.drain_wait(10.0, 10.0) is None
    assert caplog.records[-1].getMessage() == "1 message(s) still running at the shutdown deadline"
    ctl.life.request_stop(outside=True)
    ctl.life.request_stop(outside=True)
    assert ctl.drain_wait(10.0, 4.0) is None  # aborting


# ---------------------------------------------------------------- programs


def test_the_receive_program_carries_acks_with_the_receive_then_waits_for_slots() -> None:
    ctl, _ = _control(concurrency=2, batch_size=2)
    ctl.go(0)
    (job,) = ctl.ledger.received(0, [_msg(9)], 0.0)[0]
    ctl.ledger.receiving = 0
    ctl.ledger.unreserve(1)
    ctl.finished(job, "reply", None, 0.0)
    cursor = Cursor(receive(ctl, 0))
    ask, (flush, tail) = cursor.next()  # type: ignore[misc]
    assert (ask, len(ctl.calls(flush, tail))) == (Ask.EXCHANGE, 2)  # the ack, then the receive
    cursor.result = [[True], ([_msg(1), _msg(2)], -1, None)]
    assert cursor.next() == (Ask.WAIT, (Signal.SLOTS, None))  # both slots busy
    assert [j.message.id for j in ctl.work] == ["1", "2"] and not ctl.ledger.pending
    ctl.life.request_stop(outside=True)
    assert cursor.next() is None


def test_the_receive_program_backs_off_when_the_server_is_gone_and_long_polls_an_empty_queue() -> None:
    ctl, _ = _control()
    cursor = Cursor(receive(ctl, 0))
    assert cursor.next()[0] is Ask.EXCHANGE  # type: ignore[index]
    cursor.error = ConnectionError("gone")
    ask, (until, delay) = cursor.next()  # type: ignore[misc]
    assert (ask, until) == (Ask.PAUSE, Until.HALT) and delay > 0
    assert cursor.next()[0] is Ask.EXCHANGE  # type: ignore[index]
    assert ctl.ledger.free == 0  # the slots it gave back are reserved again
    cursor.result = [([], -1, None)]
    assert cursor.next() == (Ask.LONG_POLL, (0, WAIT_CHUNK))
    cursor.result = True  # a token: but no slot would be free for it
    ctl.ledger.free = 0
    assert cursor.next() == (Ask.CLIENT, ("hand_on", ctl.keys[0].wake))


def test_the_shutdown_program_releases_waits_joins_and_sends_the_rest_in_order() -> None:
    ctl, woken = _control()
    ctl.go(0)
    running, unstarted = ctl.ledger.received(0, [_msg(1), _msg(2)], 0.0)[0]
    ctl.ledger.receiving = 0
    ctl.work.extend([unstarted])
    running.started = True
    ctl.life.request_stop(outside=True)
    cursor = Cursor(shutdown(ctl))
    assert cursor.next() == (Ask.UNBLOCK, None) and woken.take() == ["halted"]
    assert cursor.next() == (Ask.JOIN, Join.RECEIVERS)
    ask, (flush, tail) = cursor.next()  # type: ignore[misc]
    assert (ask, len(ctl.calls(flush, tail)), list(ctl.work)) == (Ask.EXCHANGE, 1, [])  # the release
    cursor.result = [[True]]
    ask, (signal, left) = cursor.next()  # type: ignore[misc]
    assert (ask, signal) == (Ask.WAIT, Signal.SLOTS) and 0 < left <= 1
    ctl.finished(running, None, None, 0.0)
    assert cursor.next() == (Ask.JOIN, Join.WORKERS) and ctl.life.state is State.CLOSING
    assert woken.take()[-1] == "closing"
    assert cursor.next() == (Ask.JOIN, Join.MAINTAINER)
    ask, (flush, tail) = cursor.next()  # type: ignore[misc]
    assert (ask, len(ctl.calls(flush, tail))) == (Ask.EXCHANGE, 1)  # the last ack
    cursor.result = [[True]]
    assert cursor.next() is None and ctl.life.state is State.STOPPED


def test_the_maintainer_program_exits_when_closing() -> None:
    ctl, _ = _control()
    cursor = Cursor(maintain(ctl))
    assert cursor.next() == (Ask.WAIT, (Signal.MAINT, None))
    ctl.life.state = State.CLOSING
    assert cursor.next() is None


# ---------------------------------------------------------------- the runners (threads generated from tasks)

_OPTIONS = [
    ("batch_size", 10),
    ("retry_base", 0.5),
    ("retry_cap", 60.0),
    ("flush_interval", 0.005),
    ("shutdown_timeout", 30.0),
    ("visibility_timeout", None),
    ("hooks", ()),
]


@pytest.mark.parametrize(("cls", "concurrency"), [(rqueue.Consumer, 16), (rqueue.asyncio.AsyncConsumer, 100)])
def test_the_public_constructors_keep_their_signatures(cls: type, concurrency: int) -> None:
    params = list(inspect.signature(cls).parameters.values())
    assert [(p.name, p.kind) for p in params[:2]] == [
        ("queue_or_queues", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("handler", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    ]
    keywords = [(p.name, p.default) for p in params[2:] if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keywords == [("concurrency", concurrency), *_OPTIONS] and len(params) == 2 + len(keywords)
    assert rqueue.asyncio.Consumer is rqueue.asyncio.AsyncConsumer


def test_inside_a_worker_thread_is_that_thread_only() -> None:
    """Both runners mark their handlers with one contextvar: on threads it behaves as a thread-local
    (a thread a handler starts begins with an empty context), so stop() from such a thread waits."""
    pool = workers.Workers(None, threading.RLock(), 1)
    seen: dict[str, bool] = {}

    def nested() -> None:
        seen["thread started by a handler"] = pool.inside()

    def worker() -> None:
        workers._handling.set(pool)
        seen["worker"] = pool.inside()
        t = threading.Thread(target=nested)
        t.start()
        t.join()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"worker": True, "thread started by a handler": False}
    assert not pool.inside()


async def test_inside_a_worker_task_includes_the_tasks_its_handler_starts() -> None:
    pool = workers.AsyncWorkers(None, None, 1)

    async def started_by_the_handler() -> bool:
        return pool.inside()

    async def handler() -> tuple[bool, bool]:
        workers._handling.set(pool)
        return pool.inside(), await asyncio.create_task(started_by_the_handler())

    assert await asyncio.create_task(handler()) == (True, True)
    assert not pool.inside()
