"""The client: ``connect(url)`` -> client -> queue handles.

Written once, for asyncio (``rqueue.asyncio.connect``); ``scripts/unasync``
generates the sync client (``rqueue.connect``) from this file."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from typing import Any, NoReturn, TypeVar

from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode, RedisCluster

from rqueue._async.listener import AsyncListener
from rqueue._async.queue import AsyncQueue
from rqueue._async.topic import AsyncTopic
from rqueue._async.waiter import AsyncWaiter
from rqueue._protocol import errors as _errors
from rqueue._protocol import operations as _core
from rqueue._protocol.errors import QueueDoesNotExist
from rqueue._protocol.keys import QueueKeys, TopicKeys, check_name, check_prefix, registry
from rqueue._protocol.operations import Call, Op, Pop
from rqueue._transport import async_io as io
from rqueue._transport.backends import Backend, check_options, check_policy, factory_for, mask_url, resolve_url
from rqueue._transport.concurrency import AsyncThreadLock
from rqueue._transport.errors import (
    CONNECTION_ERRORS,
    config_refused,
    policy_from,
    raise_connect_error,
    raise_mapped,
)
from rqueue._transport.lanes import AGAIN, DEFAULT_MAX_LANES, LaneWait, check_max_lanes
from rqueue._transport.routing import Routing, settle, unreachable
from rqueue._transport.slots import AsyncCallSlots, call_limit

__all__ = ["AsyncClient", "AsyncQueue", "connect"]

T = TypeVar("T")


async def connect(
    url: str | None = None,
    *,
    prefix: str = "rqueue",
    max_wait_connections: int = DEFAULT_MAX_LANES,
    **options: Any,
) -> AsyncClient:
    """Connect to the server at ``url`` (else ``RQUEUE_URL``, else localhost).

    ``options`` go to redis-py (``socket_timeout``, ``ssl_ca_certs``, ...).
    ``max_wait_connections`` caps the connections the client's waiting calls
    (long polls, requests) share; see the README's "Long polling".
    Warns once when the server's maxmemory-policy is not ``noeviction``.
    """
    url = resolve_url(url)
    check_prefix(prefix)  # before an embedded server starts
    check_max_lanes(max_wait_connections)
    check_options(options)
    try:
        backend = factory_for(url)(url, is_async=io.IS_ASYNC, **options)
    except Exception as e:  # noqa: BLE001 - a malformed URL, bad options, an unreachable cluster
        raise_connect_error(e, url, options=bool(options))
    backend.url = mask_url(backend.url)  # a plugin's factory may have left a password in it
    client = AsyncClient(backend, prefix=prefix, max_wait_connections=max_wait_connections)
    try:
        await client._check_server()
    except BaseException as e:  # noqa: BLE001 - closed, then raised again (mapped)
        await client.aclose()
        raise_connect_error(e, url, options=bool(options))
    return client


class AsyncClient:
    """A connection to one server or cluster; makes ``AsyncQueue`` handles.

    Waiting calls (long polls, requests) share a few connections of their own
    (``rqueue._async.waiter``), so they never take the pool from other calls.
    The sync client is thread-safe; cancelling a call of the asyncio client never
    leaves a message hidden from everyone or a request unanswered: see ``drive``.
    """

    def __init__(
        self, backend: Backend, *, prefix: str = "rqueue", max_wait_connections: int = DEFAULT_MAX_LANES
    ) -> None:
        self._backend = backend
        self.redis: Any = backend.client
        self.url = backend.url
        self.prefix = check_prefix(prefix)
        self._listener: AsyncListener | None = None
        self._listener_lock = AsyncThreadLock()  # two threads' first tracked sends: one listener
        self._waiter = AsyncWaiter(self.redis, self.url, check_max_lanes(max_wait_connections))
        #: Calls beyond the pool's size wait here for a connection instead of failing.
        self._calls = AsyncCallSlots(call_limit(self.redis))
        #: Set on a Redis Cluster: run_many pipelines per node.
        self._routing = Routing() if isinstance(self.redis, RedisCluster) else None

    def __repr__(self) -> str:
        return f"<rqueue.asyncio.AsyncClient {self.url}>"  # unasync: return f"<rqueue.Client {self.url}>"

    async def _check_server(self) -> None:
        """The first round trip (login, database): its failures are raised as they are, for
        ``connect()`` to map; warns when the server may evict messages."""
        if hasattr(self.redis, "initialize"):
            await self.redis.initialize()
        try:
            reply = await self.redis.config_get("maxmemory-policy")
        except rx.ResponseError as e:
            if not config_refused(e):  # a database the server lacks, a permission, ...
                raise
            return  # CONFIG disabled (managed services): cannot check
        check_policy(policy_from(reply), self.url)

    def _check_open(self) -> None:
        """A closed client refuses calls, rather than open a new connection nobody closes."""
        if self._waiter.core.closed:
            raise self._waiter.core.closed_error()

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """A slot of ``_calls`` for a call other than ``run``'s."""
        self._check_open()
        if not self._calls.take_now():  # unasync: self._calls.take()
            await self._calls.take()  # unasync: remove
        try:
            yield
        finally:
            self._calls.give()

    def _fail(self, e: BaseException, queue: str) -> NoReturn:
        """Raise ``e`` as the rqueue error it means; anything met once the
        client is closed (redis-py's internals included) as 'client is closed'."""
        if self._waiter.core.closed:
            raise self._waiter.core.closed_error() from e
        raise_mapped(e, self.url, queue)

    async def run(self, call: Call[T]) -> T:
        """Run one script call and parse its reply."""
        self._check_open()
        slots = self._calls
        if not slots.take_now():  # unasync: slots.take()
            await slots.take()  # unasync: remove
        try:
            try:
                reply = await self.redis.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            except rx.NoScriptError:
                await self.redis.script_load(call.script.source)
                reply = await self.redis.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        except Exception as e:  # noqa: BLE001
            self._fail(e, call.queue)
        finally:
            slots.give()
        return call.parse(reply)

    async def run_many(self, calls: Sequence[Call[Any]]) -> list[Any]:
        """Run several script calls in one round trip (a pipeline, not a transaction).

        Each result is the parsed reply, or the rqueue exception that call met;
        a lost connection raises ``rqueue.ConnectionError`` for the whole batch.
        On a cluster, each node owning some of the calls gets its own pipeline.
        """
        self._check_open()
        if self._routing is not None:
            return await self._run_many_cluster(calls, self._routing)
        pipe = self.redis.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        try:
            async with self._slot():
                replies = await pipe.execute(raise_on_error=False)
        except Exception as e:  # noqa: BLE001
            self._fail(e, "")
        out, again, _moved = settle(calls, replies, self.url)
        if again:
            await self._run_again(calls, out, again)
        return out

    async def _run_again(self, calls: Sequence[Call[Any]], out: list[Any], again: list[int]) -> None:
        """Run the calls at ``again`` singly (NOSCRIPT: load the script; MOVED/ASK: follow it)."""
        for i in again:
            try:
                out[i] = await self.run(calls[i])
            except _errors.ConnectionError:
                raise
            except Exception as e:  # noqa: BLE001
                out[i] = e

    async def _run_many_cluster(self, calls: Sequence[Call[Any]], routing: Routing) -> list[Any]:
        """run_many on a cluster: one pipeline per node, on that node's own connections
        (concurrently on asyncio, one after the other in the sync client)."""
        rc: RedisCluster = self.redis
        try:
            if routing.stale:
                await rc.nodes_manager.initialize()
                routing.stale = False
            groups, first = routing.plan(calls, rc.nodes_manager.get_node_from_slot)
        except Exception as e:  # no node answers, or a slot has no owner yet
            routing.stale = True
            raise _errors.ConnectionError(f"cannot reach {self.url}: {e}") from e
        replies: list[Any] = [None] * len(calls)

        async def on(node: ClusterNode, idx: list[int]) -> None:
            try:
                async with self._slot():
                    got = await io.node_pipeline(rc, node, [calls[i] for i in idx])
                down = unreachable(got)
                if down is not None:  # the connection broke mid-read, or CLUSTERDOWN, LOADING...
                    raise down
            except Exception as e:  # noqa: BLE001
                if isinstance(e, CONNECTION_ERRORS):
                    routing.failed(node)
                self._fail(e, "")
            routing.answered(node)
            for i, reply in zip(idx, got, strict=True):
                replies[i] = reply

        # Suspects first, on their own (see Routing); then the other nodes together.
        await io.each(groups[:first], on)
        await io.each(groups[first:], on)
        out, again, moved = settle(calls, replies, self.url)
        if again:
            if moved:  # a slot changed owner: learn the new map, then follow it singly
                try:
                    await rc.nodes_manager.initialize()
                except Exception:  # noqa: BLE001 - run() follows the redirection anyway
                    routing.stale = True
            await self._run_again(calls, out, again)
        return out

    async def wait(
        self, key: str, timeout: float, *, on_block: Callable[[Callable[[], None]], None] | None = None
    ) -> bool:
        """Wait until a token is pushed on ``key`` or ``timeout`` seconds pass.

        ``on_block`` receives a function that ends the wait early (from another
        thread; on asyncio, from the event loop's).
        """
        try:
            return await self._waiter.wait(key, timeout, on_block=on_block)
        except Exception as e:  # noqa: BLE001
            self._fail(e, "")

    async def hand_on(self, key: str) -> None:
        """Pass a wake-up token this client took but will not use to another waiter."""
        await self._waiter.hand_on(key)

    async def pop(self, key: str, timeout: float, give_up: Call[Any] | None = None) -> bytes | None:
        """Pop the value pushed on ``key``, or None after ``timeout`` seconds.

        Interrupted (cancelled; KeyboardInterrupt in the sync client), or its
        wait's connection lost, before a value came, it runs ``give_up`` (a
        request withdraws its message, so nobody processes it for a sender who
        left) before the error goes on; not once the client is closed.
        """
        w: LaneWait | None = None
        try:
            w = await self._waiter.join(key, timeout, True)
            value = await self._waiter.result(w, timeout)
        except Exception as e:  # noqa: BLE001
            got = None if w is None else self._waiter.leave(w)
            if isinstance(got, bytes):
                return got
            if give_up is not None and not self._waiter.core.closed:
                await io.finish(self._waiter.background, self._run_all, [give_up])
            self._fail(e, "")
        except BaseException:
            got = None if w is None else self._waiter.leave(w)
            if give_up is not None and not isinstance(got, bytes):
                await io.finish(self._waiter.background, self._run_all, [give_up])
            raise
        return None if value is AGAIN else value

    async def _run_kept(self, call: Call[T]) -> T:
        """Run a call with ``settle``: a cancelled caller lets it finish, then settles it."""
        return await io.kept(self.run(call), functools.partial(self._undo, call), self._waiter.background)

    async def _undo(self, call: Call[T], result: T) -> None:
        if call.settle is not None:
            await self._run_all(call.settle(result))

    async def _run_all(self, calls: Sequence[Call[Any]]) -> None:
        for call in calls:
            with contextlib.suppress(Exception):  # best effort: the caller has given up
                await self.run(call)

    def listener(self) -> AsyncListener:
        """The client's one event listener (started on the first tracked send)."""
        self._check_open()
        with self._listener_lock:
            if self._listener is None:
                self._listener = AsyncListener(self.redis, self.url)
            return self._listener

    async def drive(self, flow: Generator[Op, Any, T]) -> T:
        """Run a flow of the core (calls and waits) to its result.

        Cancelled mid-way (asyncio), it settles first what the flow had started
        (``Call.settle``, ``Pop.settle``): a receive's messages become visible
        again, a request is withdrawn. Then the CancelledError goes on.
        """
        try:
            op = next(flow)
            while True:
                if isinstance(op, Call):
                    result = await (self.run(op) if op.settle is None else self._run_kept(op))
                elif isinstance(op, Pop):
                    result = await self.pop(op.key, op.timeout, op.settle)
                else:
                    result = await self.wait(op.key, op.timeout)
                op = flow.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def create_queue(
        self,
        name: str,
        *,
        visibility_timeout: float = 30,
        delay: float = 0,
        retention: float = _core.DEFAULT_RETENTION,
        max_message_size: int = 256 * 1024,
        max_receive_count: int | None = None,
        deduplication_window: float = 300,
        fifo: bool = False,
        content_based_deduplication: bool = False,
        rate_limit: float | None = None,
        max_in_flight: int | None = None,
    ) -> AsyncQueue:
        """Create a queue (and its dead-letter queue); a no-op if it exists alike.

        Raises QueueAlreadyExists when it exists with other attributes. The attributes are
        QueueAttributes' (seconds, bytes); ``q.set_attributes`` changes all but ``fifo``.
        """
        keys = QueueKeys.for_queue(self.prefix, name)
        attributes = {
            "visibility_timeout": visibility_timeout,
            "delay": delay,
            "retention": retention,
            "max_message_size": max_message_size,
            "max_receive_count": max_receive_count,
            "deduplication_window": deduplication_window,
            "fifo": fifo,
            "content_based_deduplication": content_based_deduplication,
            "rate_limit": rate_limit,
            "max_in_flight": max_in_flight,
        }
        await self.drive(_core.create_queue_flow(keys, attributes))
        await self._registry_add(keys.name)
        return AsyncQueue(self, keys)

    async def _registry_add(self, name: str) -> None:
        try:
            async with self._slot():
                await self.redis.sadd(registry(self.prefix), name)
        except Exception as e:  # noqa: BLE001
            raise_mapped(e, self.url, name)

    def queue(self, name: str) -> AsyncQueue:
        """A handle to an existing queue (``name:dlq`` for its dead-letter queue).

        No round trip: using a queue that does not exist raises QueueDoesNotExist.
        """
        return AsyncQueue(self, QueueKeys.for_queue(self.prefix, name))

    def topic(self, name: str) -> AsyncTopic:
        """A handle to the topic ``name`` (created by its first subscription); no round trip."""
        return AsyncTopic(self, TopicKeys.for_topic(self.prefix, name))

    async def list_queues(self) -> list[str]:
        """Names of all queues, sorted (dead-letter queues not included)."""
        try:
            async with self._slot():
                members = await self.redis.smembers(registry(self.prefix))
        except Exception as e:  # noqa: BLE001
            raise_mapped(e, self.url, "")
        return sorted(n.decode() for n in members)

    async def delete_queue(self, name: str) -> None:
        """Delete a queue, its dead-letter queue and all their messages."""
        keys = QueueKeys.for_queue(self.prefix, check_name(name))
        existed = await self.run(_core.delete_queue(keys))
        try:
            async with self._slot():
                await self.redis.srem(registry(self.prefix), keys.name)
        except Exception as e:  # noqa: BLE001
            raise_mapped(e, self.url, name)
        if not existed:
            raise QueueDoesNotExist(f"queue {name!r} does not exist")

    async def aclose(self) -> None:
        """Close connections (and stop an embedded server).

        What cancelled calls left to settle is finished first; calls still
        waiting (long polls, requests, in other threads) end with
        ``rqueue.ConnectionError`` ('the client ... is closed').
        """
        try:
            await self._waiter.aclose()
            if self._listener is not None:
                await self._listener.aclose()
            await self.redis.aclose()
        finally:
            for stop in self._backend.on_close:
                result = stop()
                if inspect.isawaitable(result):  # unasync: remove
                    await result  # unasync: remove
            self._backend.on_close.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
