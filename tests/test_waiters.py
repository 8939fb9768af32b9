"""Waiting calls (long polls, requests): many at once, a closed client, asyncio cancellation.

Issue 17 defect 1: every waiter used to hold a pool connection, so ~100 of them broke the
client's other calls; issue 9 defect 14: closing a client under a waiting request raised a raw
TypeError; issue 17 defects 7 and 8: a cancelled asyncio receive could hide messages for the
whole visibility timeout, and a cancelled asyncio request was not withdrawn.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

import rqueue
import rqueue.asyncio as rqa
from rqueue._protocol.keys import prefix_pattern, reply_pattern

from .conftest import raw_client, stored_keys

# ---------------------------------------------------------------- helpers


def nodes(raw: Any) -> list[Any]:
    """A plain client per server of ``raw`` (one; three on the cluster)."""
    if hasattr(raw, "get_nodes"):
        return [n.redis_connection for n in raw.get_primaries()]
    return [raw]


def node_of(raw: Any, key: str) -> Any:
    """A plain client for the server holding ``key``."""
    return raw.get_node_from_key(key).redis_connection if hasattr(raw, "get_node_from_key") else raw


def blocked(raw: Any, cmd: str) -> int:
    """Clients blocked in ``cmd`` (a BLPOP, or an EVALSHA held by CLIENT PAUSE), on every server."""
    return sum(1 for r in nodes(raw) for c in r.client_list() if c["cmd"] == cmd and "b" in c["flags"])


def until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.002)


async def auntil(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.002)


def waiting(client: Any, raw: Any = None) -> int:
    """Waits registered with the client (sync Client, AsyncClient or its bridge); before
    waits were multiplexed each blocked a BLPOP of its own, so count those there."""
    waiter = client._waiter
    return int(waiter.waiting()) if hasattr(waiter, "waiting") else blocked(raw, "blpop")


class Paused:
    """CLIENT PAUSE WRITE on the server holding ``key``: scripts sent meanwhile wait
    there, so a test can cancel a call while its script is on the server."""

    def __init__(self, raw: Any, key: str) -> None:
        self.node = node_of(raw, key)
        self.raw = raw

    def __enter__(self) -> Paused:
        self.node.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        return self

    def held(self) -> bool:
        return any(c["cmd"] == "evalsha" and "b" in c["flags"] for c in self.node.client_list())

    def __exit__(self, *exc: object) -> None:
        self.node.execute_command("CLIENT", "UNPAUSE")


async def cancel_when_held(raw: Any, key: str, start: Callable[[], Awaitable[Any]]) -> None:
    """Start a call, cancel it while its script waits on the paused server, then let the server go on."""
    with Paused(raw, key) as paused:
        task = asyncio.ensure_future(start())
        await auntil(paused.held, "the call's script is on the server")
        task.cancel()
        await asyncio.sleep(0.05)  # the cancellation reaches the task while the server still holds the script
    with pytest.raises(asyncio.CancelledError):
        await task


async def cancel_after_it_ran(task: asyncio.Future[Any], ran: Callable[[], bool]) -> None:
    """Cancel ``task`` once the server has run its script but before the client read the
    reply (as when the reply is still on the way): between two turns of the event loop,
    poll the server with a blocking client, so the loop cannot read the reply meanwhile.

    The client must have no socket_timeout: redis-py then sends without yielding, so the
    cancellation lands in the read of the reply (with one, it lands in an asyncio.wait_for
    around the send, which on Python 3.11 may swallow it).
    """
    for _ in range(10_000):
        await asyncio.sleep(0)
        assert not task.done(), "the call ended before it could be cancelled"
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            if ran():
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                return
            time.sleep(0.001)
    raise AssertionError("the script never ran")


# ---------------------------------------------------------------- 17/1: many waiters


async def test_a_thousand_async_waiters_share_a_few_connections(backend_url: str, prefix: str, raw: Any) -> None:
    """1,000 waiting calls of one client (500 long polls, 500 requests) leave its other
    calls working, hold a few connections between them, and each wakes on its message."""
    c = await rqa.connect(backend_url, prefix=prefix)
    server = await rqa.connect(backend_url, prefix=prefix)
    try:
        polled = [await c.create_queue(f"poll{i}") for i in range(5)]
        orders = await c.create_queue("orders")
        side = await c.create_queue("side")
        polls = [asyncio.ensure_future(polled[i % 5].receive(wait_time=60)) for i in range(500)]
        requests = [asyncio.ensure_future(orders.request(i, timeout=60)) for i in range(500)]
        everyone = (*polls, *requests)
        await auntil(
            lambda: waiting(c, raw) == 1000 or any(t.done() for t in everyone), "1,000 waits are registered", 30
        )
        assert [t.result() for t in everyone if t.done()] == []

        # Few connections between them, none taken from the pool.
        assert blocked(raw, "blpop") <= 40
        # Ordinary calls of the same client go on, one after another and 50 at once.
        for i in range(100):
            t0 = time.monotonic()
            await side.send(i)
            assert time.monotonic() - t0 < 1.0
        await asyncio.gather(*(side.send(i) for i in range(50)))
        assert (await side.stats()).visible == 150

        # Each long poll wakes on its message.
        t0 = time.monotonic()
        for q in polled:
            await server.queue(q.name).send_batch([f"{q.name}-{i}" for i in range(100)])
        got = await asyncio.wait_for(asyncio.gather(*polls), 20)
        assert sorted(m.body for batch in got for m in batch) == sorted(
            f"poll{k}-{i}" for k in range(5) for i in range(100)
        )
        polls_took = time.monotonic() - t0

        # Each request gets its own reply.
        t0 = time.monotonic()
        answerer = server.queue("orders")
        answered = 0
        while answered < 500:
            batch = await answerer.receive(100, wait_time=5)
            await answerer.delete_batch([m.receipt for m in batch], replies=[m.body * 2 for m in batch])
            answered += len(batch)
        replies = await asyncio.wait_for(asyncio.gather(*requests), 20)
        assert replies == [i * 2 for i in range(500)]
        assert polls_took < 10 and time.monotonic() - t0 < 10
        assert waiting(c, raw) == 0
    finally:
        await c.aclose()
        await server.aclose()


def test_two_hundred_waiting_threads_leave_the_pool_to_other_calls(connect: Any, raw: Any) -> None:
    """200 threads waiting (100 long polls, 100 requests) on one client: its other calls
    go on and every waiter is served (sync threads; asyncio through the bridge)."""
    c = connect()
    server = connect()
    polled = [c.create_queue("poll0"), c.create_queue("poll1")]
    orders = c.create_queue("orders")
    side = c.create_queue("side")
    results: dict[int, Any] = {}

    def poll(i: int) -> None:
        try:
            results[i] = polled[i % 2].receive(wait_time=60)
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            results[i] = e

    def request(i: int) -> None:
        try:
            results[i] = orders.request(i, timeout=60)
        except Exception as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(100)]
    threads += [threading.Thread(target=request, args=(i,)) for i in range(100, 200)]
    for t in threads:
        t.start()
    until(lambda: waiting(c, raw) == 200 or results, "200 waits are registered", timeout=30)
    assert results == {}
    assert blocked(raw, "blpop") <= 50  # lanes, not a connection per waiter
    for i in range(100):
        side.send(i)
    assert side.stats().visible == 100

    for q in polled:
        server.queue(q.name).send_batch([f"{q.name}-{i}" for i in range(50)])
    answerer = server.queue("orders")
    answered = 0
    while answered < 100:
        batch = answerer.receive(100, wait_time=5)
        answerer.delete_batch([m.receipt for m in batch], replies=[m.body for m in batch])
        answered += len(batch)
    for t in threads:
        t.join(20)
    assert sorted(m.body for i in range(100) for m in results[i]) == sorted(
        f"poll{k}-{i}" for k in range(2) for i in range(50)
    )
    assert [results[i] for i in range(100, 200)] == list(range(100, 200))


def test_readme_consumer_setting_with_handlers_sending_through_the_same_client(server_url: str, prefix: str) -> None:
    """concurrency 200, batch 100 (the README's advice), each handler sending a message and
    making a request through the consumer's own client: no handler run fails."""
    c = rqueue.connect(server_url, prefix=prefix)
    answerer = rqueue.connect(server_url, prefix=prefix)
    try:
        jobs, out, asks = c.create_queue("jobs"), c.create_queue("out"), c.create_queue("asks")
        outcomes: list[str] = []
        lock = threading.Lock()

        def record(result: Any) -> None:
            with lock:
                outcomes.append(result.outcome)

        def handle(body: int) -> None:
            out.send(body)
            assert asks.request(body, timeout=30) == body

        def answer(body: int) -> int:
            return body

        consumer = rqueue.Consumer(jobs, handle, concurrency=200, batch_size=100, hooks=[record])
        replier = rqueue.Consumer(answerer.queue("asks"), answer, concurrency=200, batch_size=100)
        jobs.send_batch(list(range(1000)))
        with replier, consumer:
            until(lambda: len(outcomes) >= 1000, "every job is handled", timeout=60)
        assert outcomes.count("ok") == 1000, sorted(set(outcomes))
        assert out.stats().visible == 1000
    finally:
        c.close()
        answerer.close()


async def test_readme_asyncio_consumer_setting_with_handlers_sending_through_the_same_client(
    server_url: str, prefix: str
) -> None:
    """The same with rqueue.asyncio.Consumer: 200 handler tasks sending and requesting at once."""
    c = await rqa.connect(server_url, prefix=prefix)
    answerer = await rqa.connect(server_url, prefix=prefix)
    try:
        jobs, out, asks = [await c.create_queue(n) for n in ("jobs", "out", "asks")]
        outcomes: list[str] = []

        async def handle(body: int) -> None:
            await out.send(body)
            assert await asks.request(body, timeout=30) == body

        async def answer(body: int) -> int:
            return body

        record = lambda r: outcomes.append(r.outcome)  # noqa: E731
        consumer = rqa.Consumer(jobs, handle, concurrency=200, batch_size=100, hooks=[record])
        replier = rqa.Consumer(answerer.queue("asks"), answer, concurrency=200, batch_size=100)
        await jobs.send_batch(list(range(1000)))
        async with replier, consumer:
            await auntil(lambda: len(outcomes) >= 1000, "every job is handled", timeout=60)
        assert outcomes.count("ok") == 1000, sorted(set(outcomes))
        assert (await out.stats()).visible == 1000
    finally:
        await c.aclose()
        await answerer.aclose()


def test_ordinary_calls_past_the_pool_size_wait_for_a_connection(connect: Any) -> None:
    """redis-py's pool fails past its size ("Too many connections"); the client lets at
    most that many calls in at once and the others wait (threads; tasks via the bridge)."""
    c = connect(max_connections=8)
    q = c.create_queue("orders")
    errors: list[BaseException] = []
    start = threading.Barrier(60)

    def send() -> None:
        start.wait()
        try:
            for i in range(20):
                q.send(i)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            errors.append(e)

    threads = [threading.Thread(target=send) for _ in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and q.stats().visible == 1200


async def test_cancelled_callers_waiting_for_a_connection_leave_none_behind(backend_url: str, prefix: str) -> None:
    c = await rqa.connect(backend_url, prefix=prefix, max_connections=8)
    try:
        q = await c.create_queue("orders")
        crowd = [asyncio.ensure_future(q.send(i)) for i in range(300)]
        await asyncio.sleep(0)
        for t in crowd[::2]:
            t.cancel()
        await asyncio.gather(*crowd, return_exceptions=True)
        assert [t.exception() for t in crowd[1::2]] == [None] * 150
        await asyncio.wait_for(asyncio.gather(*(q.send(i) for i in range(50))), 10)  # every slot is back
        assert (await q.stats()).visible >= 200
    finally:
        await c.aclose()


def test_the_wait_connection_limit_is_named(cluster_url: str, prefix: str, raw_cluster: Any) -> None:
    """On a cluster each hash slot waited on at once needs a connection: past the limit a
    waiting call fails with an rqueue error naming it and how to raise it."""
    c = rqueue.connect(cluster_url, prefix=prefix, max_wait_connections=1)
    try:
        a, b = c.create_queue("a"), c.create_queue("b")
        assert raw_cluster.keyslot(a._keys.wake) != raw_cluster.keyslot(b._keys.wake)
        t = threading.Thread(target=a.receive, kwargs={"wait_time": 2})
        t.start()
        until(lambda: waiting(c) == 1, "the first wait is registered")
        with pytest.raises(rqueue.ConnectionError, match=r"max_wait_connections=N") as err:
            b.receive(wait_time=1)
        assert "all 1 connections for waiting calls" in str(err.value)
        b.send("ordinary calls are not limited")
        t.join()
    finally:
        c.close()


@pytest.fixture
def raw_cluster(cluster_url: str) -> Any:
    r = raw_client(cluster_url)
    yield r
    r.close()


def test_max_wait_connections_is_checked(server_url: str) -> None:
    for bad in (0, -1, 100_001, 1.5, True, "8"):
        with pytest.raises(rqueue.InvalidParameter, match="max_wait_connections must be an integer from 1 to 100000"):
            rqueue.connect(server_url, max_wait_connections=bad)


@pytest.fixture
def no_unblock_url(server_url: str) -> Any:
    """The standalone server's URL for a user whom ACLs deny CLIENT UNBLOCK."""
    admin = redis.Redis.from_url(server_url)
    admin.acl_setuser("nounblock", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all"])
    try:
        admin.execute_command("ACL", "SETUSER", "nounblock", "-client|unblock")
    except redis.ResponseError:
        admin.acl_deluser("nounblock")
        admin.close()
        pytest.skip("this server (Redis 6.2) cannot deny one subcommand in an ACL; run on Redis/Valkey 7+")
    host, port = admin.connection_pool.connection_kwargs["host"], admin.connection_pool.connection_kwargs["port"]
    yield f"redis://nounblock:pw@{host}:{port}/0"
    admin.acl_deluser("nounblock")
    admin.close()


def test_without_client_unblock_waits_time_out_on_the_server_tick(no_unblock_url: str, prefix: str) -> None:
    """Where ACLs deny CLIENT UNBLOCK, waits still wake on a send and time out (on the
    server's tick), each blocked lane taking no new key, up to the limit, which is then named."""
    c = rqueue.connect(no_unblock_url, prefix=prefix, max_wait_connections=3)
    raw = redis.Redis.from_url(no_unblock_url)
    try:
        qs = [c.create_queue(f"q{i}") for i in range(4)]
        t0 = time.monotonic()
        assert qs[0].receive(wait_time=0.3) == []
        assert 0.3 <= time.monotonic() - t0 < 0.3 + 0.5
        got: list[Any] = []
        threads = []
        for i in range(3):
            threads.append(threading.Thread(target=lambda q=qs[i]: got.extend(q.receive(wait_time=10))))
            threads[-1].start()
            until(lambda i=i: blocked(raw, "blpop") == i + 1, f"{i + 1} lanes block")
        with pytest.raises(rqueue.ConnectionError, match="CLIENT UNBLOCK"):
            qs[3].receive(wait_time=5)
        t0 = time.monotonic()
        for q in qs[:3]:
            q.send(q.name)
        for t in threads:
            t.join(5)
        assert sorted(m.body for m in got) == ["q0", "q1", "q2"]
        assert time.monotonic() - t0 < 1.0
    finally:
        c.close()
        raw.close()


def test_without_client_unblock_a_wait_ended_early_returns_at_once(no_unblock_url: str, prefix: str) -> None:
    """A stopping consumer ends its long poll early: where ACLs deny CLIENT UNBLOCK the BLPOP
    in flight is left to a background reader, and the wait still returns at once."""
    c = rqueue.connect(no_unblock_url, prefix=prefix)
    try:
        q = c.create_queue("orders")
        ended: list[float] = []

        def on_block(unblock: Callable[[], None]) -> None:
            threading.Timer(0.2, lambda: (ended.append(time.monotonic()), unblock())).start()

        assert c.wait(q._keys.wake, 5, on_block=on_block) is False
        assert time.monotonic() - ended[0] < 0.3
        q.send("x")  # the background reader hands the token it pops on
        assert [m.body for m in q.receive(wait_time=2)] == ["x"]
    finally:
        c.close()


# ---------------------------------------------------------------- 9/14: closing a client under waiters


@pytest.mark.parametrize("call", ["request", "long poll"])
def test_closing_the_client_ends_its_waiting_calls_with_an_rqueue_error(connect: Any, raw: Any, call: str) -> None:
    c = connect()
    q = c.create_queue("orders")
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            if call == "request":
                q.request("x", timeout=10)
            else:
                q.receive(wait_time=10)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            outcome.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    until(lambda: blocked(raw, "blpop") >= 1, "the call waits")
    t0 = time.monotonic()
    c.close()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 2
    assert len(outcome) == 1
    assert isinstance(outcome[0], rqueue.ConnectionError), repr(outcome[0])
    assert "is closed" in str(outcome[0])


# ---------------------------------------------------------------- 17/7: cancelled asyncio receives


async def test_receive_cancelled_while_its_reply_is_on_the_way_leaves_the_messages_visible(
    backend_url: str, prefix: str, raw: Any
) -> None:
    c = await rqa.connect(backend_url, prefix=prefix, socket_timeout=None)  # see cancel_after_it_ran
    observer = rqueue.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders", visibility_timeout=60)
        seen = observer.queue("orders")
        await q.send_batch(["a", "b", "c"])
        await cancel_after_it_ran(asyncio.ensure_future(q.receive(10)), lambda: seen.stats().in_flight == 3)
        got = await q.receive(10)
        assert sorted(m.body for m in got) == ["a", "b", "c"]
        assert {m.receive_count for m in got} == {2}  # the cancelled receive took them, then gave them back
    finally:
        await c.aclose()
        observer.close()


async def test_receive_cancelled_while_its_script_is_held_leaves_the_messages_visible(
    backend_url: str, prefix: str, raw: Any
) -> None:
    """The same when the server holds the script (writes paused, as in a failover) past the cancel."""
    c = await rqa.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders", visibility_timeout=60)
        await q.send_batch(["a", "b", "c"])
        await cancel_when_held(raw, q._keys.meta, lambda: q.receive(10))
        got = await q.receive(10)
        assert sorted(m.body for m in got) == ["a", "b", "c"]
    finally:
        await c.aclose()


async def test_long_poll_cancelled_just_after_it_woke_leaves_the_message_visible(
    backend_url: str, prefix: str, raw: Any
) -> None:
    c = await rqa.connect(backend_url, prefix=prefix, socket_timeout=None)  # see cancel_after_it_ran
    observer = rqueue.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders", visibility_timeout=60)
        seen = observer.queue("orders")
        task = asyncio.ensure_future(q.receive(wait_time=20))
        await auntil(lambda: waiting(c, raw) == 1 and blocked(raw, "blpop") == 1, "it long-polls")
        seen.send("x")  # wakes it: it receives, and is cancelled with the reply on the way
        await cancel_after_it_ran(task, lambda: seen.stats().in_flight == 1)
        (m,) = await q.receive()
        assert (m.body, m.receive_count) == ("x", 2)
    finally:
        await c.aclose()
        observer.close()


async def test_cancelled_long_poll_hands_a_wake_up_it_took_on(backend_url: str, prefix: str, raw: Any) -> None:
    """Cancelled while waiting: nothing is hidden, and another waiter still wakes on the send."""
    c = await rqa.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders")
        first = asyncio.ensure_future(q.receive(wait_time=20))
        await auntil(lambda: waiting(c, raw) == 1, "it long-polls")
        second = asyncio.ensure_future(q.receive(wait_time=20))
        await auntil(lambda: waiting(c, raw) == 2, "both long-poll")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await q.send("x")
        (m,) = await asyncio.wait_for(second, 2)
        assert m.body == "x"
        assert waiting(c, raw) == 0
    finally:
        await c.aclose()


async def test_cancelled_receive_still_tells_a_waiting_requester(backend_url: str, prefix: str, raw: Any) -> None:
    """A receive cancelled after it dead-lettered a request still tells its sender at once."""
    c = await rqa.connect(backend_url, prefix=prefix, socket_timeout=None)  # see cancel_after_it_ran
    observer = rqueue.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders", visibility_timeout=0.1, max_receive_count=1)
        sender = asyncio.ensure_future(q.request("x", timeout=20))
        await auntil(lambda: waiting(c, raw) == 1, "the sender waits")
        assert len(await q.receive()) == 1  # its one receive; the lease ends 0.1 s later
        await asyncio.sleep(0.15)
        t0 = time.monotonic()
        dlq = observer.queue("orders:dlq")
        await cancel_after_it_ran(asyncio.ensure_future(q.receive()), lambda: dlq.stats().visible == 1)
        with pytest.raises(rqueue.MessageDeadLettered):
            await asyncio.wait_for(sender, 5)
        assert time.monotonic() - t0 < 2
    finally:
        await c.aclose()
        observer.close()


# ---------------------------------------------------------------- 17/8: cancelled asyncio requests


async def test_request_given_up_by_wait_for_is_withdrawn(backend_url: str, prefix: str, raw: Any) -> None:
    c = await rqa.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.request("x", timeout=30), 0.3)
        stats = await q.stats()
        assert (stats.visible, stats.in_flight, stats.deleted_total) == (0, 0, 1)
        assert await q.receive(wait_time=0.2) == []
    finally:
        await c.aclose()


async def test_request_cancelled_while_sending_is_withdrawn(backend_url: str, prefix: str, raw: Any) -> None:
    c = await rqa.connect(backend_url, prefix=prefix, socket_timeout=None)  # see cancel_after_it_ran
    observer = rqueue.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders")
        seen = observer.queue("orders")
        await cancel_after_it_ran(
            asyncio.ensure_future(q.request("x", timeout=30)), lambda: seen.stats().sent_total == 1
        )
        stats = await q.stats()
        assert (stats.sent_total, stats.visible, stats.deleted_total) == (1, 0, 1)
    finally:
        await c.aclose()
        observer.close()


async def test_request_cancelled_while_its_send_is_held_is_withdrawn(backend_url: str, prefix: str, raw: Any) -> None:
    c = await rqa.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders")
        await cancel_when_held(raw, q._keys.meta, lambda: q.request("x", timeout=30))
        stats = await q.stats()
        assert (stats.visible, stats.in_flight) == (0, 0)
    finally:
        await c.aclose()


async def test_request_cancelled_while_withdrawing_still_withdraws(backend_url: str, prefix: str, raw: Any) -> None:
    c = await rqa.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders")
        task = asyncio.ensure_future(q.request("x", timeout=0.3))
        await auntil(lambda: waiting(c, raw) == 1 and blocked(raw, "blpop") == 1, "the request waits for its reply")
        with Paused(raw, q._keys.meta) as paused:
            await auntil(paused.held, "its withdraw is on the server")
            task.cancel()
            await asyncio.sleep(0.05)
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = await q.stats()
        assert (stats.visible, stats.deleted_total) == (0, 1)
    finally:
        await c.aclose()


async def test_request_cancelled_while_a_consumer_holds_it_gets_no_reply_key(
    backend_url: str, prefix: str, raw: Any
) -> None:
    c = await rqa.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders")
        task = asyncio.ensure_future(q.request("x", timeout=30))
        (m,) = await q.receive(wait_time=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await q.delete(m.receipt, reply="late")
        assert stored_keys(raw, prefix, reply_pattern(prefix)) == []
    finally:
        await c.aclose()


def test_sync_request_interrupted_while_waiting_is_withdrawn(lib: rqueue.Client, server_url: str) -> None:
    """Ctrl-C (KeyboardInterrupt in the main thread) during a sync request withdraws it, as a timeout does."""
    raw = redis.Redis.from_url(server_url)
    q = lib.create_queue("orders")
    main = threading.main_thread().ident
    assert main == threading.get_ident()

    def interrupt() -> None:  # once blocked (redis-py leaks a socket interrupted while connecting)
        until(lambda: waiting(lib, raw) == 1 and blocked(raw, "blpop") == 1, "the request waits")
        signal.pthread_kill(main, signal.SIGINT)

    t = threading.Thread(target=interrupt)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        q.request("x", timeout=30)
    t.join()
    stats = q.stats()
    assert (stats.visible, stats.deleted_total) == (0, 1)
    raw.close()


# ---------------------------------------------------------------- other awaits of the asyncio API


async def test_cancelled_tracked_sends_and_tracker_waits_leave_tracking_working(
    backend_url: str, prefix: str, raw: Any
) -> None:
    c = await rqa.connect(backend_url, prefix=prefix)
    try:
        q = await c.create_queue("orders")
        tracker = await q.send_tracked("a")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(tracker.wait("processed"), 0.1)
        await cancel_when_held(raw, q._keys.meta, lambda: q.send_tracked("b"))
        later = await q.send_tracked("c")
        for m in await q.receive(10):
            await q.delete(m.receipt, reply=m.body.upper())
        assert (await tracker.wait("processed", timeout=5)).reply == "A"
        assert (await later.wait("processed", timeout=5)).reply == "C"
    finally:
        await c.aclose()


OPERATIONS: dict[str, Callable[[Any, str], Awaitable[Any]]] = {
    "send": lambda q, r: q.send("y"),
    "send_batch": lambda q, r: q.send_batch(["y", "z"]),
    "delete": lambda q, r: q.delete(r),
    "change_visibility": lambda q, r: q.change_visibility(r, 5),
    "reject": lambda q, r: q.reject(r, "no"),
    "stats": lambda q, r: q.stats(),
    "purge": lambda q, r: q.purge(),
    "redrive": lambda q, r: q.redrive(),
}


@pytest.mark.parametrize("op", sorted(OPERATIONS))
async def test_any_call_cancelled_on_the_server_leaves_the_client_usable(server_url: str, prefix: str, op: str) -> None:
    """Cancelling a call while its script is on the server: the call happens or not, and the
    client's next calls work (no half-read reply left on a pooled connection)."""
    raw = redis.Redis.from_url(server_url)
    c = await rqa.connect(server_url, prefix=prefix)
    try:
        q = await c.create_queue("orders")
        await q.send("x")
        (m,) = await q.receive()
        await cancel_when_held(raw, q._keys.meta, lambda: OPERATIONS[op](q, m.receipt))
        await q.send("after")
        assert (await q.stats()).sent_total in (2, 3, 4)
        assert await c.list_queues() == ["orders"]
    finally:
        await c.aclose()
        for key in raw.scan_iter(match=prefix_pattern(prefix)):
            raw.unlink(key)
        raw.close()


def test_interrupting_the_thread_that_reads_a_lane_leaves_its_other_waiters_served(
    lib: rqueue.Client, server_url: str
) -> None:
    """Two long polls on one queue share a lane, read by the first; Ctrl-C in that one
    hands the lane to the other, which still wakes on the next send."""
    raw = redis.Redis.from_url(server_url)
    q = lib.create_queue("orders")
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    got: list[Any] = []
    other = threading.Thread(target=lambda: got.extend(q.receive(wait_time=10)))

    def interrupt() -> None:
        until(lambda: waiting(lib, raw) == 1 and blocked(raw, "blpop") == 1, "the main thread waits")
        other.start()
        until(lambda: waiting(lib, raw) == 2, "the other thread waits on the same lane")
        signal.pthread_kill(main, signal.SIGINT)

    t = threading.Thread(target=interrupt)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        q.receive(wait_time=10)
    t.join()
    t0 = time.monotonic()
    q.send("x")
    other.join(5)
    assert [m.body for m in got] == ["x"] and time.monotonic() - t0 < 1
    raw.close()


def test_a_forked_child_waits_on_lanes_of_its_own(lib: rqueue.Client) -> None:
    q = lib.create_queue("orders")
    assert q.receive(wait_time=0.05) == []  # the parent has a lane now
    with warnings.catch_warnings():  # Python 3.12+ warns about fork() in a process with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: wakes on a send, times out on time
        code = 1
        try:
            t = threading.Timer(0.1, lambda: q.send("x"))
            t.start()
            (m,) = q.receive(wait_time=5)
            t0 = time.monotonic()
            ok = m.body == "x" and q.receive(wait_time=0.2) == [] and 0.2 <= time.monotonic() - t0 < 1
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert q.receive(wait_time=0.05) == []  # and the parent's lane still works


# ---------------------------------------------------------------- the I/O-free bookkeeping of lanes


def waiter(key: str, deadline: float = 1e9, pop: bool = False) -> Any:
    from rqueue._transport.lanes import LaneWait

    return LaneWait(key, deadline, pop, threading.Event())


def test_lanes_hand_a_lane_on_to_another_waiter_and_past_one_that_left() -> None:
    from rqueue._transport.lanes import Lanes

    core = Lanes("redis://x", 8, 4)
    a, b, c = waiter("k1"), waiter("k2"), waiter("k2")
    lane, new = core.place(a, "", None, True)
    assert new and all(core.place(w, "", None, True)[0] is lane for w in (b, c))
    lane.driver = a
    assert core.plan(lane, 0) == ["k1", "k2"]
    core.popped(lane, [b"k1", b"v"], 0)
    assert (a.done, a.value) == (True, b"v")
    assert core.next_step(lane, a, True) == "stop"
    assert core.hand_over(lane, a, 0) is b  # b drives next (the runner signals it)
    assert not c.handle.is_set()
    core.leave(b)  # b leaves before it ever drove: c is asked instead
    assert c.handle.is_set() and not c.done and lane.driver is None


def test_lanes_driver_finishes_a_blpop_nobody_else_waits_for() -> None:
    from rqueue._transport.lanes import _BACKGROUND, Lanes

    core = Lanes("redis://x", 8, 4)
    a = waiter("k")
    lane, _ = core.place(a, "", None, True)
    lane.driver = a
    core.plan(lane, 0)
    core.leave(a)  # ended early (a stopping consumer) while its BLPOP is on the way
    assert (lane.replan, lane.orphans) == (True, {"k": False})
    assert core.next_step(lane, a, True) == "last"  # it reads the answer itself rather than leave it unread
    assert core.next_step(lane, a, False) == "stop"  # (no CLIENT UNBLOCK: a background driver waits it out)
    assert core.popped(lane, [b"k", b"1"], 0) is False  # a wake-up nobody here wants: hand it on
    assert core.next_step(lane, a, True) == "stop" and core.hand_over(lane, a, 0) is None
    b = waiter("k")
    core.place(b, "", None, True)
    lane.driver = b
    core.plan(lane, 0)  # b's BLPOP is on the way when b's thread is interrupted
    assert core.hand_over(lane, b, 0) is _BACKGROUND  # nobody else waits: a background driver reads it


def test_lanes_deliver_in_order_and_expire_exactly() -> None:
    from rqueue._transport.lanes import AGAIN, Lanes

    core = Lanes("redis://x", 8, 4)
    first, second, late = waiter("k", 5), waiter("k", 10), waiter("r", 2, pop=True)
    lane = core.place(first, "", None, True)[0]
    core.place(second, "", None, True)
    core.place(late, "", None, True)
    core.plan(lane, 0)
    assert core.popped(lane, None, 2.0) is None  # released at r's deadline: r times out, the others wait
    assert (late.done, late.value, first.done) == (True, None, False)
    core.plan(lane, 2.0)
    core.popped(lane, [b"k", b"1"], 3.0)
    assert (first.value, second.done) == (b"1", False)  # first come, first served
    core.plan(lane, 3.0)
    core.popped(lane, AGAIN, 3.5)  # the slot moved: look again
    assert second.value is AGAIN and core.waiting() == 0


def test_lanes_limit_on_cluster_and_without_client_unblock() -> None:
    from rqueue._transport.lanes import Lanes

    core = Lanes("redis://x", 2, 1)
    core.place(waiter("a"), "n1", 1, True)[0].blocked = frozenset({"a"})
    core.place(waiter("b"), "n1", 2, True)[0].blocked = frozenset({"b"})
    core.place(waiter("b2"), "n1", 2, True)  # same slot: the lane gets longer
    with pytest.raises(rqueue.ConnectionError, match=r"all 2 connections .* max_wait_connections=N"):
        core.place(waiter("c"), "n1", 3, True)  # a third slot at once
    one = Lanes("redis://x", 1, 1)
    one.place(waiter("a"), "", None, True)[0].blocked = frozenset({"a"})
    for i in range(200):  # one server: lanes just get longer, never an error
        one.place(waiter(f"k{i}"), "", None, True)
    assert (one.count, one.waiting()) == (1, 201)
    acl = Lanes("redis://x", 2, 1)
    acl.place(waiter("a"), "", None, False)[0].blocked = frozenset({"a"})
    acl.place(waiter("b"), "", None, False)[0].blocked = frozenset({"b"})
    with pytest.raises(rqueue.ConnectionError, match="CLIENT UNBLOCK"):
        acl.place(waiter("c"), "", None, False)  # a blocked lane cannot be released for it


def _kill_blpops(raw: Any) -> None:
    for c in raw.client_list():
        if c["cmd"] == "blpop":
            raw.client_kill_filter(_id=c["id"])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_request_whose_wait_connection_is_lost_is_withdrawn(server_url: str, prefix: str, mode: str) -> None:
    """A request that fails while waiting (its connection killed) withdraws its message, as a
    timed-out one does: nobody processes it for a sender who already got an error."""
    raw = redis.Redis.from_url(server_url)
    results: list[BaseException | None] = []

    def sync_request() -> None:
        with rqueue.connect(server_url, prefix=prefix) as c:
            try:
                c.create_queue("rq").request("hi", timeout=20)
                results.append(None)
            except BaseException as e:  # noqa: BLE001 - recorded for the assertion
                results.append(e)

    async def async_request() -> None:
        c = await rqa.connect(server_url, prefix=prefix)
        try:
            await (await c.create_queue("rq")).request("hi", timeout=20)
            results.append(None)
        except BaseException as e:  # noqa: BLE001
            results.append(e)
        finally:
            await c.aclose()

    t = threading.Thread(target=sync_request if mode == "sync" else lambda: asyncio.run(async_request()))
    t.start()
    try:
        until(lambda: blocked(raw, "blpop") == 1, "the request blocked on its reply")
        _kill_blpops(raw)
        t.join(20)
        assert not t.is_alive()
        assert len(results) == 1 and isinstance(results[0], rqueue.ConnectionError), results
        with rqueue.connect(server_url, prefix=prefix) as c:
            s = c.queue("rq").stats()
            assert (s.visible, s.in_flight, s.delayed) == (0, 0, 0)
    finally:
        raw.close()
