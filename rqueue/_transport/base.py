"""What the sync and asyncio clients share besides the core: error mapping,
reading a pipeline's replies, routing calls to cluster nodes, and the queue
handle's identity. No I/O here."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import re
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from redis import exceptions as rx
from redis.crc import key_slot

from rqueue._protocol import errors as _errors
from rqueue._protocol.keys import QueueKeys
from rqueue._transport.backends import mask_url, redact

if TYPE_CHECKING:
    from rqueue._protocol.operations import Call

N = TypeVar("N", bound=Hashable)

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
    if isinstance(e, rx.InvalidResponse):
        return _errors.ConnectionError(
            f"the server at {url} does not answer in the Redis protocol ({msg}): is it a Redis server? "
            "(rediss:// for TLS)"
        )
    if isinstance(e, rx.DataError):
        return _errors.InvalidParameter(f"redis-py refused a value: {msg}")
    if isinstance(e, rx.BusyLoadingError):
        return _errors.ConnectionError(f"the server at {url} is loading its data{where}: try again in a moment")
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
    if isinstance(e, (*CONNECTION_ERRORS, OSError)):
        return _errors.ConnectionError(f"cannot reach {url}: {msg}{_hint(msg, url, connecting)}")
    if type(e) is rx.RedisError and low.startswith("invalid"):  # redis-py refused a URL option it parsed late
        return _errors.InvalidParameter(f"url {url!r} or an option of connect() cannot be used: {msg}")
    if isinstance(e, rx.RedisError):
        return _errors.ServerError(f"the server at {url} failed a call{where}: {msg}; report this message")
    return e


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


#: Replies after which a call runs again on its own through ``run()``: NOSCRIPT
#: (``run`` loads the script); MOVED, ASK and TRYAGAIN (a slot is moving: the
#: cluster client follows or retries). None of them ran the script.
_AGAIN = (rx.NoScriptError, rx.AskError, rx.TryAgainError)  # MovedError is an AskError


def unreachable(replies: Sequence[Any]) -> BaseException | None:
    """The first reply saying the node cannot serve (CLUSTERDOWN, LOADING...), if any."""
    for r in replies:
        if isinstance(r, CONNECTION_ERRORS) and not isinstance(r, rx.TryAgainError):
            return r
    return None


def settle(calls: Sequence[Call[Any]], replies: Sequence[Any], url: str) -> tuple[list[Any], list[int], bool]:
    """Parse a pipeline's replies: ``(results, again, moved)``.

    ``results`` holds each parsed reply or the rqueue exception its call met;
    the calls at the indexes ``again`` must run again singly (their slot in
    ``results`` is None), and ``moved`` says a slot has a new owner (refresh
    the slot map first). A reply meaning "server unreachable" raises
    ``rqueue.ConnectionError`` for the whole batch.
    """
    out: list[Any] = []
    again: list[int] = []
    moved = False
    for call, reply in zip(calls, replies, strict=True):
        try:
            if isinstance(reply, Exception):
                if isinstance(reply, _AGAIN):
                    again.append(len(out))
                    moved = moved or isinstance(reply, rx.MovedError)
                    out.append(None)
                    continue
                raise_mapped(reply, url, call.queue)
            out.append(call.parse(reply))
        except _errors.ConnectionError:
            raise
        except Exception as e:  # noqa: BLE001
            out.append(e)
    return out, again, moved


def slot_of(call: Call[Any]) -> int:
    """The cluster hash slot of a call (all keys of one call share its hash tag)."""
    return key_slot(call.keys[0].encode()) if call.keys else 0


class Routing:
    """A cluster client's view of where to send a batch of calls, kept between batches.

    ``plan`` groups the calls by the node owning their slot (one pipeline per
    node, order kept within each). A node whose pipeline failed is *suspect*:
    its pipeline goes first next time, on its own, so while it is down a batch
    fails before anything ran on the healthy nodes (a consumer does not take
    messages it then drops). After a failure the slot map is *stale*: the
    client refreshes it before the next batch (a replica may have taken over).
    """

    __slots__ = ("_suspects", "stale")

    def __init__(self) -> None:
        self.stale = False
        self._suspects: set[Hashable] = set()

    def plan(self, calls: Sequence[Call[Any]], node_of: Callable[[int], N]) -> tuple[list[tuple[N, list[int]]], int]:
        """``(groups, first)``: (node, call indexes) per node; the first ``first`` groups are suspect."""
        groups: dict[N, list[int]] = {}
        for i, call in enumerate(calls):
            node = node_of(slot_of(call))
            idx = groups.get(node)
            if idx is None:
                groups[node] = [i]
            else:
                idx.append(i)
        items = list(groups.items())
        if not self._suspects:
            return items, 0
        suspect = [g for g in items if g[0] in self._suspects]
        return suspect + [g for g in items if g[0] not in self._suspects], len(suspect)

    def failed(self, node: Hashable) -> None:
        """``node`` could not be reached (or answered that the cluster is down)."""
        self._suspects.add(node)
        self.stale = True

    def answered(self, node: Hashable) -> None:
        """``node`` ran its pipeline."""
        if self._suspects:
            self._suspects.discard(node)


class QueueHandle:
    """Identity of a queue handle: name and keys. No I/O."""

    __slots__ = ("_keys",)

    def __init__(self, keys: QueueKeys) -> None:
        self._keys = keys

    @property
    def name(self) -> str:
        """The queue's name (``<source>:dlq`` for a dead-letter queue)."""
        return self._keys.name

    @property
    def is_dead_letter_queue(self) -> bool:
        return self._keys.is_dlq

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueueHandle) and type(other) is type(self) and other._keys == self._keys

    def __hash__(self) -> int:
        return hash(self._keys)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def policy_from(reply: Any) -> str | None:
    """maxmemory-policy out of a CONFIG GET reply (dict, or dict per node)."""
    if isinstance(reply, dict):
        for k, v in reply.items():
            if isinstance(v, dict):
                return policy_from(v)
            if (k.decode() if isinstance(k, bytes) else k) == "maxmemory-policy":
                return v.decode() if isinstance(v, bytes) else str(v)
    return None


#: Pool connections a client leaves to what runs beside its calls (the sync event
#: listener's connection, handing a wake-up token on).
CALL_RESERVE = 4


def call_limit(redis: Any) -> int:
    """How many calls of one client may use its pool at once.

    redis-py's pool fails with "Too many connections" past its size (100 unless
    ``max_connections`` says otherwise; per node on a cluster) instead of
    waiting; the clients let at most this many calls in, so more concurrent
    calls (threads, tasks, a consumer's handlers) wait for a free connection.
    """
    size = getattr(getattr(redis, "connection_pool", None), "max_connections", None)
    if size is None:
        kwargs = getattr(getattr(redis, "nodes_manager", None), "connection_kwargs", None) or {}
        size = kwargs.get("max_connections") or 100
    return max(1, int(size) - CALL_RESERVE)


class CallSlots:
    """At most ``n`` sync calls at once (see ``call_limit``); the rest wait.

    Tokens in a SimpleQueue (``take``/``give`` around a call): 0.07 us a call
    where a BoundedSemaphore costs 1.3.
    """

    __slots__ = ("give", "take")

    def __init__(self, n: int) -> None:
        tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(n):
            tokens.put(None)
        self.take: Callable[[], None] = tokens.get
        self.give: Callable[[None], None] = tokens.put


class AsyncCallSlots:
    """At most ``n`` asyncio calls at once; the rest wait, first come first served.

    ``take_now()`` is the synchronous fast path (no coroutine, unlike ``async
    with asyncio.Semaphore``); ``take()`` waits; ``give()`` hands a slot to
    the longest waiting caller, else frees it.
    """

    __slots__ = ("_free", "_waiting")

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_now(self) -> bool:
        if self._free and not self._waiting:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give()  # handed a slot just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(fut)
            raise

    def give(self) -> None:
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1
