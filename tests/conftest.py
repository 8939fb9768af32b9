"""Fixtures: real servers, and one client fixture over sync/asyncio x backends."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

import rqueue
import rqueue.asyncio as rqa
from rqueue._protocol.keys import QueueKeys, prefix_pattern

from .bridge import AsyncBridge, LoopThread
from .servers import Cluster, Sentinel, standalone


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    with standalone() as url:
        yield url


@pytest.fixture(scope="session")
def cluster_url() -> Iterator[str]:
    cluster = Cluster().start()
    try:
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def restartable_cluster() -> Iterator[Cluster]:
    """A cluster of its own, AOF on, whose nodes a test may kill and start again
    (it must leave every node running)."""
    cluster = Cluster(persistent=True).start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def sentinel_url() -> Iterator[str]:
    sentinel = Sentinel().start()
    try:
        yield sentinel.url
    finally:
        sentinel.close()


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


BACKENDS = [
    pytest.param("standalone", id="standalone"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
    pytest.param("sentinel", id="sentinel", marks=pytest.mark.sentinel),
]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> str:
    """The URL of the backend a test runs on (parametrise indirectly to pick some)."""
    return str(request.getfixturevalue(f"{request.param}_url" if request.param != "standalone" else "server_url"))


def raw_client(url: str) -> Any:
    """A plain redis-py client for looking at what is stored."""
    if url.startswith("redis+cluster://"):
        hosts = url.removeprefix("redis+cluster://").split(",")
        return RedisCluster(startup_nodes=[ClusterNode(h.split(":")[0], int(h.split(":")[1])) for h in hosts])
    if url.startswith("redis+sentinel://"):
        from redis.sentinel import Sentinel as RSentinel

        hostport, service = url.removeprefix("redis+sentinel://").split("/")[:2]
        host, port = hostport.split(":")
        return RSentinel([(host, int(port))]).master_for(service)
    return redis.Redis.from_url(url)


def names_on_every_node(url: str, count: int = 3) -> list[str]:
    """Queue names whose hash slots belong to ``count`` different cluster masters
    (so one pipeline of calls spans every node); on other backends any names."""
    if not url.startswith("redis+cluster://"):
        return [f"n{i}" for i in range(count)]
    r = raw_client(url)
    names: dict[str, str] = {}
    for i in range(1000):
        names.setdefault(r.get_node_from_key(QueueKeys.for_queue("t", f"n{i}").meta).name, f"n{i}")
    r.close()
    assert len(names) >= count, names
    return list(names.values())[:count]


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


def drop_keys(r: Any, prefix: str) -> None:
    """Remove every key under ``prefix`` (a test's own) through the raw client ``r``."""
    for key in list(r.scan_iter(match=prefix_pattern(prefix), count=1000)):
        r.unlink(key)


@pytest.fixture
def raw(backend_url: str, prefix: str) -> Iterator[Any]:
    r = raw_client(backend_url)
    yield r
    drop_keys(r, prefix)
    r.close()


Connect = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, backend_url: str, prefix: str, raw: Any) -> Iterator[Connect]:
    """connect(**options) -> a sync Client, or an AsyncClient behind AsyncBridge."""
    opened: list[Any] = []

    def make(url: str | None = None, **options: Any) -> Any:
        options.setdefault("prefix", prefix)
        if request.param == "sync":
            c: Any = rqueue.connect(url or backend_url, **options)
        else:
            lt: LoopThread = request.getfixturevalue("loop_thread")
            c = AsyncBridge(lt.run(rqa.connect(url or backend_url, **options)), lt)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def client(connect: Connect) -> Any:
    return connect()


@pytest.fixture
def q(client: Any) -> Any:
    return client.create_queue("orders", visibility_timeout=30)


@pytest.fixture
def lib(server_url: str, prefix: str) -> Iterator[rqueue.Client]:
    """A sync client on the standalone server; the test's keys are removed afterwards."""
    c = rqueue.connect(server_url, prefix=prefix)
    yield c
    c.close()
    r = redis.Redis.from_url(server_url)
    drop_keys(r, prefix)
    r.close()


def stored_keys(raw: Any, prefix: str, match: str | None = None) -> list[str]:
    """Every key under the test's prefix, or every one ``match`` (a pattern from rqueue._protocol.keys) matches."""
    return sorted(k.decode() for k in raw.scan_iter(match=match or prefix_pattern(prefix), count=1000))


@pytest.fixture
def r(server_url: str) -> Iterator[Any]:
    """A raw client on the standalone server that ``lib`` uses."""
    c = redis.Redis.from_url(server_url)
    yield c
    c.close()


def keys_of(q: Any) -> QueueKeys:
    """The keys of a queue handle (sync or asyncio), to look at what it stores."""
    return q._keys  # type: ignore[no-any-return]


def server_ms(r: Any) -> int:
    """The server's clock in ms, as the scripts read it."""
    t = r.time()
    return int(t[0]) * 1000 + int(t[1]) // 1000


# ---------------------------------------------------------------- consumers


def as_async(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The same handler as a coroutine function (same annotations), run on the loop."""

    @functools.wraps(fn)
    async def wrapper(arg: Any) -> Any:
        return fn(arg)

    return wrapper


class Harness:
    """Start a sync or asyncio consumer in the background; stop it; inspect with a sync client."""

    def __init__(self, mode: str, url: str, prefix: str, loop: LoopThread | None) -> None:
        self.mode, self.url, self.prefix, self.loop = mode, url, prefix, loop
        self.client = rqueue.connect(url, prefix=prefix)
        self._stops: list[Callable[[], None]] = []

    def consume(self, names: str | list[str], handler: Any, *, blocking: bool = False, **opts: Any) -> Any:
        names = [names] if isinstance(names, str) else names
        if self.mode == "sync":
            c = rqueue.Consumer([self.client.queue(n) for n in names], handler, **opts)
            c.start()
            self._stops.append(c.stop)
            return c
        assert self.loop is not None
        loop = self.loop
        if isinstance(handler, rqueue.Router):
            ahandler: Any = rqueue.Router(
                {k: as_async(h.fn) for k, h in handler._routes.items()}, attribute=handler.attribute
            )
        elif blocking:

            @functools.wraps(handler)
            async def ahandler(arg: Any) -> Any:
                import asyncio

                return await asyncio.to_thread(handler, arg)
        else:
            ahandler = as_async(handler)

        async def make() -> Any:
            ac = await rqa.connect(self.url, prefix=self.prefix)
            c = rqa.Consumer([ac.queue(n) for n in names], ahandler, **opts)
            await c.start()
            return ac, c

        ac, c = loop.run(make())

        def stop() -> None:
            async def go() -> None:
                await c.stop()
                await ac.aclose()

            loop.run(go())

        self._stops.append(stop)
        return c

    def stop_all(self) -> None:
        while self._stops:
            self._stops.pop()()

    def close(self) -> None:
        self.stop_all()
        self.client.close()


@pytest.fixture(params=["sync", "async"])
def h(request: pytest.FixtureRequest, backend_url: str, prefix: str) -> Iterator[Harness]:
    """A harness on every backend (standalone, Cluster, Sentinel) x sync/asyncio."""
    loop = request.getfixturevalue("loop_thread") if request.param == "async" else None
    harness = Harness(request.param, backend_url, prefix, loop)
    yield harness
    harness.close()
    r = raw_client(backend_url)
    drop_keys(r, prefix)
    r.close()
