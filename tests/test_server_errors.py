"""Every failure of a real server reaches users as an ``rqueue.RQueueError`` that says what to do,
and the CLI prints it as one line with exit code 2 (issue 17, defect 6)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import rqueue
import rqueue.asyncio as rqa
from rqueue._protocol.keys import prefix_pattern
from rqueue._transport.embedded import ServerProcess, free_port

from .cli_helpers import assert_user_error, run_cli
from .test_backends import tls_proxy  # noqa: F401 - a fixture

PASSWORD = "hunter2"


@pytest.fixture(scope="module")
def locked() -> Iterator[ServerProcess]:
    """A server with a password and two ACL users: one without scripting, one without our keys."""
    with ServerProcess(extra=["--requirepass", PASSWORD]) as server:
        r = redis.Redis(port=server.port, password=PASSWORD)
        r.execute_command("ACL", "SETUSER", "reader", "on", ">rpw", "~*", "&*", "+@read", "+config|get", "+ping")
        r.execute_command("ACL", "SETUSER", "elsewhere", "on", ">epw", "~other:*", "&*", "+@all", "-config")
        r.close()
        yield server


def _no_traceback_in(err: BaseException) -> None:
    assert isinstance(err, rqueue.RQueueError)
    assert "\n" not in str(err)


# -- connecting


def test_unreachable_cluster_is_connection_error() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    with pytest.raises(rqueue.ConnectionError, match=r"^cannot reach the cluster at redis\+cluster://.*node addresses"):
        rqueue.connect(url)


async def test_unreachable_cluster_is_connection_error_asyncio() -> None:
    with pytest.raises(rqueue.ConnectionError, match=r"^cannot reach the cluster at"):
        await rqa.connect(f"redis+cluster://127.0.0.1:{free_port()}")


def test_missing_database_is_refused_by_connect(server_url: str) -> None:
    url = server_url.rsplit("/", 1)[0] + "/99"
    with pytest.raises(rqueue.InvalidParameter, match=r"/99' names a database the server does not have"):
        rqueue.connect(url)


async def test_missing_database_is_refused_by_connect_asyncio(server_url: str) -> None:
    with pytest.raises(rqueue.InvalidParameter, match="names a database the server does not have"):
        await rqa.connect(server_url.rsplit("/", 1)[0] + "/99")


def test_cluster_has_only_database_zero() -> None:
    with pytest.raises(rqueue.InvalidParameter, match="Redis Cluster has only database 0"):
        rqueue.connect("redis+cluster://127.0.0.1:1/3")


def test_unknown_option_is_invalid_parameter(server_url: str) -> None:
    with pytest.raises(rqueue.InvalidParameter, match="options of connect.*'bogus'"):
        rqueue.connect(server_url, bogus=1)


def test_missing_password(locked: ServerProcess) -> None:
    with pytest.raises(rqueue.AuthenticationError, match="needs a password: put it in the URL") as info:
        rqueue.connect(locked.url)
    assert isinstance(info.value, rqueue.ConnectionError)


@pytest.mark.parametrize("userinfo", [":wrong", "nobody:wrong", "reader:wrong"])
def test_wrong_password_or_user(locked: ServerProcess, userinfo: str) -> None:
    with pytest.raises(rqueue.AuthenticationError, match="refused the user name or password.*check them") as info:
        rqueue.connect(f"redis://{userinfo}@127.0.0.1:{locked.port}/0")
    assert "wrong" not in str(info.value)


async def test_wrong_password_asyncio(locked: ServerProcess) -> None:
    with pytest.raises(rqueue.AuthenticationError):
        await rqa.connect(f"redis://:wrong@127.0.0.1:{locked.port}/0")


def test_sentinel_that_does_not_know_the_service(sentinel_url: str) -> None:
    url = sentinel_url.replace("/mymaster/", "/nosuchservice/")
    with pytest.raises(rqueue.ConnectionError, match="master for the service 'nosuchservice': check the service name"):
        rqueue.connect(url)


def test_cluster_url_to_a_plain_server(server_url: str) -> None:
    host_port = server_url.removeprefix("redis://").split("/")[0]
    with pytest.raises(rqueue.InvalidParameter, match="not a Redis Cluster node: use redis://"):
        rqueue.connect(f"redis+cluster://{host_port}")


def test_sentinel_url_to_a_plain_server(server_url: str) -> None:
    host_port = server_url.removeprefix("redis://").split("/")[0]
    with pytest.raises(rqueue.InvalidParameter, match="not a Sentinel: use redis://"):
        rqueue.connect(f"redis+sentinel://{host_port}/mymaster/0")


def test_plain_url_to_a_cluster_node(cluster_url: str, prefix: str) -> None:
    first = cluster_url.removeprefix("redis+cluster://").split(",")[0]
    with (
        rqueue.connect(f"redis://{first}/0", prefix=prefix) as c,
        pytest.raises(rqueue.InvalidParameter, match=r"points at a Redis Cluster node.*use redis\+cluster://"),
    ):
        for i in range(64):  # some queue's slot is on another node
            c.create_queue(f"q{i}")


# -- TLS


def test_tls_to_a_plain_server(server_url: str) -> None:
    url = server_url.replace("redis://", "rediss://")
    with pytest.raises(rqueue.ConnectionError, match="use redis:// instead of rediss://"):
        rqueue.connect(url, socket_connect_timeout=0.5, socket_timeout=0.5)


def test_tls_certificate_not_trusted(tls_proxy: tuple[int, str]) -> None:  # noqa: F811
    port, _cert = tls_proxy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(rqueue.ConnectionError, match="certificate is not trusted: pass ssl_ca_certs="):
            rqueue.connect(f"rediss://127.0.0.1:{port}/0")


def test_plain_url_to_a_tls_server(tls_proxy: tuple[int, str]) -> None:  # noqa: F811
    port, _cert = tls_proxy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(rqueue.ConnectionError, match="if the server requires TLS, use rediss://"):
            rqueue.connect(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=2, socket_timeout=2)


def test_tls_certificate_file_missing(tls_proxy: tuple[int, str]) -> None:  # noqa: F811
    port, _cert = tls_proxy
    with pytest.raises(rqueue.InvalidParameter, match="option ssl_ca_certs='/nonexistent/ca.pem' .* no existing file"):
        rqueue.connect(f"rediss://127.0.0.1:{port}/0", ssl_ca_certs="/nonexistent/ca.pem")


# -- a call refused


def test_acl_without_scripting_is_permission_denied(locked: ServerProcess) -> None:
    with rqueue.connect(f"redis://reader:rpw@127.0.0.1:{locked.port}/0", prefix="acl") as c:
        with pytest.raises(rqueue.PermissionDenied, match="does not allow this user.*ACL SETUSER") as info:
            c.create_queue("orders")
        _no_traceback_in(info.value)


def test_acl_without_the_keys_is_permission_denied(locked: ServerProcess) -> None:
    # No CONFIG either: connect() cannot check the eviction policy, and says nothing.
    with (
        rqueue.connect(f"redis://elsewhere:epw@127.0.0.1:{locked.port}/0", prefix="acl") as c,
        pytest.raises(rqueue.PermissionDenied, match="queue 'orders'"),
    ):
        c.create_queue("orders")


def test_a_foreign_key_under_the_prefix_is_server_error(server_url: str, prefix: str) -> None:
    from rqueue._protocol.keys import QueueKeys

    with rqueue.connect(server_url, prefix=prefix) as c:
        q = c.create_queue("orders")
        r = redis.Redis.from_url(server_url)
        try:
            meta = QueueKeys.for_queue(prefix, "orders").meta
            r.delete(meta)
            r.set(meta, "written by another program")
            with pytest.raises(rqueue.ServerError, match="queue 'orders'.*WRONGTYPE.*use another prefix"):
                q.send("x")
        finally:
            for key in r.scan_iter(match=prefix_pattern(prefix)):
                r.delete(key)
            r.close()


@pytest.fixture
def replica() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with ServerProcess() as master, ServerProcess(extra=["--replicaof", "127.0.0.1", str(master.port)]) as rep:
        yield master, rep


def test_read_only_replica(replica: tuple[ServerProcess, ServerProcess]) -> None:
    _master, rep = replica
    with (
        rqueue.connect(rep.url, prefix="ro") as c,
        pytest.raises(rqueue.ConnectionError, match="is a read-only replica.*point the URL at the master"),
    ):
        c.create_queue("orders")


PROBE = "one more order"


def _fill(q: Any) -> int:
    """Send until the server is full: batches, then the probe alone until it is refused too
    (a request's own buffer counts as used memory while it runs); returns how many were stored."""
    sent = 0
    for batch in (["x" * 1000] * 100, [PROBE]):
        with pytest.raises(rqueue.ServerFull) as info:
            for _ in range(10_000):
                q.send_batch(batch)
                sent += len(batch)
    assert "maxmemory" in str(info.value) and "nothing was stored" in str(info.value)
    assert isinstance(info.value, rqueue.ServerError)
    return sent


@pytest.fixture
def small() -> Iterator[ServerProcess]:
    with ServerProcess(extra=["--maxmemory", "3mb"]) as server:
        yield server


def test_full_server_refuses_a_send_with_server_full(small: ServerProcess) -> None:
    with rqueue.connect(small.url, prefix="oom") as c:
        q = c.create_queue("orders")
        sent = _fill(q)
        with pytest.raises(rqueue.ServerFull, match="queue 'orders'"):
            q.send(PROBE)
        assert q.stats().sent_total == sent  # nothing half stored


async def test_full_server_refuses_a_send_with_server_full_asyncio(small: ServerProcess) -> None:
    async with await rqa.connect(small.url, prefix="oom") as c:
        q = await c.create_queue("orders")
        with pytest.raises(rqueue.ServerFull):
            for _ in range(10_000):
                await q.send_batch(["x" * 1000] * 100)


# -- the CLI: one line, exit 2


def test_cli_full_server_is_one_line(small: ServerProcess) -> None:
    with rqueue.connect(small.url, prefix="oom") as c:
        _fill(c.create_queue("orders"))
        # Closing this client frees its buffers, which may make room for one more small
        # message: keep the server full whatever the margin.
        used = int(c.redis.info("memory")["used_memory"])
        c.redis.config_set("maxmemory", used - 256 * 1024)
    assert_user_error(run_cli(small.url, "oom", "send", "orders", PROBE), "is full", "maxmemory")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("redis+cluster://127.0.0.1:{port}", "cannot reach the cluster"),
        ("embedded:///dev/null/data", "cannot make the folder"),
        ("redis://127.0.0.1:{port}/0?socket_timeout=abc", "cannot be used"),
    ],
)
def test_cli_connect_failures_are_one_line(url: str, needle: str) -> None:
    assert_user_error(run_cli(url.format(port=free_port()), "cli", "list"), needle)


def test_cli_missing_database_and_password(server_url: str, locked: ServerProcess) -> None:
    assert_user_error(run_cli(server_url.rsplit("/", 1)[0] + "/99", "cli", "list"), "names a database")
    assert_user_error(run_cli(locked.url, "cli", "list"), "needs a password")
    assert_user_error(run_cli(f"redis://reader:rpw@127.0.0.1:{locked.port}/0", "cli", "create", "q"), "ACL")


def test_every_public_error_derives_from_rqueue_error() -> None:
    errors = [
        v
        for v in vars(rqueue).values()
        if isinstance(v, type) and issubclass(v, Exception) and not issubclass(v, Warning | rqueue.Reject)
    ]
    assert len(errors) >= 14
    assert all(issubclass(e, rqueue.RQueueError) for e in errors)
    assert issubclass(rqueue.AuthenticationError, rqueue.ConnectionError)
    assert issubclass(rqueue.ServerFull, rqueue.ServerError) and issubclass(rqueue.PermissionDenied, rqueue.ServerError)
