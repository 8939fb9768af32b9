"""Passwords never show: ``mask_url`` as a property, and the reprs, errors and CLI lines built on it."""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rqueue
import rqueue.asyncio as rqa
from rqueue._transport.embedded import free_port

from .cli_helpers import assert_user_error, run_cli

SCHEMES = ["redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"]
#: What redis-py takes raw in a password: anything but the characters that end the authority.
raw_password = st.text(st.characters(blacklist_characters="/?#", blacklist_categories=["Cs", "Cc"]), min_size=1)
#: Anything at all, percent-encoded as a careful user writes it.
any_password = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1).map(lambda p: quote(p, safe=""))
#: A raw '/', '?' or '#' in the password: redis-py misreads such a URL, but it must not leak either.
sloppy_password = st.text(st.characters(blacklist_characters="&=", blacklist_categories=["Cs"]), min_size=1)
user = st.text("abcdefgh_-.0123456789", max_size=8)
host = st.tuples(st.sampled_from(["localhost", "10.0.0.1", "redis.example.com", "[::1]"]), st.integers(1, 65535))
hosts = st.lists(host, min_size=1, max_size=3).map(lambda hs: ",".join(f"{h}:{p}" for h, p in hs))
path = st.sampled_from(["", "/", "/0", "/15", "/mymaster", "/mymaster/2"])
query_password = st.text(st.characters(blacklist_characters="&#", blacklist_categories=["Cs"]), min_size=1)


def _expected(scheme: str, u: str, hostlist: str, p: str, query: list[tuple[str, str]]) -> tuple[str, str]:
    """The URL and what its masked form must be, exactly."""
    q = "&".join(f"{k}={v}" for k, v in query)
    mq = "&".join(f"{k}={'***' if k.endswith('password') else v}" for k, v in query)
    url = f"{scheme}://{u}:PW@{hostlist}{p}" + (f"?{q}" if q else "")
    masked = f"{scheme}://{u}:***@{hostlist}{p}" + (f"?{mq}" if mq else "")
    return url, masked


query_params = st.lists(
    st.tuples(st.sampled_from(["password", "sentinel_password", "socket_timeout", "client_name"]), query_password),
    max_size=3,
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SCHEMES), user, hosts, path, raw_password, query_params)
def test_mask_url_hides_a_raw_password_entirely(
    scheme: str, u: str, hostlist: str, p: str, pw: str, query: list[tuple[str, str]]
) -> None:
    template, masked = _expected(scheme, u, hostlist, p, query)
    url = template.replace(":PW@", f":{pw}@", 1)
    assert rqueue.mask_url(url) == masked
    with contextlib.suppress(ValueError):  # urlsplit refuses some (an unmatched '[', say), as redis-py does
        assert urlsplit(url).password == pw  # the password is what redis-py reads


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SCHEMES), user, hosts, path, any_password)
def test_mask_url_hides_an_encoded_password(scheme: str, u: str, hostlist: str, p: str, pw: str) -> None:
    template, masked = _expected(scheme, u, hostlist, p, [])
    assert rqueue.mask_url(template.replace(":PW@", f":{pw}@", 1)) == masked


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SCHEMES), user, hosts, path, sloppy_password)
def test_mask_url_hides_a_password_redis_py_would_misread(scheme: str, u: str, hostlist: str, p: str, pw: str) -> None:
    template, masked = _expected(scheme, u, hostlist, p, [])
    assert rqueue.mask_url(template.replace(":PW@", f":{pw}@", 1)) == masked


@given(st.sampled_from(["password", "sentinel_password", "PASSWORD"]), query_password)
def test_mask_url_hides_query_passwords(name: str, pw: str) -> None:
    url = f"redis://host:6379/0?db=1&{name}={pw}&socket_timeout=5"
    assert rqueue.mask_url(url) == f"redis://host:6379/0?db=1&{name}=***&socket_timeout=5"


@pytest.mark.parametrize(
    "url",
    [
        "redis://host:6379/0",
        "redis://user@host:6379/0",
        "redis://host/0?client_name=me@example",
        "unix:///run/redis.sock?db=2",
        "embedded://",
        "embedded:///var/lib/rq",
        "not a url",
    ],
)
def test_mask_url_leaves_urls_without_a_password_alone(url: str) -> None:
    assert rqueue.mask_url(url) == url


@given(st.text(st.characters(blacklist_characters="*&=", blacklist_categories=["Cs"]), min_size=1))
def test_redact_removes_every_piece_a_parser_may_cut_out(pw: str) -> None:
    from rqueue._transport.backends import redact

    url = f"redis://:{pw}@host:6379/0"
    pieces = [p for p in re.split(r"[/?#@:]", pw) if len(p) >= 2]
    text = redact(f"{url} | {pw} | " + " | ".join(pieces), url)
    assert all(p not in text for p in pieces), text


# -- where masked URLs show up


AT_PASSWORDS = ["my@secret", "pzz:w@rdq", "zqa@xjb@kwc"]


@pytest.mark.parametrize("pw", AT_PASSWORDS)
def test_unreachable_server_error_hides_a_password_with_at(pw: str) -> None:
    port = free_port()
    with pytest.raises(rqueue.ConnectionError) as info:
        rqueue.connect(f"redis://:{pw}@127.0.0.1:{port}/0")
    assert f"redis://:***@127.0.0.1:{port}/0" in str(info.value)
    for piece in pw.split("@"):
        assert piece not in str(info.value)


def test_cluster_url_hides_a_password_with_at() -> None:
    a, b = free_port(), free_port()
    with pytest.raises(rqueue.ConnectionError) as info:
        rqueue.connect(f"redis+cluster://:my@zkq9@127.0.0.1:{a},127.0.0.1:{b}")
    assert "zkq9" not in str(info.value)
    assert f"redis+cluster://:***@127.0.0.1:{a},127.0.0.1:{b}" in str(info.value)


def test_sentinel_url_hides_passwords_with_at(sentinel_url: str) -> None:
    hostport = sentinel_url.removeprefix("redis+sentinel://").split("/")[0]
    hosts = f"{hostport},{hostport}"
    with pytest.raises(rqueue.ConnectionError) as info:
        rqueue.connect(f"redis+sentinel://:my@zkq9@{hosts}/nosuch/0?sentinel_password=s@x7wv")
    assert "zkq9" not in str(info.value) and "x7wv" not in str(info.value)
    assert f"redis+sentinel://:***@{hosts}/nosuch/0?sentinel_password=***" in str(info.value)


async def test_asyncio_repr_and_errors_hide_a_password_with_at(server_url: str) -> None:
    port = free_port()
    with pytest.raises(rqueue.ConnectionError) as info:
        await rqa.connect(f"redis://:my@secret@127.0.0.1:{port}/0")
    assert "secret" not in str(info.value) and ":***@127.0.0.1" in str(info.value)


def test_client_repr_and_logs_hide_a_password_with_at(caplog: pytest.LogCaptureFixture) -> None:
    from rqueue._transport.embedded import ServerProcess

    with ServerProcess(extra=["--requirepass", "my@secret"]) as server:
        with caplog.at_level(logging.DEBUG), rqueue.connect(f"redis://:my@secret@127.0.0.1:{server.port}/0") as c:
            q = c.create_queue("orders")
            tracker = q.send_tracked("x")
            assert tracker.message_id
            assert "secret" not in repr(c) and "secret" not in c.url
        assert "secret" not in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "redis://:zq/xj@127.0.0.1:1/0",  # a raw '/' in the password: redis-py reads port 'zq'
        "redis://:zq?xj@127.0.0.1:1/0",
        "redis+cluster://:zq/xj@127.0.0.1:1",
        "redis+sentinel://:zqxj@127.0.0.1:1/mymaster/x",
    ],
)
def test_malformed_url_is_invalid_parameter_without_the_password(url: str) -> None:
    with pytest.raises(rqueue.InvalidParameter, match="^url ") as info:
        rqueue.connect(url)
    assert "zq" not in str(info.value) and "xj" not in str(info.value)


def test_cli_hides_a_password_with_at(prefix: str) -> None:
    port = free_port()
    r = run_cli(f"redis://:my@secret@127.0.0.1:{port}/0", prefix, "list")
    assert_user_error(r, f"redis://:***@127.0.0.1:{port}/0")
    assert "secret" not in r.err


def test_a_plugin_backend_that_leaves_the_password_in_its_url_is_masked(server_url: str) -> None:
    from rqueue._transport.backends import Backend, _plain

    def leaky(url: str, *, is_async: bool, **options: Any) -> Backend:
        backend = _plain(server_url, is_async=is_async, **options)
        backend.url = url  # the password stays in it
        return backend

    rqueue.register_backend("leaky", leaky)
    with rqueue.connect("leaky://:my@zkq9@somewhere/0", prefix="leak") as c:
        assert "zkq9" not in repr(c) and c.url == "leaky://:***@somewhere/0"


def test_a_one_letter_piece_quoted_by_a_parser_is_redacted() -> None:
    with pytest.raises(rqueue.InvalidParameter) as info:
        rqueue.connect("redis://:q/zkq9@127.0.0.1:1/0")  # redis-py reads port 'q'
    assert "'q'" not in str(info.value) and "zkq9" not in str(info.value)
