"""Worker processes under real signals and a real server restart, on every backend.

Workers run ``python -m rqueue worker tests.consumer_app:<handler>`` and log
each handler event to a file; the tests await those events and queue stats.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import rqueue
from rqueue._protocol.keys import prefix_pattern

from .conftest import BACKENDS, raw_client
from .consumer_app import fails
from .servers import Cluster, FixtureServer, Sentinel

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def until(cond: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Workers:
    def __init__(self, url: str, prefix: str, tmp: Path) -> None:
        self.url, self.prefix, self.tmp = url, prefix, tmp
        self.log = tmp / "events.log"
        self.log.touch()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, handler: str = "record", *args: str, **env: Any) -> subprocess.Popen[bytes]:
        """A worker process: the ``rqueue worker`` command (``python -m rqueue worker``)."""
        e = {**os.environ, "RQ_TEST_LOG": str(self.log), **{k: str(v) for k, v in env.items()}}
        err = open(self.tmp / f"worker{len(self.procs)}.err", "wb")  # noqa: SIM115 - owned by the child
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rqueue",
                "worker",
                f"tests.consumer_app:{handler}",
                "--url",
                self.url,
                "--prefix",
                self.prefix,
                "--queue",
                "jobs",
                *args,
            ],
            cwd=ROOT,
            env=e,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        err.close()
        self.procs.append(p)
        return p

    def events(self) -> list[tuple[str, int, int, int]]:
        out = []
        for line in self.log.read_text().splitlines():
            ev, i, rc, pid = line.split()
            out.append((ev, int(i), int(rc), int(pid)))
        return out

    def count(self, event: str) -> int:
        return sum(1 for e in self.events() if e[0] == event)

    def stderr(self, n: int) -> str:
        return (self.tmp / f"worker{n}.err").read_text()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture
def workers(backend_url: str, prefix: str, tmp_path: Path) -> Iterator[Workers]:
    """Worker processes on the test's backend (standalone, Cluster, Sentinel)."""
    w = Workers(backend_url, prefix, tmp_path)
    yield w
    w.close()
    r = raw_client(backend_url)
    for key in list(r.scan_iter(match=prefix_pattern(prefix), count=1000)):
        r.unlink(key)
    r.close()


#: Where signals and load are worth a worker process: behind Sentinel a worker runs as on a standalone
#: server (Sentinel only names the master), so Sentinel is covered by the restart test.
STANDALONE_AND_CLUSTER = [pytest.param("standalone"), pytest.param("cluster", marks=pytest.mark.cluster)]


@pytest.mark.parametrize("backend_url", STANDALONE_AND_CLUSTER, indirect=True)
def test_sigkill_mid_batch_loses_nothing(workers: Workers, backend_url: str, prefix: str) -> None:
    with rqueue.connect(backend_url, prefix=prefix) as c:
        q = c.create_queue("jobs", visibility_timeout=1)
        q.send_batch([{"i": i} for i in range(60)])
        a = workers.start("record", "--concurrency", "8", "--batch-size", "8", RQ_TEST_SLEEP=0.2)
        until(lambda: workers.count("start") >= 8, what="worker A mid-batch")
        a.send_signal(signal.SIGKILL)
        a.wait()
        started_by_a = {i for ev, i, _rc, pid in workers.events() if ev == "start" and pid == a.pid}
        done_by_a = {i for ev, i, _rc, pid in workers.events() if ev == "done" and pid == a.pid}
        assert started_by_a - done_by_a, "A was killed with work in hand"
        b = workers.start("record", "--concurrency", "16", RQ_TEST_SLEEP=0.01)
        until(lambda: q.stats().deleted_total == 60 or b.poll() is not None, what="B to finish everything")
        assert b.poll() is None, workers.stderr(1)
        done = {i for ev, i, _rc, _pid in workers.events() if ev == "done"}
        assert done == set(range(60))
        by_b = {i for ev, i, _rc, pid in workers.events() if ev == "done" and pid == b.pid}
        assert started_by_a - done_by_a <= by_b
        s = q.stats()
        assert (s.visible, s.in_flight, s.dead) == (0, 0, 0)


@pytest.mark.parametrize("backend_url", STANDALONE_AND_CLUSTER, indirect=True)
def test_sigterm_finishes_in_flight_releases_the_rest_and_runs_nothing_twice(
    workers: Workers, backend_url: str, prefix: str
) -> None:
    with rqueue.connect(backend_url, prefix=prefix) as c:
        q = c.create_queue("jobs", visibility_timeout=60)
        q.send_batch([{"i": i} for i in range(40)])
        a = workers.start("record", "--concurrency", "4", "--batch-size", "4", RQ_TEST_SLEEP=1.0)
        until(lambda: workers.count("start") >= 4, what="four in flight")
        a.send_signal(signal.SIGTERM)
        assert a.wait(30) == 0, workers.stderr(0)
        ev = workers.events()
        started = [i for e, i, _rc, _p in ev if e == "start"]
        done = [i for e, i, _rc, _p in ev if e == "done"]
        assert sorted(started) == sorted(done)  # everything started was finished
        s = q.stats()
        assert s.in_flight == 0  # nothing left hidden: unstarted ones are visible at once
        assert s.deleted_total == len(done)
        assert s.visible == 40 - len(done)
        workers.start("record", "--concurrency", "16")
        until(lambda: q.stats().deleted_total == 40, what="the rest")
        counts = Counter(i for e, i, _rc, _p in workers.events() if e == "start")
        assert counts == Counter(range(40))  # each processed exactly once


class Restartable:
    """A backend of its own whose server processes a test may kill and start again (AOF on)."""

    def __init__(self, kind: str, prefix: str, tmp: Path, request: pytest.FixtureRequest) -> None:
        self.kind, self.prefix = kind, prefix
        if kind == "cluster":
            self.cluster: Cluster = request.getfixturevalue("restartable_cluster")
            self.url = self.cluster.url
        elif kind == "sentinel":
            self.sentinel = Sentinel(persistent=True).start()
            self.url = self.sentinel.url
        else:
            self.server = FixtureServer(persistent=True, data_dir=tmp / "data").start()
            self.url = self.server.url

    def serving(self, key: str) -> FixtureServer:
        """The process holding ``key`` (on a cluster: the master owning its slot)."""
        if self.kind == "cluster":
            return self.cluster.node_for(key)
        return self.sentinel.master if self.kind == "sentinel" else self.server

    def back(self) -> None:
        """Wait until the backend serves again after a restart."""
        if self.kind == "cluster":
            self.cluster.wait_ok()

    def close(self) -> None:
        if self.kind == "cluster":  # shared by the session: left running, keys removed
            r = raw_client(self.url)
            for key in list(r.scan_iter(match=prefix_pattern(self.prefix), count=1000)):
                r.unlink(key)
            r.close()
        elif self.kind == "sentinel":
            self.sentinel.close()
        else:
            self.server.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_server_killed_and_restarted_under_a_running_consumer(
    kind: str, prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Kill the server holding the queue (on a cluster: its master) mid-work and start it again
    on the same port: the same worker process carries on, and nothing is lost."""
    backend = Restartable(kind, prefix, tmp_path, request)
    workers = Workers(backend.url, prefix, tmp_path)
    try:
        with rqueue.connect(backend.url, prefix=prefix) as c:
            q = c.create_queue("jobs", visibility_timeout=5)
            q.send_batch([{"i": i} for i in range(400)])
            w = workers.start("record", "--concurrency", "4", "--batch-size", "4", RQ_TEST_SLEEP=0.01)
            until(lambda: workers.count("done") >= 50, what="work under way")
            server = backend.serving(q._keys.meta)
            server.kill()
            until(lambda: "lost the server" in workers.stderr(0), what="the worker to notice")
            server.start()
            backend.back()
            until(
                lambda: {i for e, i, *_ in workers.events() if e == "done"} == set(range(400)),
                timeout=90,
                what="every message processed after the restart",
            )
            until(lambda: q.stats().visible + q.stats().in_flight == 0, what="the queue to empty")
            assert w.poll() is None, workers.stderr(0)  # the same process carried on by itself
            err = workers.stderr(0)
            assert err.count("lost the server") == 1, err  # logged once per outage
            assert "server reachable again" in err
    finally:
        workers.close()
        backend.close()


@pytest.mark.parametrize("backend_url", STANDALONE_AND_CLUSTER, indirect=True)
@pytest.mark.parametrize("handler", ["record", "record_async"])
def test_four_workers_random_failures_follow_the_retry_policy(
    workers: Workers, backend_url: str, prefix: str, handler: str
) -> None:
    n, mrc, rate = 10_000, 3, 0.3
    with rqueue.connect(backend_url, prefix=prefix) as c:
        q = c.create_queue("jobs", visibility_timeout=60, max_receive_count=mrc)
        for i in range(0, n, 1000):
            q.send_batch([{"i": j} for j in range(i, i + 1000)])
        env = {"RQ_TEST_FAIL_RATE": rate}
        procs = [
            workers.start(handler, "--concurrency", "16", "--batch-size", "32", "--retry-base", "0.01", **env)
            for _ in range(4)
        ]
        until(lambda: (lambda s: s.deleted_total + s.dead == n)(q.stats()), timeout=100, what="every outcome")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for k, p in enumerate(procs):
            assert p.wait(30) == 0, workers.stderr(k)
        attempts: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for ev, i, rc, _pid in workers.events():
            if ev != "start":
                attempts[i].append((ev, rc))
        expected_dead = set()
        for i in range(n):
            want = []
            for rc in range(1, mrc + 1):
                if fails(i, rc, rate):
                    want.append(("fail", rc))
                else:
                    want.append(("done", rc))
                    break
            else:
                expected_dead.add(i)
            assert sorted(attempts[i], key=lambda a: a[1]) == want, i
        s = q.stats()
        assert s.dead == len(expected_dead) and s.deleted_total == n - len(expected_dead)
        assert (s.visible, s.in_flight, s.delayed) == (0, 0, 0)
        dead = set()
        dlq = q.dead_letter_queue
        while batch := dlq.receive(1000):
            dead |= {m.body["i"] for m in batch}
            assert all(m.dead_letter and "RuntimeError: planned failure" in m.dead_letter.detail for m in batch)
        assert dead == expected_dead


@pytest.mark.parametrize(
    "backend_url",
    [pytest.param("cluster", marks=pytest.mark.cluster), pytest.param("sentinel", marks=pytest.mark.sentinel)],
    indirect=True,
)
def test_the_rqueue_worker_command_serves_a_cluster_or_sentinel_url(
    workers: Workers, backend_url: str, prefix: str
) -> None:
    with rqueue.connect(backend_url, prefix=prefix) as c:
        q = c.create_queue("jobs", visibility_timeout=30)
        q.send_batch([{"i": i} for i in range(30)])
        w = workers.start("record", "--concurrency", "4")
        until(lambda: q.stats().deleted_total == 30 or w.poll() is not None, what="every message")
        w.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0, workers.stderr(0)
        assert sorted(i for e, i, *_ in workers.events() if e == "done") == list(range(30))


def test_bad_import_path_and_unknown_queue_exit_2_with_one_line(server_url: str, prefix: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rqueue", "worker", *args, "--url", server_url, "--prefix", prefix],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = run("tests.no_such_module:handler", "--queue", "jobs")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "cannot import module 'tests.no_such_module'" in r.stderr
    r = run("tests.consumer_app:nope", "--queue", "jobs")
    assert r.returncode == 2 and "has no attribute 'nope'" in r.stderr
    r = run("tests.consumer_app", "--queue", "jobs")
    assert r.returncode == 2 and "pkg.module:function" in r.stderr
    r = run("tests.consumer_app:record", "--queue", "missing")
    assert r.returncode == 2 and "queue 'missing' does not exist" in r.stderr
