"""SPEC §5 sync senders: request() blocks on a reply key until a consumer deletes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import rqueue
import rqueue.asyncio as rqa
from rqueue._protocol.keys import reply_pattern

from .conftest import raw_client

ROOT = Path(__file__).resolve().parent.parent


def reply_keys(raw: Any, prefix: str) -> list[bytes]:
    return list(raw.scan_iter(match=reply_pattern(prefix), count=1000))


def start_worker(url: str, prefix: str, queue: str) -> subprocess.Popen[str]:
    """A consumer process (tests/worker.py), started and ready."""
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.worker", url, prefix, queue],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready"
    return p


def stop_worker(p: subprocess.Popen[str]) -> None:
    p.kill()
    p.wait()
    if p.stdout is not None:
        p.stdout.close()


class Echo:
    """A consumer thread: receive, then delete with reply ``fn(body)``."""

    def __init__(self, url: str, prefix: str, queue: str, fn: Callable[[Any], Any]) -> None:
        self.client = rqueue.connect(url, prefix=prefix)
        self.q = self.client.queue(queue)
        self.fn = fn
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            ms = self.q.receive(10, wait_time=0.2)
            if ms:
                self.q.delete_batch([m.receipt for m in ms], replies=[self.fn(m.body) for m in ms])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.client.close()


@pytest.fixture
def echo(backend_url: str, prefix: str) -> Iterator[Callable[..., Echo]]:
    made: list[Echo] = []

    def make(queue: str = "orders", fn: Callable[[Any], Any] = lambda b: {"echo": b}) -> Echo:
        e = Echo(backend_url, prefix, queue, fn)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def test_request_reply_across_processes(client: Any, q: Any, backend_url: str, prefix: str, raw: Any) -> None:
    worker = start_worker(backend_url, prefix, q.name)
    try:
        for body in ["text", {"n": 1}, [1, 2], None, 5]:
            assert q.request(body, timeout=30) == {"echo": body, "pid": worker.pid}
        assert q.request("stop", timeout=30) == "stopped"
        assert worker.wait(30) == 0
    finally:
        stop_worker(worker)
    assert reply_keys(raw, prefix) == []
    stats = q.stats()
    assert (stats.sent_total, stats.deleted_total, stats.visible, stats.in_flight) == (6, 6, 0, 0)


def test_reply_kinds_round_trip(q: Any, echo: Callable[..., Echo], raw: Any, prefix: str) -> None:
    echo(fn=lambda b: b)  # the reply is the body itself
    for body in ["s", b"\xff\x00", {"a": [1, 2.5, None]}, 7, None, ""]:
        got = q.request(body, timeout=30)
        assert got == body and type(got) is type(body)
    assert reply_keys(raw, prefix) == []


def test_delete_without_reply_gives_none(q: Any) -> None:
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(q.request("x", timeout=30)))
    t.start()
    [m] = q.receive(1, wait_time=30)
    assert m.receipt.endswith("r")
    assert q.delete(m.receipt) is True
    t.join(30)
    assert result == [None]


def test_fifty_concurrent_requests_from_threads(
    client: Any, q: Any, echo: Callable[..., Echo], raw: Any, prefix: str
) -> None:
    echo(fn=lambda b: b * 2)
    echo(fn=lambda b: b * 2)  # competing consumers
    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(lambda i: q.request(i, timeout=60), range(50)))
    assert replies == [i * 2 for i in range(50)]
    assert reply_keys(raw, prefix) == []


async def test_fifty_concurrent_requests_from_asyncio_tasks(server_url: str, prefix: str) -> None:
    client = await rqa.connect(server_url, prefix=prefix)
    q = await client.create_queue("orders")
    consumer = Echo(server_url, prefix, "orders", lambda b: {"twice": b * 2})
    try:
        replies = await asyncio.gather(*(q.request(i, timeout=60) for i in range(50)))
        assert replies == [{"twice": i * 2} for i in range(50)]
        # a blocked request never stalls other calls of the same client
        slow = asyncio.ensure_future(q.request("late", timeout=60))
        consumer.stop.set()
        consumer.thread.join(10)
        [m] = await q.receive(1, wait_time=30)
        assert (await q.stats()).in_flight == 1  # while `slow` blocks on its reply key
        assert not slow.done()
        await q.delete(m.receipt, reply="done")
        assert await slow == "done"
    finally:
        consumer.close()
        await client.delete_queue("orders")
        await client.aclose()
    r = raw_client(server_url)
    try:
        assert reply_keys(r, prefix) == []
    finally:
        r.close()


def test_timeout_withdraws_a_message_nobody_received(q: Any, raw: Any, prefix: str) -> None:
    with pytest.raises(TimeoutError) as info:
        q.request({"job": 1}, timeout=0.2)
    err = info.value
    assert isinstance(err, rqueue.RequestTimeout) and isinstance(err, rqueue.RQueueError)
    assert err.withdrawn is True and "withdrawn" in str(err)
    assert q.receive(10) == []  # never processed afterwards
    stats = q.stats()
    assert (stats.visible, stats.delayed, stats.in_flight) == (0, 0, 0)
    assert reply_keys(raw, prefix) == []


def test_timeout_withdraws_a_delayed_message(q: Any) -> None:
    with pytest.raises(rqueue.RequestTimeout) as info:
        q.request("later", timeout=0.1, delay=0.3)
    assert info.value.withdrawn
    assert q.receive(1, wait_time=0.6) == []


def test_timeout_while_in_flight_leaves_no_reply_key(q: Any, raw: Any, prefix: str) -> None:
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            q.request("slow", timeout=0.5)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=ask)
    t.start()
    [m] = q.receive(1, wait_time=30)
    t.join(30)
    [err] = errors
    assert isinstance(err, rqueue.RequestTimeout) and err.withdrawn is False
    assert "may still process it" in str(err)
    assert q.delete(m.receipt, reply="too late") is True  # the consumer still finishes
    assert reply_keys(raw, prefix) == []


def test_dead_letter_by_reject_while_waiting(q: Any, raw: Any, prefix: str) -> None:
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            q.request("bad", timeout=30)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=ask)
    t.start()
    [m] = q.receive(1, wait_time=30)
    assert q.reject(m.receipt, "ValueError: no good") is True
    t.join(30)
    [err] = errors
    assert isinstance(err, rqueue.MessageDeadLettered)
    assert (err.reason, err.detail, err.message_id) == ("rejected", "ValueError: no good", m.id)
    assert "dead-lettered (rejected: ValueError: no good)" in str(err)
    [dead] = q.dead_letter_queue.receive(1)
    assert dead.body == "bad" and dead.receipt == dead.receipt.rstrip("re")
    assert reply_keys(raw, prefix) == []


def test_dead_letter_by_max_receives_while_waiting(client: Any, raw: Any, prefix: str) -> None:
    q = client.create_queue("fragile", max_receive_count=1)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            q.request("crashes", timeout=30)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=ask)
    t.start()
    [m] = q.receive(1, wait_time=30)
    assert q.change_visibility(m.receipt, 0)  # the consumer gave up
    assert q.receive(1) == []  # the next receive dead-letters it
    t.join(30)
    [err] = errors
    assert isinstance(err, rqueue.MessageDeadLettered)
    assert (err.reason, err.detail) == ("max_receives", "1")
    assert q.stats().dead == 1
    assert reply_keys(raw, prefix) == []


def test_timeout_after_dead_letter_names_why(client: Any, raw: Any, prefix: str) -> None:
    """The reply key lost (e.g. the receiving client died before notifying): withdraw still says why."""
    q = client.create_queue("fragile", max_receive_count=1)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            q.request("crashes", timeout=1.0)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=ask)
    t.start()
    [m] = q.receive(1, wait_time=30)
    q.reject(m.receipt.rstrip("r"), "gone")  # a receipt without the request mark: no reply pushed
    t.join(30)
    [err] = errors
    assert isinstance(err, rqueue.MessageDeadLettered) and err.reason == "rejected"
    assert reply_keys(raw, prefix) == []


def test_request_validates_before_sending(q: Any) -> None:
    for bad in (0, -1, float("nan"), "1", 10**9):
        with pytest.raises(rqueue.InvalidParameter, match="timeout"):
            q.request("x", timeout=bad)
    with pytest.raises(rqueue.InvalidParameter, match="dead-letter"):
        q.dead_letter_queue.request("x", timeout=1)
    with pytest.raises(rqueue.InvalidParameter, match="replies"):
        q.delete_batch(["1.2"], replies=[1, 2])
    assert q.stats().sent_total == 0


def test_untracked_receipts_look_as_before(q: Any) -> None:
    q.send("plain")
    [m] = q.receive(1)
    assert m.receipt == f"{m.id}.{m.receipt.split('.')[1]}" and m.receipt[-1].isdigit()
    assert q.delete(m.receipt, reply={"dropped": True}) is True
