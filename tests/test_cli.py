"""The ``rqueue`` command end to end: a real process against a real server."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import rqueue
from rqueue._protocol.keys import QueueKeys, prefix_pattern
from rqueue._transport.embedded import free_port

from .cli_helpers import assert_user_error, cli_env, run_cli, snapshot


@pytest.fixture
def rawc(server_url: str, prefix: str) -> Iterator[Any]:
    r = redis.Redis.from_url(server_url)
    yield r
    for key in list(r.scan_iter(match=prefix_pattern(prefix), count=1000)):
        r.unlink(key)
    r.close()


@pytest.fixture
def lib(server_url: str, prefix: str, rawc: Any) -> Iterator[rqueue.Client]:
    c = rqueue.connect(server_url, prefix=prefix)
    yield c
    c.close()


@pytest.fixture
def rq(server_url: str, prefix: str, rawc: Any) -> Any:
    def run(*args: str, stdin: bytes | None = None) -> Any:
        return run_cli(server_url, prefix, *args, stdin=stdin)

    return run


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "rqueue"
    assert script.exists() or shutil.which("rqueue")


def test_create_list_stats(rq: Any, lib: rqueue.Client) -> None:
    r = rq("create", "orders", "--visibility-timeout", "5", "--max-receive-count", "3")
    assert r.rc == 0, r.err
    assert "orders ready" in r.out and "dead-letter after 3" in r.out
    attrs = lib.queue("orders").attributes()
    assert (attrs.visibility_timeout, attrs.max_receive_count) == (5, 3)
    # The same again is a no-op.
    assert rq("create", "orders", "--visibility-timeout", "5", "--max-receive-count", "3").rc == 0
    rq("create", "billing")

    assert rq("list", "--json").json() == ["billing", "orders"]
    table = rq("list").out
    assert "orders" in table and "billing" in table and "visible" in table

    lib.queue("orders").send_batch(["a", "b"])
    stats = {s["name"]: s for s in rq("stats", "--json").json()}
    assert stats["orders"]["visible"] == 2 and stats["orders"]["sent_total"] == 2
    assert stats["billing"]["visible"] == 0
    one = rq("stats", "orders", "--json").json()
    assert [s["name"] for s in one] == ["orders"]
    assert "orders" in rq("stats", "orders").out


def test_send_and_receive(rq: Any, lib: rqueue.Client) -> None:
    q = lib.create_queue("orders")
    assert rq("send", "orders", "hello", "-a", "type=greeting", "-a", "lang=en").rc == 0
    assert rq("send", "orders", "--body-format", "json", stdin=b'{"n": 1}').rc == 0
    mid = rq("send", "orders", "--json", "--delay", "60", "later").json()["id"]
    assert rq("send", "orders", "-", "--body-format", "bytes", stdin=b"\x00\xff").rc == 0
    assert q.stats().delayed == 1

    got = rq("receive", "orders", "--max", "10", "--json").json()
    assert [m["body"] for m in got] == ["hello", {"n": 1}, {"base64": "AP8="}]
    assert got[0]["attributes"] == {"type": "greeting", "lang": "en"}
    assert all(m["receive_count"] == 1 and m["id"] != mid for m in got)
    # Not deleted: in flight, and the receipts delete them.
    assert q.stats().in_flight == 3
    r = rq("delete", "orders", got[0]["receipt"], got[1]["receipt"])
    assert r.rc == 0 and "deleted 2" in r.out
    # A stale receipt changes nothing and says so (exit 1: not an error of input).
    stale = rq("delete", "orders", got[0]["receipt"])
    assert stale.rc == 1 and "stale" in stale.out
    assert q.stats().deleted_total == 2


def test_receive_delete_and_wait(rq: Any, lib: rqueue.Client) -> None:
    q = lib.create_queue("orders")
    q.send_batch(["x", "y"])
    r = rq("receive", "orders", "--max", "5", "--delete")
    assert r.rc == 0 and "2 message(s), deleted" in r.out and "x" in r.out
    s = q.stats()
    assert (s.visible, s.in_flight, s.deleted_total) == (0, 0, 2)
    empty = rq("receive", "orders", "--wait", "0.2")
    assert empty.rc == 0 and "no message" in empty.out


def test_purge_redrive_dlq(rq: Any, lib: rqueue.Client) -> None:
    q = lib.create_queue("orders", max_receive_count=1)
    q.send_batch(["keep", "drop"], attributes={"type": "t"})
    first = q.receive(1)[0]
    assert q.reject(first.receipt, "bad sku 42")
    q.change_visibility(q.receive(1)[0].receipt, 0)
    assert q.receive(1) == []  # second receive dead-letters it (max_receives)

    r = rq("dlq", "orders")
    assert r.rc == 0, r.err
    assert "2 dead letter(s)" in r.out and "rejected" in r.out and "bad sku 42" in r.out and "max_receives" in r.out
    peeked = rq("dlq", "orders", "--json").json()
    assert {p["dead_letter"]["reason"] for p in peeked} == {"rejected", "max_receives"}
    assert {p["body"] for p in peeked} == {"keep", "drop"}
    # Peeking received nothing: the dead letters are still all visible, never received.
    d = q.dead_letter_queue.stats()
    assert (d.visible, d.received_total) == (2, 0)

    assert "moved 2" in rq("redrive", "orders").out
    assert q.stats().visible == 2 and q.dead_letter_queue.stats().visible == 0
    # purge asks for --yes when not on a terminal, and changes nothing without it.
    assert_user_error(rq("purge", "orders"), "--yes")
    assert q.stats().visible == 2
    assert "purged 2" in rq("purge", "orders", "--yes").out
    assert q.stats().visible == 0


def test_delete_queue(rq: Any, lib: rqueue.Client, rawc: Any, prefix: str) -> None:
    lib.create_queue("orders").send("x")
    assert_user_error(rq("delete-queue", "orders"), "--yes")
    assert rq("delete-queue", "orders", "--yes").rc == 0
    assert lib.list_queues() == []
    # Nothing but the id counter, which outlives the queue (test_queues).
    assert list(snapshot(rawc, prefix)) == [QueueKeys.for_queue(prefix, "orders").seq]


BAD_INPUT = [
    (["worker", "nomodule_xyz:handler", "--queue", "orders"], "cannot import module 'nomodule_xyz'", ""),
    (["worker", "rqueue.demo_handlers:nope", "--queue", "orders"], "no attribute 'nope'", ""),
    (["worker", "rqueue.demo_handlers", "--queue", "orders"], "pkg.module:function", ""),
    (["worker", "rqueue.demo_handlers:process_order", "--queue", "nope"], "queue 'nope' does not exist", ""),
    (["worker", "rqueue.demo_handlers:process_order"], "--queue", ""),
    (["worker", "rqueue.demo_handlers:process_order", "--queue", "orders", "--concurrency", "0"], "concurrency", ""),
    (["stats", "nope"], "queue 'nope' does not exist", "rqueue create nope"),
    (["send", "nope", "x"], "does not exist", ""),
    (["receive", "nope"], "does not exist", ""),
    (["redrive", "nope"], "does not exist", ""),
    (["dlq", "nope"], "does not exist", ""),
    (["purge", "nope", "--yes"], "does not exist", ""),
    (["stats", "bad name"], "queue name must be", ""),
    (["receive", "orders", "--max", "0"], "max_messages must be an integer from 1 to 1000", ""),
    (["receive", "orders", "--max", "abc"], "'--max'", "not a valid integer"),
    (["receive", "orders", "--wait", "301"], "wait_time", "300"),
    (["send", "orders", "x", "--delay", "-1"], "delay", ""),
    (["send", "orders", "x", "-a", "novalue"], "key=value", ""),
    (["send", "orders", "{", "--body-format", "json"], "not valid JSON", ""),
    (["delete", "orders", "garbage"], "receipt must be", ""),
    (["create", "orders", "--visibility-timeout", "99999999"], "visibility_timeout", ""),
    (["create", "orders", "--max-receive-count", "5"], "already exists", "rqueue delete-queue"),
    (["create", "x", "--retention", "1"], "retention", ""),
    (["stats", "--url", "redis://127.0.0.1:1/0"], "cannot reach redis://127.0.0.1:1/0", ""),
    (["stats", "--url", "nope://x"], "unknown scheme", ""),
    (["stats", "--url", "redis://:secret@localhost:port"], "cannot be used", "***"),
    (["stats", "--url", "redis+cluster://127.0.0.1:1"], "cannot reach the cluster", ""),
    (["stats", "--url", "embedded:///dev/null/x"], "cannot make the folder", ""),
]


@pytest.mark.parametrize(("args", "needle", "needle2"), BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    rq: Any, lib: rqueue.Client, rawc: Any, prefix: str, args: list[str], needle: str, needle2: str
) -> None:
    q = lib.create_queue("orders")
    q.send("kept")
    before = snapshot(rawc, prefix)
    r = rq(*args)
    assert_user_error(r, needle, needle2)
    assert "secret" not in r.err
    assert snapshot(rawc, prefix) == before


def test_worker_with_a_busy_metrics_port_is_one_line(rq: Any, lib: rqueue.Client) -> None:
    lib.create_queue("orders")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = rq("worker", "rqueue.demo_handlers:process_order", "--queue", "orders", "--metrics-port", str(port))
    assert_user_error(r, f"cannot serve metrics on port {port}")


def test_oversized_body_stores_nothing(rq: Any, lib: rqueue.Client, rawc: Any, prefix: str) -> None:
    lib.create_queue("orders", max_message_size=1024)
    before = snapshot(rawc, prefix)
    r = rq("send", "orders", stdin=b"a" * 1025)
    assert_user_error(r, "1025 bytes", "max_message_size of 1024")
    assert snapshot(rawc, prefix) == before


def test_url_from_option_beats_environment(server_url: str, prefix: str, rawc: Any) -> None:
    r = run_cli("redis://127.0.0.1:1/0", prefix, "create", "orders", "--url", server_url)
    assert r.rc == 0, r.err
    r = run_cli("redis://127.0.0.1:1/0", prefix, "list", "--json")
    assert_user_error(r, "cannot reach")


def test_help_lists_every_command(rq: Any) -> None:
    r = rq("--help")
    assert r.rc == 0
    listed = {line.split()[0] for line in r.out.partition("Commands:")[2].splitlines() if line.strip()}
    wanted = {"create", "list", "stats", "send", "receive", "delete", "purge", "redrive", "dlq", "worker", "demo"}
    assert wanted | {"bench", "produce", "request", "publish", "subscribe", "delete-queue"} <= listed


def test_bench_measures_and_leaves_nothing(rq: Any, rawc: Any, prefix: str) -> None:
    r = rq("bench", "-n", "2000", "--batch", "100", "--json")
    assert r.rc == 0, r.err
    data = r.json()
    assert data["messages"] == 2000 and data["send_per_s"] > 0 and data["receive_delete_per_s"] > 0
    assert snapshot(rawc, prefix) == {}  # the throwaway queue is gone
    human = rq("bench", "-n", "500")
    assert "receive+delete" in human.out and "msgs/s" in human.out


PRODUCE_ARGS = ["--rate", "200", "--seconds", "1", "--poison", "10", "--report-every", "0.2"]


def test_produce_sends_at_a_rate_and_logs_json(server_url: str, prefix: str, rq: Any, lib: rqueue.Client) -> None:
    q = lib.create_queue("orders")
    p = subprocess.run(
        [sys.executable, "-m", "rqueue", "--log-format", "json", "produce", "orders", *PRODUCE_ARGS],
        capture_output=True,
        env=cli_env(server_url, prefix),
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    s = q.stats()
    assert 150 <= s.sent_total <= 201  # one second at 200/s
    logs = [json.loads(line) for line in p.stderr.decode().splitlines()]
    assert logs[0]["msg"] == "producing" and logs[0]["queue"] == "orders" and logs[0]["level"] == "info"
    assert logs[-1]["msg"] == "sent" and logs[-1]["sent"] == s.sent_total
    bodies = [m.body for m in q.receive(1000)]
    assert [b["order"] for b in bodies] == list(range(s.sent_total))
    poison = sum(1 for b in bodies if b.get("poison"))
    assert abs(poison - s.sent_total / 10) <= 2


def test_worker_processes_until_sigterm_and_serves_metrics(
    server_url: str, prefix: str, lib: rqueue.Client, tmp_path: Path
) -> None:
    q = lib.create_queue("orders", max_receive_count=1)
    q.send_batch([{"order": i} for i in range(20)] + [{"order": 99, "poison": True}])
    port = free_port()
    with open(tmp_path / "log", "wb") as log:
        p = subprocess.Popen(
            [sys.executable, "-m", "rqueue", "worker", "rqueue.demo_handlers:process_order", *worker_args(port)],
            env=cli_env(server_url, prefix),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while (s := q.stats()).deleted_total + s.dead_lettered_total < 21 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (s.deleted_total, s.dead_lettered_total) == (20, 1)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert "rqueue" in metrics
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, (tmp_path / "log").read_text()
    assert "UnknownSku" in rq_dlq_reason(q)  # the poison order died with its error


def worker_args(port: int) -> list[str]:
    return ["--queue", "orders", "--concurrency", "4", "--metrics-port", str(port)]


def rq_dlq_reason(q: rqueue.Queue) -> str:
    d = q.dead_letter_queue.receive(1)[0].dead_letter
    assert d is not None
    return d.detail


def test_request_times_out_withdrawn_and_publish_reaches_subscriptions(rq: Any, lib: rqueue.Client) -> None:
    q = lib.create_queue("orders")
    r = rq("request", "orders", "hello", "--timeout", "0.3")
    assert r.rc == 1 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    s = q.stats()
    assert (s.sent_total, s.visible, s.in_flight) == (1, 0, 0)  # withdrawn: never to be processed

    sub = lib.topic("events").subscribe("audit")
    r = rq("publish", "events", "--body-format", "json", '{"event": "x"}', "--json")
    assert r.rc == 0, r.err
    got = sub.receive(10)
    assert [m.body for m in got] == [{"event": "x"}] and got[0].id == r.json()["id"]


def _until(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _blocked_pops(r: Any) -> int:
    return sum(1 for cl in r.client_list() if cl.get("cmd") == "blpop" and "b" in cl.get("flags", ""))


def _stop_request(server_url: str, prefix: str, sig: int, *args: str) -> tuple[int, str, float]:
    """Start ``rqueue request orders ...``, signal it once its message is queued or held;
    returns (exit code, stderr, seconds from the signal to the exit)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "rqueue", "request", "orders", "hello", "--timeout", "60", *args],
        env=cli_env(server_url, prefix),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with rqueue.connect(server_url, prefix=prefix) as c:
            q = c.queue("orders")
            _until(lambda: (s := q.stats()).visible + s.in_flight == 1, "the request to be queued")
            _until(lambda: _blocked_pops(c.redis) == 1, "the requester to block in its wait")
        t0 = time.monotonic()
        p.send_signal(sig)
        _out, err = p.communicate(timeout=30)
        return p.returncode, err, time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


@pytest.mark.parametrize(("sig", "rc"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_request_stopped_by_a_signal_withdraws_its_message(
    server_url: str, prefix: str, lib: rqueue.Client, sig: int, rc: int
) -> None:
    q = lib.create_queue("orders")  # no consumer
    code, err, seconds = _stop_request(server_url, prefix, sig)
    assert (code, seconds < 5) == (rc, True), err
    assert re.fullmatch(r"rqueue: interrupted; message \d+ withdrawn: it will not be processed\n", err), err
    s = q.stats()
    assert (s.sent_total, s.visible, s.in_flight, s.delayed) == (1, 0, 0, 0)  # withdrawn, never to be processed


def test_request_stopped_while_a_consumer_holds_it(server_url: str, prefix: str, lib: rqueue.Client) -> None:
    q = lib.create_queue("orders")
    held: list[rqueue.Message] = []
    p = threading.Thread(target=lambda: held.extend(q.receive(1, wait_time=30)))
    p.start()
    code, err, _ = _stop_request(server_url, prefix, signal.SIGINT)
    p.join(30)
    assert code == 130
    assert "a consumer had received message" in err and "may still process it" in err, err
    assert q.delete(held[0].receipt)  # the consumer's lease is intact


def test_repeating_request_stops_cleanly_and_withdraws(server_url: str, prefix: str, lib: rqueue.Client) -> None:
    q = lib.create_queue("orders")
    code, err, seconds = _stop_request(server_url, prefix, signal.SIGTERM, "--every", "1")
    assert (code, seconds < 5) == (0, True), err
    assert "withdrawn" in err
    s = q.stats()
    assert (s.visible, s.in_flight) == (0, 0)


def test_pause_and_resume(rq: Any, lib: rqueue.Client) -> None:
    q = lib.create_queue("orders")
    assert rq("pause", "orders").rc == 0
    r = rq("stats", "orders", "--json")
    assert r.rc == 0 and r.json()[0]["paused"] is True
    assert "(paused)" in rq("stats", "orders").out
    assert rq("send", "orders", "x").rc == 0
    assert q.receive() == []
    r = rq("resume", "orders", "--json")
    assert r.rc == 0 and r.json() == {"name": "orders", "paused": False}
    assert [m.body for m in q.receive()] == ["x"]
    assert_user_error(rq("pause", "nope"), "does not exist")


def test_create_with_the_new_attributes_and_set_them_live(rq: Any, lib: rqueue.Client) -> None:
    r = rq("create", "orders", "--fifo", "--rate-limit", "2.5", "--max-in-flight", "4", "--deduplication-window", "60")
    assert r.rc == 0, r.err
    assert "FIFO" in r.out and "at most 2.5/s" in r.out and "at most 4 in flight" in r.out
    a = lib.queue("orders").attributes()
    assert (a.fifo, a.rate_limit, a.max_in_flight, a.deduplication_window) == (True, 2.5, 4, 60.0)
    r = rq("set", "orders", "rate_limit=none", "max-in-flight=10", "visibility_timeout=5", "--json")
    assert r.rc == 0, r.err
    assert (r.json()["rate_limit"], r.json()["max_in_flight"], r.json()["visibility_timeout"]) == (None, 10, 5.0)
    a = lib.queue("orders").attributes()
    assert (a.rate_limit, a.max_in_flight, a.visibility_timeout, a.fifo) == (None, 10, 5.0, True)
    assert_user_error(rq("set", "orders", "fifo=false"), "fifo cannot change")
    assert_user_error(rq("set", "orders", "max_in_flight=0"), "max_in_flight must be an integer from 1")
    assert_user_error(rq("set", "orders", "colour=red"), "expected key=value")
    assert_user_error(rq("set", "orders", "rate_limit=fast"), "is not a value for rate_limit")
    assert_user_error(rq("set", "nope", "rate_limit=1"), "does not exist")
    assert lib.queue("orders").attributes() == a


def test_fifo_queue_from_the_command_line(rq: Any, lib: rqueue.Client) -> None:
    assert rq("create", "orders", "--fifo").rc == 0
    for body, group in (("a1", "alice"), ("b1", "bob"), ("a2", "alice")):
        assert rq("send", "orders", body, "--group", group).rc == 0
    assert_user_error(rq("send", "orders", "nogroup"), "every send needs a group")
    r = rq("stats", "orders")
    assert r.rc == 0 and "groups (in flight)" in r.out and "2 (0)" in r.out
    r = rq("receive", "orders", "--max", "10", "--json")
    assert r.rc == 0, r.err
    assert [(m["body"], m["group"]) for m in r.json()] == [("a1", "alice"), ("a2", "alice"), ("b1", "bob")]
    s = lib.queue("orders").stats()
    assert (s.groups, s.groups_in_flight, s.in_flight) == (2, 2, 3)
