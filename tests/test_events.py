"""SPEC §5 async senders: tracked messages' events reach their sender."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import rqueue
import rqueue.asyncio as rqa
from rqueue._protocol.events import UNCLAIMED_MAX, EventRouter
from rqueue._protocol.keys import QueueKeys

from .conftest import BACKENDS
from .test_requests import start_worker, stop_worker


def kinds(tracker: Any) -> list[str]:
    return [e.kind for e in tracker.events]


def test_events_in_order_received_then_processed(q: Any) -> None:
    seen: list[rqueue.Event] = []
    t = q.send_tracked({"order": 1}, on_event=seen.append)
    [m] = q.receive(1)
    assert m.receipt.endswith("e") and m.body == {"order": 1}
    assert t.wait("received", timeout=30) == rqueue.Event("received", m.id, None, "", "1")
    assert q.delete(m.receipt, reply={"ok": True})
    ev = t.wait("processed", timeout=30)
    assert ev == rqueue.Event("processed", m.id, {"ok": True})
    assert kinds(t) == ["received", "processed"]
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:  # callbacks run on the listener
        time.sleep(0.01)
    assert [e.kind for e in seen] == ["received", "processed"]


def test_send_with_on_event_returns_the_id_at_once(q: Any) -> None:
    got = threading.Event()
    events: list[rqueue.Event] = []

    def on_event(e: rqueue.Event) -> None:
        events.append(e)
        if e.kind == "processed":
            got.set()

    mid = q.send("job", on_event=on_event)
    assert isinstance(mid, str)
    [m] = q.receive(1)
    assert m.id == mid
    q.delete(m.receipt, reply="done")
    assert got.wait(30)
    assert [(e.kind, e.reply) for e in events] == [("received", None), ("processed", "done")]


def test_events_from_another_process(q: Any, backend_url: str, prefix: str) -> None:
    worker = start_worker(backend_url, prefix, q.name)
    try:
        trackers = [q.send_tracked(i) for i in range(20)]
        for i, t in enumerate(trackers):
            ev = t.wait("processed", timeout=30)
            assert ev.reply == {"echo": i, "pid": worker.pid}
            assert kinds(t) == ["received", "processed"]
        q.send("stop")
        assert worker.wait(30) == 0
    finally:
        stop_worker(worker)


def test_dead_letter_events(client: Any) -> None:
    q = client.create_queue("fragile", max_receive_count=1)
    rejected = q.send_tracked("a")
    crashed = q.send_tracked("b")
    ms = {m.body: m for m in q.receive(2)}
    q.reject(ms["a"].receipt, "bad input")
    q.change_visibility(ms["b"].receipt, 0)
    assert q.receive(1) == []  # b goes to the DLQ here
    assert rejected.wait(timeout=30) == rqueue.Event("dead_lettered", ms["a"].id, None, "rejected", "bad input")
    assert crashed.wait(timeout=30) == rqueue.Event("dead_lettered", ms["b"].id, None, "max_receives", "1")
    # dead letters are no longer tracked: the DLQ publishes nothing
    dlq = q.dead_letter_queue
    for m in dlq.receive(10):
        assert m.receipt[-1].isdigit()
        dlq.delete(m.receipt)
    assert kinds(rejected) == ["received", "dead_lettered"]
    assert kinds(crashed) == ["received", "dead_lettered"]


def test_untracked_messages_publish_nothing(q: Any, raw: Any, backend_url: str, prefix: str) -> None:
    channel = QueueKeys.for_queue(prefix, "orders").events
    if backend_url.startswith("redis+cluster://"):
        pytest.skip("the raw pub/sub check below needs a single node")
    ps = raw.pubsub()
    ps.subscribe(channel)
    try:
        assert ps.get_message(timeout=5)["type"] == "subscribe"
        q.send_batch(["a", "b"])
        q.send("c")
        q.delete_batch([m.receipt for m in q.receive(10)], replies=[1, 2, 3])
        q.send_tracked("tracked")
        q.delete(q.receive(1)[0].receipt)
        got = [ps.get_message(timeout=5) for _ in range(2)]
        assert [g["data"].split(b"|")[0] for g in got if g] == [b"received", b"processed"]
        assert ps.get_message(timeout=0.2) is None
    finally:
        ps.close()


def test_listener_reconnects_and_reports_missed(q: Any, raw: Any, backend_url: str) -> None:
    if backend_url.startswith("redis+cluster://"):
        pytest.skip("CLIENT KILL of the listener below needs a single node")
    t = q.send_tracked("x")
    [m] = q.receive(1)
    t.wait("received", timeout=30)
    raw.client_kill_filter(_type="pubsub")
    assert t.wait("processed", timeout=30).kind == "missed"
    q.delete(m.receipt, reply="late")
    assert kinds(t) == ["received", "missed"]  # nothing after missed
    # the listener is back: new tracked sends work again
    t2 = q.send_tracked("y")
    q.delete(q.receive(1)[0].receipt, reply="fine")
    assert t2.wait(timeout=30).reply == "fine"


def test_many_tracked_messages_with_competing_consumers(q: Any, connect: Any) -> None:
    consumers = [connect().queue("orders") for _ in range(3)]
    trackers = [q.send_tracked(i) for i in range(60)]
    done = 0
    while done < 60:
        for c in consumers:
            ms = c.receive(7)
            c.delete_batch([m.receipt for m in ms], replies=[m.body + 1000 for m in ms])
            done += len(ms)
    for i, t in enumerate(trackers):
        assert t.wait(timeout=30).reply == i + 1000
        assert kinds(t) == ["received", "processed"]


def test_wait_validates_and_times_out(q: Any) -> None:
    t = q.send_tracked("x")
    with pytest.raises(rqueue.InvalidParameter, match="kind"):
        t.wait("finished")
    with pytest.raises(TimeoutError):
        t.wait("processed", timeout=0.05)
    with pytest.raises(rqueue.InvalidParameter, match="dead-letter"):
        q.dead_letter_queue.send_tracked("x")


async def test_asyncio_send_tracked(server_url: str, prefix: str) -> None:
    client = await rqa.connect(server_url, prefix=prefix)
    try:
        q = await client.create_queue("orders")
        called: list[str] = []

        async def on_event(e: rqueue.Event) -> None:
            called.append(e.kind)

        t = await q.send_tracked({"n": 1}, on_event=on_event)
        [m] = await q.receive(1)
        await q.delete(m.receipt, reply=[1, 2])
        ev = await t.wait("processed", timeout=30)
        assert ev == rqueue.Event("processed", m.id, [1, 2])
        assert [e.kind for e in t.events] == ["received", "processed"]
        mid = await q.send("plain")
        assert mid.isdigit()
        await client.delete_queue("orders")
    finally:
        await client.aclose()
    assert called == ["received", "processed"]


# ---------------------------------------------------------------- client calls from on_event (issue 17, defect 10)

#: Well under the listener's 10 s subscribe timeout, which a deadlock would run into.
PROMPT = 5.0


@pytest.mark.parametrize("backend_url", BACKENDS, indirect=True)
def test_on_event_callback_can_send_tracked_and_wait_for_others(backend_url: str, prefix: str, raw: Any) -> None:
    """A callback sends a tracked message to another queue (a new subscription of the listener)
    and waits for another tracker's event: neither needs the callback to have returned."""
    with rqueue.connect(backend_url, prefix=prefix) as c:
        a, b = c.create_queue("a"), c.create_queue("b")
        out: dict[str, Any] = {}
        in_callback, finished = threading.Event(), threading.Event()

        def on_event(e: rqueue.Event) -> None:
            if e.kind != "received":
                return
            in_callback.set()
            t0 = time.monotonic()
            try:
                out["follow_up"] = b.send_tracked("follow-up")
                out["other"] = other.wait("received", timeout=PROMPT)
            except Exception as err:  # noqa: BLE001 - reported below
                out["error"] = err
            out["seconds"] = time.monotonic() - t0
            finished.set()

        first = a.send_tracked("first", on_event=on_event)
        other = a.send_tracked("other")
        [m] = a.receive(1)
        assert m.body == "first"
        assert in_callback.wait(30)
        [o] = a.receive(1)  # the other tracker's "received", awaited inside the callback
        assert o.body == "other"
        assert finished.wait(30)
        assert "error" not in out, out
        assert out["seconds"] < PROMPT and out["other"].kind == "received"
        [f] = b.receive(1)
        assert b.delete(f.receipt, reply="chained")
        assert out["follow_up"].wait(timeout=30).reply == "chained"
        assert a.delete(m.receipt, reply="ok")
        assert first.wait(timeout=30).reply == "ok"


def test_slow_callback_does_not_stall_other_trackers(server_url: str, prefix: str) -> None:
    with rqueue.connect(server_url, prefix=prefix) as c:
        q = c.create_queue("orders")
        release = threading.Event()
        slow = q.send_tracked("slow", on_event=lambda e: release.wait(30))
        quick = q.send_tracked("quick")
        for m in q.receive(2):
            q.delete(m.receipt, reply=m.body)
        try:
            assert quick.wait(timeout=PROMPT).reply == "quick"  # while slow's callback still blocks
            assert slow.wait(timeout=PROMPT).reply == "slow"
        finally:
            release.set()


def test_close_from_a_callback(server_url: str, prefix: str) -> None:
    c = rqueue.connect(server_url, prefix=prefix)
    q = c.create_queue("orders")
    received, closed = threading.Event(), threading.Event()

    def on_event(_e: rqueue.Event) -> None:
        received.wait(30)  # not while the receive below is still reading its reply
        c.close()
        closed.set()

    q.send_tracked("x", on_event=on_event)
    q.receive(1)
    received.set()
    assert closed.wait(PROMPT)
    with pytest.raises(rqueue.ConnectionError, match="closed"):
        q.send_tracked("y")


async def test_asyncio_on_event_callback_can_send_tracked_and_wait_for_others(server_url: str, prefix: str) -> None:
    async with await rqa.connect(server_url, prefix=prefix) as c:
        a, b = await c.create_queue("a"), await c.create_queue("b")
        loop = asyncio.get_running_loop()
        in_callback: asyncio.Future[None] = loop.create_future()
        finished: asyncio.Future[tuple[Any, rqueue.Event, float]] = loop.create_future()

        async def on_event(e: rqueue.Event) -> None:
            if e.kind != "received":
                return
            in_callback.set_result(None)
            t0 = loop.time()
            try:
                follow_up = await b.send_tracked("follow-up")
                seen = await other.wait("received", timeout=PROMPT)
            except Exception as err:  # noqa: BLE001 - reported below
                finished.set_exception(err)
            else:
                finished.set_result((follow_up, seen, loop.time() - t0))

        first = await a.send_tracked("first", on_event=on_event)
        other = await a.send_tracked("other")
        [m] = await a.receive(1)
        assert m.body == "first"
        await asyncio.wait_for(in_callback, 30)
        [o] = await a.receive(1)
        assert o.body == "other"
        follow_up, seen, seconds = await asyncio.wait_for(finished, 30)
        assert seconds < PROMPT and seen.kind == "received"
        [f] = await b.receive(1)
        await b.delete(f.receipt, reply="chained")
        assert (await follow_up.wait(timeout=30)).reply == "chained"
        await a.delete(m.receipt, reply="ok")
        assert (await first.wait(timeout=30)).reply == "ok"


# ---------------------------------------------------------------- the listener's connection


@pytest.mark.parametrize("backend_url", [p for p in BACKENDS if p.id != "cluster"], indirect=True)
def test_listener_reconnects_never_use_up_the_pool(backend_url: str, prefix: str, raw: Any) -> None:
    """Each reconnect of the listener used to count against the pool's max_connections for good
    (CLIENT KILL of the listener below needs a single node: not on Cluster)."""
    with rqueue.connect(backend_url, prefix=prefix, max_connections=2) as c:
        q = c.create_queue("orders")
        for i in range(3):
            t = q.send_tracked(i)  # (re)subscribes
            raw.client_kill_filter(_type="pubsub")
            assert t.wait(timeout=30).kind == "missed"
        last = q.send_tracked("last")
        [m] = [m for m in q.receive(10) if m.body == "last"]
        assert q.delete(m.receipt, reply="ok")
        assert last.wait(timeout=30).reply == "ok"


@pytest.fixture(scope="module")
def no_channels() -> Iterator[str]:
    """A server whose user may use every key and command but no pub/sub channel."""
    from rqueue._transport.embedded import ServerProcess

    with ServerProcess(extra=["--requirepass", "pw"]) as server:
        r = redis.Redis(port=server.port, password="pw")
        r.execute_command("ACL", "SETUSER", "nochan", "on", ">npw", "~*", "resetchannels", "+@all")
        r.close()
        yield f"redis://nochan:npw@127.0.0.1:{server.port}/0"


def test_refused_subscription_is_permission_denied_at_once(no_channels: str) -> None:
    with rqueue.connect(no_channels, prefix="acl") as c:
        q = c.create_queue("orders")
        t0 = time.monotonic()
        with pytest.raises(rqueue.PermissionDenied, match="channel"):
            q.send_tracked("x")
        assert time.monotonic() - t0 < PROMPT
        assert q.stats().sent_total == 0  # refused before anything was sent
        q.send("untracked sends still work")


async def test_refused_subscription_is_permission_denied_at_once_asyncio(no_channels: str) -> None:
    async with await rqa.connect(no_channels, prefix="acl") as c:
        q = await c.create_queue("orders")
        with pytest.raises(rqueue.PermissionDenied, match="channel"):
            await asyncio.wait_for(q.send_tracked("x"), PROMPT)


# ---------------------------------------------------------------- router, no Redis


def test_router_buffers_events_that_beat_registration() -> None:
    r = EventRouter()
    got: list[rqueue.Event] = []
    assert r.dispatch("c", b"received|7|1") == []
    assert r.dispatch("c", b"processed|7|jnull") == []
    due = r.register("c", "7", got.append, r.generation)
    assert [e.kind for _, e in due] == ["received", "processed"]
    assert r.pending() == 0  # finished before it was tracked


def test_router_missed_on_lost_connection_and_across_generations() -> None:
    r = EventRouter()
    got: list[rqueue.Event] = []
    gen = r.generation
    r.register("c", "1", got.append, gen)
    [(_sink, ev)] = r.lost()
    assert ev == rqueue.Event("missed", "1")
    late = r.register("c", "2", got.append, gen)  # sent before the reconnect
    assert [e.kind for _, e in late] == ["missed"] and r.pending() == 0


def test_router_unclaimed_buffer_is_bounded() -> None:
    r = EventRouter()
    for i in range(UNCLAIMED_MAX + 50):
        r.dispatch("c", f"received|{i}|1".encode())
    assert r.register("c", "0", lambda e: None, r.generation) == []


def test_parse_events() -> None:
    from rqueue._protocol.events import parse

    assert parse(b"processed|5|s|a|b") == rqueue.Event("processed", "5", "|a|b")
    assert parse(b"dead_lettered|5|rejected|x|y") == rqueue.Event("dead_lettered", "5", None, "rejected", "x|y")
    assert parse(b"expired|5|") == rqueue.Event("expired", "5")
