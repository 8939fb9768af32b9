"""The listener's I/O-free bookkeeping and its thread/task primitives (without a server), and its close."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import rqueue
import rqueue.asyncio as rqa
from rqueue._protocol.events import EventRouter, Subscriptions, check_kind, match
from rqueue._transport.concurrency import AsyncCallbacks, AsyncCondition, AsyncFlag, Callbacks, Flag

E = rqueue.Event


def test_subscriptions_confirm_refuse_and_reset() -> None:
    subs: Subscriptions[Flag] = Subscriptions()
    a, b = subs.want("a", Flag()), subs.want("b", Flag())
    subs.handle([b"subscribe", b"a", 1], EventRouter())
    assert a.is_set() and not b.is_set()
    err = RuntimeError("NOPERM")
    subs.refused(err)  # only the unconfirmed one was refused
    assert b.is_set() and subs.refusal("b", b) is err and subs.refusal("a", a) is None
    assert list(subs.wanted) == ["a"]
    subs.reset()  # connection lost: confirmed no more
    assert not a.is_set()
    again = subs.want("b", Flag())  # a new try forgets the refusal
    assert subs.refusal("b", again) is None and list(subs.wanted) == ["a", "b"]


def test_subscriptions_route_messages_and_ignore_the_malformed() -> None:
    subs: Subscriptions[Flag] = Subscriptions()
    router = EventRouter()
    got: list[rqueue.Event] = []
    router.register("c", "1", got.append, router.generation)
    [(sink, ev)] = subs.handle([b"message", b"c", b"received|1|1"], router)
    assert sink == got.append and ev == E("received", "1", None, "", "1")
    assert subs.handle([b"message", b"c", b"no-separators"], router) == []
    assert subs.handle([b"pong", b""], router) == [] and subs.handle(None, router) == []


def test_match_and_kinds() -> None:
    events = [E("received", "1"), E("expired", "1")]
    assert match(events, "received") == events[0]
    assert match(events, "processed") == events[1]  # the final event stands in
    assert match([], "processed") is None
    with pytest.raises(rqueue.InvalidParameter, match="kind must be one of"):
        check_kind("done")


def test_sync_callbacks_run_in_order_off_the_caller() -> None:
    cb = Callbacks()
    seen: list[tuple[int, str]] = []
    done = threading.Event()
    for i in range(50):
        cb.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
    cb.submit(done.set)
    assert done.wait(10)
    cb.close(10)
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"rqueue-events-callbacks"}


def test_sync_tracker_on_no_listener_calls_back_on_the_callers_thread() -> None:
    where: list[str] = []
    t = rqueue.Tracker("1", lambda e: where.append(threading.current_thread().name))
    t._deliver(E("processed", "1"))
    assert where == [threading.current_thread().name] and t.wait(timeout=0).kind == "processed"


async def test_async_tracker_awaits_each_callback_before_the_next() -> None:
    seen: list[str] = []

    async def on_event(e: rqueue.Event) -> None:
        seen.append("start " + e.kind)
        await asyncio.sleep(0.01)
        seen.append("end " + e.kind)

    t = rqa.AsyncTracker("1", on_event)
    t._deliver(E("received", "1"))
    await asyncio.sleep(0)
    t._deliver(E("processed", "1"))  # while the first callback runs
    assert (await t.wait(timeout=5)).kind == "processed"
    for _ in range(500):
        if len(seen) == 4:
            break
        await asyncio.sleep(0.01)
    assert seen == ["start received", "end received", "start processed", "end processed"]


async def test_async_callbacks_run_one_task_per_job_at_a_time() -> None:
    cb = AsyncCallbacks()
    running = 0
    most = 0

    async def job() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1

    for _ in range(5):
        cb.submit(job)
    for _ in range(500):
        if not cb._running:
            break
        await asyncio.sleep(0.01)
    assert most == 1 and not cb._running


async def test_async_flag_and_condition_time_out() -> None:
    flag = AsyncFlag()
    assert not await flag.wait(0.01)
    flag.set()
    assert await flag.wait(0.01)
    cond = AsyncCondition()
    assert not await cond.wait_for(lambda: False, 0.01)
    assert not await cond.wait_for(lambda: False, 0)
    ready: list[int] = []

    async def later() -> None:
        await asyncio.sleep(0.01)
        ready.append(1)
        cond.notify_all()

    task = asyncio.ensure_future(later())
    assert await cond.wait_for(lambda: bool(ready), 5)
    await task


def test_a_tracker_still_waiting_when_its_client_closes_gets_missed(connect: Any) -> None:
    """The sync listener, closed, used to leave its trackers waiting in vain (the asyncio one said ``missed``)."""
    c = connect()
    q = c.create_queue("orders")
    t = q.send_tracked({"n": 1})
    c.close()
    assert t.wait(timeout=10) == E("missed", t.message_id)
    assert [e.kind for e in t.events] == ["missed"]
