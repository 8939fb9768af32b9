"""SPEC §7: URL schemes, the backend registry, embedded servers, masking."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import rqueue
import rqueue.asyncio as rqa
from rqueue._transport.backends import Backend, _plain
from rqueue._transport.embedded import ServerProcess, free_port


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host/0", "redis://user:***@host/0"),
        ("rediss://u:p%40ss@h:1", "rediss://u:***@h:1"),
        (
            "redis+sentinel://:pw@a:1,b:2/mymaster?sentinel_password=spw",
            "redis+sentinel://:***@a:1,b:2/mymaster?sentinel_password=***",
        ),
        ("redis://host:6379/0?password=qp", "redis://host:6379/0?password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///tmp/r.sock", "unix:///tmp/r.sock"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert rqueue.mask_url(url) == masked


def test_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(rqueue.InvalidParameter, match=r"unknown scheme.*redis\+cluster://.*redis://"):
        rqueue.connect("memcached://:pw@x/0")


def test_unreachable_server_masks_password() -> None:
    port = free_port()
    with pytest.raises(rqueue.ConnectionError) as info:
        rqueue.connect(f"redis://:hunter2@127.0.0.1:{port}/0")
    assert "hunter2" not in str(info.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in str(info.value)


def test_unreachable_cluster_raises_connection_error() -> None:
    """A cluster client connects at once: its failure too is rqueue's ConnectionError, masked."""
    url = f"redis+cluster://:hunter2@127.0.0.1:{free_port()}"
    with pytest.raises(rqueue.ConnectionError) as info:
        rqueue.connect(url)
    assert "hunter2" not in str(info.value) and ":***@127.0.0.1" in str(info.value)

    async def go() -> None:
        await rqa.connect(url)

    with pytest.raises(rqueue.ConnectionError) as ainfo:
        asyncio.run(go())
    assert "hunter2" not in str(ainfo.value) and ":***@127.0.0.1" in str(ainfo.value)


def test_password_server_and_repr(tmp_path: Path) -> None:
    with ServerProcess(extra=["--requirepass", "hunter2"]) as server:
        url = f"redis://:hunter2@127.0.0.1:{server.port}/0"
        with rqueue.connect(url, prefix="pw") as c:
            q = c.create_queue("orders")
            q.send("x")
            assert q.receive()[0].body == "x"
            assert "hunter2" not in repr(c) and "***" in repr(c)
        with pytest.raises(rqueue.ConnectionError) as info:
            rqueue.connect(f"redis://:wrong-pw@127.0.0.1:{server.port}/0").queue("orders").stats()
        assert "wrong-pw" not in str(info.value)


def test_rqueue_url_environment(monkeypatch: pytest.MonkeyPatch, server_url: str) -> None:
    monkeypatch.setenv("RQUEUE_URL", server_url)
    with rqueue.connect(prefix="envtest") as c:
        assert c.url == server_url
        c.create_queue("x")
        c.delete_queue("x")


def test_default_url_is_redis_py_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RQUEUE_URL", raising=False)
    from rqueue._transport.backends import resolve_url

    assert resolve_url(None) == "redis://localhost:6379/0"


def test_embedded_starts_a_server_and_stops_it_on_close() -> None:
    c = rqueue.connect("embedded://")
    pid = int(c.redis.info("server")["process_id"])
    q = c.create_queue("demo")
    q.send("hello")
    assert q.receive()[0].body == "hello"
    c.close()
    with pytest.raises(ProcessLookupError):
        for _ in range(1000):  # the server has exited once the close returned
            os.kill(pid, 0)
            raise AssertionError(f"embedded server {pid} still running after close")


def test_embedded_dir_keeps_data(tmp_path: Path) -> None:
    url = f"embedded://{tmp_path}/data"
    with rqueue.connect(url) as c:
        c.create_queue("kept").send_batch(["a", "b"])
    with rqueue.connect(url) as c:
        assert c.list_queues() == ["kept"]
        assert [m.body for m in c.queue("kept").receive(10)] == ["a", "b"]
    assert any(p.name.startswith("appendonly") for p in (tmp_path / "data").iterdir())


async def test_embedded_asyncio() -> None:
    async with await rqa.connect("embedded://") as c:
        q = await c.create_queue("demo")
        await q.send({"k": 1})
        assert (await q.receive(wait_time=1))[0].body == {"k": 1}


def test_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    with (
        ServerProcess(extra=["--unixsocket", str(sock), "--unixsocketperm", "700"]),
        rqueue.connect(f"unix://{sock}", prefix="ux") as c,
    ):
        q = c.create_queue("orders")
        q.send("via unix")
        assert q.receive(wait_time=1)[0].body == "via unix"


@pytest.fixture
def tls_proxy(server_url: str, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A TLS terminator in front of the plain test server (the bundled server has no TLS)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    target = redis.Redis.from_url(server_url).connection_pool.connection_kwargs
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port = free_port()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection(target["host"], target["port"])
        await asyncio.gather(pipe(cr, sw), pipe(sr, cw))

    async def serve() -> asyncio.Server:
        server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
        ready.set()
        return server

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    srv = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    assert ready.wait(10)
    yield port, str(cert)

    async def shutdown() -> None:
        srv.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_rediss_tls(tls_proxy: tuple[int, str]) -> None:
    port, cert = tls_proxy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the proxy's half-closed sockets
        with rqueue.connect(f"rediss://127.0.0.1:{port}/0", prefix="tls", ssl_ca_certs=cert) as c:
            q = c.create_queue("secure")
            q.send("over tls")
            assert q.receive()[0].body == "over tls"
            c.delete_queue("secure")


def test_warns_once_when_eviction_can_lose_messages() -> None:
    with ServerProcess(extra=["--maxmemory-policy", "allkeys-lru"]) as server:
        with pytest.warns(rqueue.RQueueWarning, match="maxmemory-policy is 'allkeys-lru'"):
            rqueue.connect(server.url).close()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rqueue.connect(server.url).close()  # once per URL


def test_registered_backend(server_url: str) -> None:
    calls: list[str] = []

    def factory(url: str, *, is_async: bool, **options: Any) -> Backend:
        calls.append(url)
        return _plain(server_url, is_async=is_async, **options)

    rqueue.register_backend("myredis", factory)
    with rqueue.connect("myredis://anything", prefix="plug") as c:
        c.create_queue("p").send("x")
        assert c.queue("p").receive()[0].body == "x"
        c.delete_queue("p")
    assert calls == ["myredis://anything"]


def test_entry_point_backend(server_url: str, tmp_path: Path) -> None:
    """A plugin found through the ``rqueue.backends`` entry-point group, in a fresh interpreter."""
    (tmp_path / "rq_plugin.py").write_text(
        textwrap.dedent(f"""
        from rqueue._transport.backends import _plain

        def factory(url, *, is_async, **options):
            return _plain({server_url!r}, is_async=is_async, **options)
    """)
    )
    dist = tmp_path / "rq_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rq-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rqueue.backends]\nplugged = rq_plugin:factory\n")
    code = (
        "import rqueue\n"
        "c = rqueue.connect('plugged://x', prefix='ep')\n"
        "q = c.create_queue('e'); q.send('via plugin'); print(q.receive()[0].body); c.delete_queue('e'); c.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "via plugin"


def test_sentinel_url_needs_service() -> None:
    with pytest.raises(rqueue.InvalidParameter, match="must name the master"):
        rqueue.connect("redis+sentinel://127.0.0.1:1")
