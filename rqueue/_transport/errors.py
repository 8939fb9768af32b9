"""Server errors, mapped: the rqueue error (with what to do about it) that a
redis-py or socket error means, for calls and for ``connect()``. No I/O."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

from redis import exceptions as rx

from rqueue._protocol import errors as _errors
from rqueue._transport.backends import mask_url, redact

#: redis-py errors that mean "the server is unreachable or failing over".
#: ClusterError: the cluster client gave up following redirections (a slot
#: moving between nodes: its multi-key scripts get TRYAGAIN until it has moved).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ClusterError,
    rx.TryAgainError,
    rx.MasterNotFoundError if hasattr(rx, "MasterNotFoundError") else rx.ConnectionError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,
)

#: "Error running script (call to f_...): @user_script:99: @user_script: 99: -OOM command not allowed ..."
_IN_SCRIPT = re.compile(r"@user_script:\s*\d+:\s*-(\S.*)$")
_NEEDS_PASSWORD = ("noauth", "authentication required", "must be called with the client already authenticated")


def _hint(msg: str, url: str, connecting: bool) -> str:
    """What to do about a connection failure; TLS guesses only while connecting."""
    low = msg.lower()
    tls = url.lower().startswith("rediss")
    if "certificate" in low:
        return (
            "; the server's TLS certificate is not trusted: pass ssl_ca_certs='ca.pem' (the CA that signed it) "
            "to connect()"
        )
    if connecting and tls and any(w in low for w in ("ssl", "tls", "timeout", "timed out", "eof")):
        return "; the TLS handshake failed: if the server does not use TLS, use redis:// instead of rediss://"
    if connecting and not tls and ("closed by server" in low or "reset by peer" in low):
        return "; if the server requires TLS, use rediss://"
    return "; check that the server runs and that the URL's host and port are right"


def map_error(e: BaseException, url: str, queue: str, *, connecting: bool = False) -> BaseException:
    """The rqueue error that a redis-py (or socket) error means; ``e`` itself when there is none
    (already an rqueue error, a cancellation, or a bug that must show as it is).

    ``url`` is already masked. Every message says what to do.
    """
    if isinstance(e, _errors.RQueueError) or not isinstance(e, Exception):
        return e
    msg = " ".join(str(e).split()).rstrip(".") or type(e).__name__
    inner = _IN_SCRIPT.search(msg)
    if inner:  # Redis 6.2 wraps the error of a command a script called: classify that error
        msg = inner[1]
    low = msg.lower()
    where = f" (queue {queue!r})" if queue else ""
    seen = _Seen(e, msg, low, url, where, queue, connecting)
    for rule in _RULES:
        mapped = rule(seen)
        if mapped is not None:
            return mapped
    return e


class _Seen(NamedTuple):
    """An error, read: its message (``low``: lowercased), and where it happened."""

    e: Exception
    msg: str
    low: str
    url: str
    where: str
    queue: str
    connecting: bool


def _access(s: _Seen) -> BaseException | None:
    """A password or a permission the server wants."""
    e, msg, low, url, where = s.e, s.msg, s.low, s.url, s.where
    if isinstance(e, rx.AuthenticationError) or any(n in low for n in _NEEDS_PASSWORD):
        if any(n in low for n in _NEEDS_PASSWORD):
            return _errors.AuthenticationError(
                f"the server at {url} needs a password: put it in the URL "
                "(redis://:PASSWORD@host:port/db, or redis://USER:PASSWORD@... for an ACL user)"
            )
        return _errors.AuthenticationError(
            f"the server at {url} refused the user name or password ({msg}): check them in the URL"
        )
    if isinstance(e, rx.NoPermissionError | rx.AuthorizationError) or low.startswith("noperm"):
        return _errors.PermissionDenied(
            f"the server at {url} does not allow this user what rqueue needs{where}: {msg}; grant it "
            "the commands (+@all, or at least scripting, +@read, +@write, +@pubsub, +client|id, +client|unblock) "
            "and the keys and channels of the prefix (~PREFIX:* &PREFIX:*) with ACL SETUSER"
        )
    return None


def _server_state(s: _Seen) -> BaseException | None:
    """The server cannot take the call now: full, a replica, no such database, the pool used up."""
    e, msg, low, url, where = s.e, s.msg, s.low, s.url, s.where
    if isinstance(e, rx.OutOfMemoryError) or low.startswith("oom "):
        return _errors.ServerFull(
            f"the server at {url} is full (used memory over maxmemory) and refuses writes{where}; nothing was "
            "stored: raise the server's maxmemory, or free memory (purge or delete queues, delete held messages)"
        )
    if isinstance(e, rx.ReadOnlyError) or low.startswith("readonly"):
        return _errors.ConnectionError(
            f"the server at {url} is a read-only replica{where}: point the URL at the master, or use "
            "redis+sentinel:// to follow failovers"
        )
    if "db index is out of range" in low or "invalid db index" in low:
        return _errors.InvalidParameter(
            f"url {url!r} names a database the server does not have ({msg}): use one from 0 to its "
            "'databases' setting minus 1 (16 databases by default)"
        )
    if isinstance(e, rx.MaxConnectionsError) or "too many connections" in low:
        return _errors.ConnectionError(
            f"the client for {url} has every connection of its pool in use ({msg}): raise max_connections= "
            "in connect(), or make fewer calls at once"
        )
    if type(e).__name__ == "MasterNotFoundError":  # redis.sentinel's, a redis-py ConnectionError
        service = msg.partition("'")[2].partition("'")[0]
        return _errors.ConnectionError(
            f"no Sentinel of {url} gave a master for the service {service!r}: check the service name and "
            "the Sentinel hosts, and that the master is up"
        )
    return None


def _refused(s: _Seen) -> BaseException | None:
    """The server (or a script's check) refused the command."""
    e, msg, low, url, where, queue = s.e, s.msg, s.low, s.url, s.where, s.queue
    if isinstance(e, rx.ResponseError) and not isinstance(e, rx.ClusterError | rx.TryAgainError | rx.AskError):
        mapped = _errors.from_lua(msg, queue)
        if mapped is not None:
            return mapped
        if low.startswith("misconf"):
            return _errors.ServerError(
                f"the server at {url} refuses writes because it cannot save to disk (MISCONF){where}: "
                "fix its disk or its save settings"
            )
        if low.startswith("busy "):
            return _errors.ConnectionError(f"the server at {url} is busy running a script{where}: try again later")
        if re.search(r"unknown command .sentinel.", low):
            return _errors.InvalidParameter(
                f"url {url!r} names a server that is not a Sentinel: use redis://host:port/db for it, or the "
                "Sentinels' own ports (26379 by default)"
            )
        if "unknown command" in low:
            return _errors.ServerError(
                f"the server at {url} lacks a command rqueue needs ({msg}): rqueue needs Redis 6.2+ or "
                "Valkey 7.2+ with scripting enabled and commands not renamed"
            )
        return _errors.ServerError(
            f"the server at {url} refused a command{where}: {msg}; if another program writes keys under "
            "this prefix, use another prefix, else report this message"
        )
    return None


def _protocol(s: _Seen) -> BaseException | None:
    """Not the Redis protocol, a value redis-py refuses, a server still loading."""
    e, msg, url, where = s.e, s.msg, s.url, s.where
    if isinstance(e, rx.InvalidResponse):
        return _errors.ConnectionError(
            f"the server at {url} does not answer in the Redis protocol ({msg}): is it a Redis server? "
            "(rediss:// for TLS)"
        )
    if isinstance(e, rx.DataError):
        return _errors.InvalidParameter(f"redis-py refused a value: {msg}")
    if isinstance(e, rx.BusyLoadingError):
        return _errors.ConnectionError(f"the server at {url} is loading its data{where}: try again in a moment")
    return None


def _cluster(s: _Seen) -> BaseException | None:
    """Redis Cluster: a wrong URL, slots moving, a node unreachable."""
    e, msg, low, url, where = s.e, s.msg, s.low, s.url, s.where
    cluster_url = "+cluster://" in url.lower()
    if isinstance(e, rx.AskError) and not cluster_url:
        return _errors.InvalidParameter(
            f"url {url!r} points at a Redis Cluster node ({msg}): use redis+cluster://host:port[,host:port...]"
        )
    if isinstance(e, rx.SlotNotCoveredError | rx.ClusterError | rx.TryAgainError | rx.AskError):
        return _errors.ConnectionError(
            f"the cluster at {url} is not serving every slot{where} ({msg}): it is failing over or "
            "being resharded; try again"
        )
    if isinstance(e, rx.RedisClusterException):
        if "cluster mode is not enabled" in low:
            return _errors.InvalidParameter(
                f"url {url!r} names a server that is not a Redis Cluster node: use redis://host:port/db"
            )
        if "connect" in low or "reachable" in low or "no startup nodes" in low:
            return _errors.ConnectionError(f"cannot reach the cluster at {url}: {msg}; check the node addresses")
        return _errors.ServerError(f"the cluster at {url} refused a call{where}: {msg}; report this message")
    return None


def _unreachable(s: _Seen) -> BaseException | None:
    """The server cannot be reached, or failed the call otherwise."""
    e, msg, low, url, where, connecting = s.e, s.msg, s.low, s.url, s.where, s.connecting
    if isinstance(e, (*CONNECTION_ERRORS, OSError)):
        return _errors.ConnectionError(f"cannot reach {url}: {msg}{_hint(msg, url, connecting)}")
    if type(e) is rx.RedisError and low.startswith("invalid"):  # redis-py refused a URL option it parsed late
        return _errors.InvalidParameter(f"url {url!r} or an option of connect() cannot be used: {msg}")
    if isinstance(e, rx.RedisError):
        return _errors.ServerError(f"the server at {url} failed a call{where}: {msg}; report this message")
    return None


#: The rules of ``map_error``, in order: the first that maps the error wins.
_RULES: tuple[Callable[[_Seen], BaseException | None], ...] = (
    _access,
    _server_state,
    _refused,
    _protocol,
    _cluster,
    _unreachable,
)


def raise_mapped(e: BaseException, url: str, queue: str) -> NoReturn:
    """Re-raise a redis-py error as the rqueue error it means (see ``map_error``)."""
    mapped = map_error(e, url, queue)
    if mapped is e:
        raise e
    if isinstance(e, rx.ResponseError) and str(e).startswith("RQ_"):
        raise mapped from None  # a script's verdict: redis-py's frames would only hide it
    raise mapped from e


def connect_error(e: BaseException, url: str, *, options: bool = False) -> BaseException:
    """What a failure of ``connect(url, **options)`` means (``url`` unmasked).

    A malformed URL or a bad option becomes ``InvalidParameter``, with no
    password in it (parsers quote the pieces they choke on); the rest as
    ``map_error``, with the guesses that only make sense while connecting.
    """
    if isinstance(e, ValueError | TypeError) and not isinstance(e, _errors.RQueueError):
        text = redact(" ".join(str(e).split()), url)
        if isinstance(e, TypeError) and "keyword argument" in text:
            return _errors.InvalidParameter(
                f"options of connect() must be redis-py connection options: {text}; see redis.Redis"
            )
        what = f"url {mask_url(url)!r}" + (" or an option of connect()" if options else "")
        return _errors.InvalidParameter(
            f"{what} cannot be used: {text}; write the url as scheme://[user:password@]host:port[/db], "
            "percent-encoding '/', '?', '#' and '%' in the password (%2F, %3F, %23, %25)"
        )
    return map_error(e, mask_url(url), "", connecting=True)


def raise_connect_error(e: BaseException, url: str, *, options: bool = False) -> NoReturn:
    """Re-raise a failure of ``connect(url)`` as ``connect_error`` says; a parser's own
    error is not chained (it may quote a piece of the password)."""
    mapped = connect_error(e, url, options=options)
    if mapped is e:
        raise e
    raise mapped from (None if isinstance(e, ValueError | TypeError) else e)


def config_refused(e: BaseException) -> bool:
    """True when CONFIG GET failed because CONFIG is disabled or forbidden (managed services):
    the server's settings cannot be checked then, which is no error."""
    low = str(e).lower()
    return isinstance(e, rx.ResponseError) and "config" in low and ("unknown" in low or "permission" in low)


def policy_from(reply: Any) -> str | None:
    """maxmemory-policy out of a CONFIG GET reply (dict, or dict per node)."""
    if isinstance(reply, dict):
        for k, v in reply.items():
            if isinstance(v, dict):
                return policy_from(v)
            if (k.decode() if isinstance(k, bytes) else k) == "maxmemory-policy":
                return v.decode() if isinstance(v, bytes) else str(v)
    return None
