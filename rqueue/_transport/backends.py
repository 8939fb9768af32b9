"""URL schemes to redis-py clients, through a registry plugins can extend.

A backend factory takes the URL, whether an asyncio client is wanted and
extra redis-py options, and returns a ``Backend``. Built in: ``redis://``,
``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://`` and
``embedded://``. Others come from the entry-point group ``rqueue.backends``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from rqueue._protocol.errors import InvalidParameter

DEFAULT_URL = "redis://localhost:6379/0"


@dataclass
class Backend:
    """A connected redis-py client plus what to do on close.

    ``client`` is a redis-py ``Redis`` or ``RedisCluster`` (from
    ``redis.asyncio`` for an asyncio client); ``url`` has its password masked.
    """

    client: Any
    url: str
    #: Called on close after the client; an asyncio backend's may return awaitables.
    on_close: list[Callable[[], Any]] = field(default_factory=list)


BackendFactory = Callable[..., Backend]
_registry: dict[str, BackendFactory] = {}


def register_backend(scheme: str, factory: BackendFactory) -> None:
    """Make ``rqueue.connect`` handle URLs of ``scheme`` with ``factory``."""
    _registry[scheme.lower()] = factory


#: A query parameter that holds a password (redis-py reads both).
_SECRET_PARAM = re.compile(r"[?&](?:sentinel_)?password=([^&#]*)", re.I)
#: The start of a query parameter (``?name=`` or ``&name=``).
_PARAM = re.compile(r"[?&][^=&#?/@]*=")


def secret_spans(url: str) -> list[tuple[int, int]]:
    """Where the passwords of ``url`` are: the userinfo's, and the query's.

    The userinfo is parsed as redis-py does (everything up to the last ``@`` of
    the authority, so a password may hold ``@`` and ``:``), and more widely:
    a raw ``/``, ``?`` or ``#`` in a password (redis-py would misread it) moves
    its ``@`` past the authority, and that ``@`` still ends the user info.
    """
    spans = [m.span(1) for m in _SECRET_PARAM.finditer(url)]
    scheme, sep, rest = url.partition("://")
    if sep:
        start = len(scheme) + len(sep)
        end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
        at = rest.rfind("@", 0, end)
        tail = rest[end:]
        param = _PARAM.search(tail)
        further = tail.rfind("@", 0, param.start() if param else len(tail))
        if further >= 0:
            at = end + further
        colon = rest.find(":", 0, at) if at >= 0 else -1
        if colon >= 0:
            spans.append((start + colon + 1, start + at))
    return sorted((a, b) for a, b in spans if b > a)


def mask_url(url: str) -> str:
    """The URL with every password (user info and query) replaced by ``***``."""
    out, pos = [], 0
    for a, b in secret_spans(url):
        if b <= pos:
            continue
        out += [url[pos : max(a, pos)], "***"]
        pos = b
    return "".join(out) + url[pos:]


def redact(text: str, url: str) -> str:
    """``text`` (an error from parsing ``url``, say) with the URL's passwords, and
    any piece of them a parser may have cut out, replaced by ``***``."""
    secrets = {url[a:b] for a, b in secret_spans(url)}
    pieces = {p for s in secrets for p in re.split(r"[/?#@:&=]", s) if len(p) >= 2}
    for s in sorted(secrets | pieces, key=len, reverse=True):
        text = text.replace(s, "***")
    # A quoted piece, however short ("... as 'a'"), that belongs to a password.
    return re.sub(r"'([^']+)'", lambda m: "'***'" if any(m[1] in s for s in secrets) else m[0], text)


#: redis-py options that name a file (TLS): checked up front, as redis-py's error names no file.
_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")


def check_options(options: dict[str, Any]) -> None:
    """Refuse an option naming a file (or folder) that does not exist."""
    for name in _FILE_OPTIONS:
        value = options.get(name)
        if isinstance(value, str | os.PathLike) and not os.path.exists(value):
            raise InvalidParameter(f"option {name}={os.fspath(value)!r} of connect() names no existing file")


def resolve_url(url: str | None) -> str:
    """The URL given, else ``RQUEUE_URL``, else redis-py's default."""
    return url or os.environ.get("RQUEUE_URL") or DEFAULT_URL


def factory_for(url: str) -> BackendFactory:
    """The registered factory for the URL's scheme (loading plugins once)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in _registry:
        for ep in entry_points(group="rqueue.backends"):
            if ep.name.lower() == scheme:
                register_backend(scheme, ep.load())
    if scheme not in _registry:
        known = ", ".join(sorted(f"{s}://" for s in _registry))
        raise InvalidParameter(f"url {mask_url(url)!r} has an unknown scheme; use one of {known}")
    return _registry[scheme]


def _hosts(url: str, netloc: str, default_port: int) -> tuple[str | None, str | None, list[tuple[str, int]]]:
    """(user, password, [(host, port)...]) of a multi-host authority, read as redis-py reads one."""
    userinfo, _, hostlist = netloc.rpartition("@")
    user, pw = None, None
    if userinfo:
        u, sep, p = userinfo.partition(":")
        user, pw = (unquote(u) or None), (unquote(p) if sep else None)
    hosts = []
    for hp in hostlist.split(","):
        host, sep, port = hp.rpartition(":") if ":" in hp.rpartition("]")[2] else (hp, "", "")
        if sep and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise InvalidParameter(
                f"url {mask_url(url)!r}: every host needs a port from 1 to 65535 (host:port), and a password "
                "its '/', '?' and '#' percent-encoded (%2F, %3F, %23)"
            )
        hosts.append((host.removeprefix("[").removesuffix("]") or "localhost", int(port) if sep else default_port))
    return user, pw, hosts


def _plain(url: str, *, is_async: bool, **options: Any) -> Backend:
    if is_async:
        import redis.asyncio as aredis

        return Backend(aredis.Redis.from_url(url, **options), mask_url(url))
    import redis

    return Backend(redis.Redis.from_url(url, **options), mask_url(url))


def _sentinel(url: str, *, is_async: bool, **options: Any) -> Backend:
    """``redis+sentinel://[user:pass@]host:port[,host:port]/service[/db][?sentinel_password=]``."""
    parts = urlsplit(url)
    user, pw, hosts = _hosts(url, parts.netloc, 26379)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise InvalidParameter(
            f"url {mask_url(url)!r} must name the master: redis+sentinel://host:port/service_name[/db]"
        )
    query = dict(parse_qsl(parts.query))
    if len(path) > 2 or (len(path) == 2 and not (path[1].isascii() and path[1].isdigit())):
        raise InvalidParameter(
            f"url {mask_url(url)!r}: after the service name comes only a database number: "
            "redis+sentinel://host:port/service_name[/db]"
        )
    kwargs: dict[str, Any] = {"db": int(path[1]) if len(path) > 1 else 0, **options}
    if user:
        kwargs["username"] = user
    if pw:
        kwargs["password"] = pw
    sentinel_kwargs: dict[str, Any] = {"password": query["sentinel_password"]} if "sentinel_password" in query else {}
    if parts.scheme.lower().startswith("rediss"):  # TLS to the Sentinels and to the master alike
        kwargs["ssl"] = True
        sentinel_kwargs.update({k: v for k, v in kwargs.items() if k.startswith("ssl")})
    if is_async:
        from redis.asyncio.sentinel import Sentinel as ASentinel

        asentinel = ASentinel(hosts, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        client = asentinel.master_for(path[0], **kwargs)
        closers: list[Callable[[], Any]] = [s.aclose for s in asentinel.sentinels]
    else:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        client = sentinel.master_for(path[0], **kwargs)  # type: ignore[no-untyped-call]
        closers = [s.close for s in sentinel.sentinels]
    return Backend(client, mask_url(url), closers)


def _cluster(url: str, *, is_async: bool, **options: Any) -> Backend:
    """``redis+cluster://[user:pass@]host:port[,host:port]`` (rediss+cluster for TLS)."""
    parts = urlsplit(url)
    user, pw, hosts = _hosts(url, parts.netloc, 6379)
    if parts.path.strip("/") not in ("", "0"):
        raise InvalidParameter(f"url {mask_url(url)!r} names a database; Redis Cluster has only database 0")
    kwargs: dict[str, Any] = dict(options)
    if user:
        kwargs["username"] = user
    if pw:
        kwargs["password"] = pw
    if parts.scheme.lower().startswith("rediss"):
        kwargs["ssl"] = True
    if is_async:
        from redis.asyncio.cluster import ClusterNode as ANode
        from redis.asyncio.cluster import RedisCluster as ACluster

        return Backend(ACluster(startup_nodes=[ANode(h, p) for h, p in hosts], **kwargs), mask_url(url))
    from redis.cluster import ClusterNode, RedisCluster

    nodes = [ClusterNode(h, p) for h, p in hosts]  # type: ignore[no-untyped-call]
    return Backend(RedisCluster(startup_nodes=nodes, **kwargs), mask_url(url))


def _embedded(url: str, *, is_async: bool, **options: Any) -> Backend:
    """``embedded://`` (temporary) or ``embedded:///dir`` (kept with AOF)."""
    from rqueue._transport.embedded import embedded

    parts = urlsplit(url)
    if parts.netloc:
        raise InvalidParameter(
            f"url {mask_url(url)!r}: an embedded server's folder is an absolute path after three slashes "
            "(embedded:///var/lib/rq), or none for a temporary server (embedded://)"
        )
    server = embedded(parts.path)
    try:
        backend = _plain(server.url, is_async=is_async, **options)
    except BaseException:
        server.close()
        raise
    backend.url = f"{mask_url(url)} ({server.url})"
    backend.on_close.append(server.close)
    return backend


for _scheme in ("redis", "rediss", "unix"):
    register_backend(_scheme, _plain)
register_backend("redis+sentinel", _sentinel)
register_backend("rediss+sentinel", _sentinel)
register_backend("redis+cluster", _cluster)
register_backend("rediss+cluster", _cluster)
register_backend("embedded", _embedded)


class RQueueWarning(UserWarning):
    """A server setting that can lose messages."""


_warned: set[str] = set()


def check_policy(policy: str | None, url: str) -> None:
    """Warn once per URL when the server may evict keys (and so lose messages)."""
    if policy and policy != "noeviction" and url not in _warned:
        _warned.add(url)
        warnings.warn(
            RQueueWarning(
                f"{url}: maxmemory-policy is {policy!r}; a full server will evict messages. "
                "Set maxmemory-policy noeviction."
            ),
            stacklevel=3,
        )
