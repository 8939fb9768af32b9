"""``rqueue demo``: rqueue working end to end in one command.

Starts (or reuses) a server, then worker processes on a queue, two
subscriber processes on a topic, and a load generator in this process that
sends orders (some as sync requests, some as tracked sends) and publishes an
event per order. A live table shows what the server counts; the summary
checks that every message sent is processed, dead-lettered or still queued.

Children run the real ``rqueue worker`` / ``rqueue subscribe`` commands in
their own sessions (Ctrl-C reaches only this process, which stops them in
order) and die with this process if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console, Group
from rich.live import Live

from rqueue._protocol.errors import QueueDoesNotExist
from rqueue._sync.client import Client, Queue, connect
from rqueue._transport.backends import mask_url
from rqueue._transport.embedded import ServerProcess, die_with_parent, embedded
from rqueue.cli.demo_handlers import order_check_keys
from rqueue.cli.demo_view import Row, live_view, render_summary
from rqueue.cli.loadgen import LoadCounts, LoadGenerator

__all__ = ["Demo", "render_summary"]

QUEUE = "demo-orders"
#: A FIFO queue of per-customer orders: each customer's orders must run in order.
FIFO_QUEUE = "demo-customer-orders"
FIFO_HANDLER = "rqueue.demo_handlers:customer_order"
CUSTOMERS = 20
TOPIC = "demo-events"
SUBSCRIPTIONS = {"audit": "rqueue.demo_handlers:audit", "email": "rqueue.demo_handlers:email"}
HANDLER = "rqueue.demo_handlers:process_order"
#: How long the end of a bounded run waits for the queues to empty.
DRAIN_SECONDS = 5.0
STOP_SECONDS = 15.0
SUBSCRIPTION_TTL = 60
#: How long the demo waits for its worker processes to start consuming.
READY_SECONDS = 30.0


class Demo:
    """One run of the demo; ``run()`` returns the summary."""

    def __init__(
        self,
        *,
        url: str | None,
        prefix: str,
        seconds: float | None,
        rate: float,
        consumers: int,
        console: Console,
        quiet: bool,
    ) -> None:
        self.given_url = url or "embedded://"
        self.prefix = prefix
        self.seconds = seconds
        self.rate = rate
        self.n_consumers = consumers
        self.console = console
        self.quiet = quiet
        self.server: ServerProcess | None = None
        self.url = ""
        self.client: Client | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.logdir = Path(tempfile.mkdtemp(prefix="rqueue-demo-"))
        self.rows: dict[str, Row] = {}
        self.subs: dict[str, Queue] = {}
        self.notes: list[str] = []
        self.phase = "starting"
        self.started = time.monotonic()
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self.load: LoadGenerator | None = None
        self.fifo_sent = 0

    # -- signals: Ctrl-C asks for an orderly stop, a second one hurries it

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            self.hurry.set()
        self.stop.set()

    # -- setup

    def _start_server(self) -> None:
        if self.given_url.startswith("embedded:"):
            self.server = embedded(urlsplit(self.given_url).path)
            self.url = self.server.url
            self.notes.append(f"started a private server at {self.url} (stops with the demo)")
        else:
            self.url = self.given_url
            self.notes.append(f"using the server at {mask_url(self.url)}")

    def _setup_queues(self) -> Client:
        client = connect(self.url, prefix=self.prefix)
        self.client = client
        with contextlib.suppress(QueueDoesNotExist):
            client.delete_queue(QUEUE)
        q = client.create_queue(QUEUE, visibility_timeout=10, max_receive_count=3)
        self.rows[QUEUE] = Row(QUEUE, q.stats())
        with contextlib.suppress(QueueDoesNotExist):
            client.delete_queue(FIFO_QUEUE)
        fq = client.create_queue(FIFO_QUEUE, fifo=True, visibility_timeout=10, max_receive_count=3)
        self.rows[FIFO_QUEUE] = Row(f"{FIFO_QUEUE} (FIFO)", fq.stats())
        client.redis.delete(*order_check_keys(self.prefix))
        topic = client.topic(TOPIC)
        for name in SUBSCRIPTIONS:
            topic.unsubscribe(name)  # a fresh subscription: its counters start at zero
            sub = topic.subscribe(name, ttl=SUBSCRIPTION_TTL)
            self.subs[name] = sub
            self.rows[sub.name] = Row(f"{TOPIC} → {name}", sub.stats())
        return client

    def _spawn(self, name: str, args: list[str]) -> None:
        env = dict(os.environ, RQUEUE_URL=self.url, RQUEUE_PREFIX=self.prefix, RQUEUE_LOG_FORMAT="json")
        with open(self.logdir / f"{name}.log", "ab") as log:
            self.children[name] = subprocess.Popen(
                [sys.executable, "-m", "rqueue", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=die_with_parent,
                start_new_session=True,
            )

    def _spawn_all(self) -> None:
        for i in range(self.n_consumers):
            self._spawn(f"consumer-{i + 1}", ["worker", HANDLER, "--queue", QUEUE, "--concurrency", "8"])
        self._spawn("consumer-fifo", ["worker", FIFO_HANDLER, "--queue", FIFO_QUEUE, "--concurrency", "8"])
        for name in self.subs:
            args = ["subscribe", TOPIC, name, SUBSCRIPTIONS[name], "--ttl", str(SUBSCRIPTION_TTL)]
            self._spawn(f"subscriber-{name}", args)

    def _wait_for_workers(self) -> None:
        """Start the load once every child consumes (its log says so), so replies time the work, not start-up."""
        deadline = time.monotonic() + READY_SECONDS
        waiting = set(self.children)
        while waiting and time.monotonic() < deadline and not self.stop.is_set():
            for name in list(waiting):
                with contextlib.suppress(OSError):
                    if b'"msg":"consuming' in (self.logdir / f"{name}.log").read_bytes():
                        waiting.discard(name)
                if self.children[name].poll() is not None:
                    waiting.discard(name)  # it failed; _check_children reports it
            self.stop.wait(0.05)
        if waiting:
            self.notes.append(f"not ready after {READY_SECONDS:g} s: {', '.join(sorted(waiting))}")

    # -- the live view

    def _sample(self) -> None:
        assert self.client is not None
        with contextlib.suppress(Exception):  # an outage shows as stale numbers, not a crash
            self.rows[QUEUE].sample(self.client.queue(QUEUE).stats())
            self.rows[FIFO_QUEUE].sample(self.client.queue(FIFO_QUEUE).stats())
            for sub in self.subs.values():
                self.rows[sub.name].sample(sub.stats())

    def _counts(self) -> LoadCounts:
        return self.load.counts() if self.load is not None else LoadCounts()

    def render(self) -> Group:
        """The live view: the queues' table, the load's lines, the children, the clock."""
        elapsed = time.monotonic() - self.started
        alive = sum(1 for p in self.children.values() if p.poll() is None)
        return live_view(
            self.phase, self.rows, self._counts(), (alive, len(self.children)), self.notes, elapsed, self.seconds
        )

    # -- the run

    def run(self) -> dict[str, Any]:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._start_and_watch()
        finally:
            self._teardown()
            for s, h in old.items():
                signal.signal(s, h)

    def _start_and_watch(self) -> dict[str, Any]:
        self._start_server()
        client = self._setup_queues()
        self._spawn_all()
        self._wait_for_workers()
        self.load = LoadGenerator(
            client,
            QUEUE,
            rate=self.rate,
            requests_pct=5,
            tracked_pct=20,
            poison_pct=2,
            topic=TOPIC,
            request_timeout=10,
        )
        load_stop = threading.Event()
        producer = threading.Thread(target=self.load.produce, args=(load_stop, self.seconds), name="rqueue-demo-load")
        fifo_producer = threading.Thread(target=self._produce_fifo, args=(load_stop,), name="rqueue-demo-fifo")
        live = Live(self.render(), console=self.console, refresh_per_second=4, transient=False)
        self.started = time.monotonic()
        self.phase = "running"
        producer.start()
        fifo_producer.start()
        with live if not self.quiet else contextlib.nullcontext():
            while not self.stop.is_set() and not self.load.stopped.is_set():
                self.stop.wait(0.25)
                self._sample()
                self._check_children()
                live.update(self.render())
            self.phase = "stopping the load generator"
            load_stop.set()
            live.update(self.render())
            while (producer.is_alive() or fifo_producer.is_alive()) and not self.hurry.is_set():
                producer.join(0.25)
                fifo_producer.join(0.01)
            if not self.stop.is_set():
                self.phase = "draining"
                deadline = time.monotonic() + DRAIN_SECONDS
                while time.monotonic() < deadline and not self.stop.is_set() and not self._drained():
                    self.stop.wait(0.25)
                    self._sample()
                    live.update(self.render())
            self.phase = "stopping the workers"
            live.update(self.render())
            self._stop_children()
            self._sample()
            self.phase = "stopped"
            live.update(self.render())
        return self.summary(interrupted=self.stop.is_set())

    def _produce_fifo(self, stop: threading.Event) -> None:
        """Per-customer orders to the FIFO queue, a batch a tick, each numbered per customer,
        until ``stop`` or the load generator stops; the handler checks they run in order."""
        assert self.client is not None
        q = self.client.queue(FIFO_QUEUE)
        seq = dict.fromkeys(range(CUSTOMERS), 0)
        rng = random.Random(7)
        tick = 0.05
        per_tick = max(1, round(self.rate / 4 * tick))
        nxt = time.monotonic()
        while not stop.is_set() and not (self.load is not None and self.load.stopped.is_set()):
            orders, groups = [], []
            for _ in range(per_tick):
                c = rng.randrange(CUSTOMERS)
                seq[c] += 1
                orders.append({"customer": f"customer-{c:02d}", "seq": seq[c]})
                groups.append(f"customer-{c:02d}")
            with contextlib.suppress(Exception):  # an outage shows in the counts
                q.send_batch(orders, group=groups)
                self.fifo_sent += len(orders)
            nxt += tick
            stop.wait(max(0.0, nxt - time.monotonic()))

    def _fifo_check(self) -> dict[str, Any]:
        assert self.client is not None
        _last, skipped, checked = order_check_keys(self.prefix)
        s = self.rows[FIFO_QUEUE].stats
        return {
            "customers": CUSTOMERS,
            "sent": self.fifo_sent,
            "checked": int(self.client.redis.get(checked) or 0),
            "out_of_order": int(self.client.redis.get(skipped) or 0),
            "groups": s.groups,
            "groups_in_flight": s.groups_in_flight,
        }

    def _drained(self) -> bool:
        return all(r.queued == 0 for r in self.rows.values())

    def _check_children(self) -> None:
        for name, p in self.children.items():
            if p.poll() is not None and f"{name} exited" not in " ".join(self.notes):
                self.notes.append(f"{name} exited with code {p.returncode}: {self._log_tail(name)}")

    def _log_tail(self, name: str) -> str:
        try:
            lines = (self.logdir / f"{name}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def _stop_children(self) -> None:
        """SIGTERM every child (graceful: finish and ack in-flight work), then SIGKILL the late."""
        for p in self.children.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL if self.hurry.is_set() else signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for p in self.children.values():
            while p.poll() is None and time.monotonic() < deadline and not self.hurry.is_set():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(0.1)
            if p.poll() is None:
                p.kill()
                p.wait()

    def _teardown(self) -> None:
        for p in self.children.values():  # after an error in setup or run
            if p.poll() is None:
                p.kill()
                p.wait()
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.close()
        failed = any(p.returncode not in (0, -signal.SIGTERM, None) for p in self.children.values())
        if not failed:
            shutil.rmtree(self.logdir, ignore_errors=True)

    def summary(self, *, interrupted: bool) -> dict[str, Any]:
        c = self._counts()
        queues = {name: row.accounting() for name, row in self.rows.items()}
        return {
            "seconds": round(time.monotonic() - self.started, 1),
            "interrupted": interrupted,
            "server": mask_url(self.url),
            "queues": queues,
            "processed": queues[QUEUE]["processed"],
            "all_accounted": all(q["accounted"] for q in queues.values()),
            "load": {
                "sent": c.sent,
                "poison": c.poison,
                "published": c.published,
                "requests": c.requests,
                "replies": c.replies,
                "request_timeouts": c.request_timeouts,
                "request_errors": c.request_errors,
                "reply_p50_ms": c.reply_p50(),
                "tracked": c.tracked,
                "events": c.events,
            },
            "fifo": self._fifo_check(),
            "processes": {name: p.returncode for name, p in self.children.items()},
            "notes": self.notes,
        }
