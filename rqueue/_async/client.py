"""The asyncio client: the sync client's methods, awaited."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster

from rqueue._protocol import codec as _codec
from rqueue._protocol import errors as _errors
from rqueue._protocol import operations as _core
from rqueue._protocol.codec import Attributes
from rqueue._protocol.errors import InvalidParameter, QueueDoesNotExist
from rqueue._protocol.keys import QueueKeys, TopicKeys, check_name, check_prefix, registry
from rqueue._protocol.models import Event, Message, QueueAttributes, QueueStats
from rqueue._protocol.operations import Call, Op, Pop
from rqueue._transport.backends import Backend, check_options, check_policy, factory_for, mask_url, resolve_url
from rqueue._transport.base import (
    CONNECTION_ERRORS,
    AsyncCallSlots,
    QueueHandle,
    Routing,
    call_limit,
    config_refused,
    policy_from,
    raise_connect_error,
    raise_mapped,
    settle,
    unreachable,
)
from rqueue._transport.listen import AsyncListener, AsyncTracker
from rqueue._transport.wait import AGAIN, DEFAULT_MAX_LANES, AsyncWaiter, Waiter, check_max_lanes

if TYPE_CHECKING:
    from rqueue._async.topic import AsyncTopic

T = TypeVar("T")


async def connect(
    url: str | None = None,
    *,
    prefix: str = "rqueue",
    max_wait_connections: int = DEFAULT_MAX_LANES,
    **options: Any,
) -> AsyncClient:
    """Connect to the server at ``url`` (else ``RQUEUE_URL``, else localhost); see ``rqueue.connect``."""
    url = resolve_url(url)
    check_prefix(prefix)  # before an embedded server starts
    check_max_lanes(max_wait_connections)
    check_options(options)
    try:
        backend = factory_for(url)(url, is_async=True, **options)
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
    """An asyncio connection to one server or cluster; makes ``AsyncQueue`` handles.

    Cancelling a call never leaves a message hidden from everyone or a request
    unanswered for nobody: see ``drive``.
    """

    def __init__(
        self, backend: Backend, *, prefix: str = "rqueue", max_wait_connections: int = DEFAULT_MAX_LANES
    ) -> None:
        self._backend = backend
        self.redis: Any = backend.client
        self.url = backend.url
        self.prefix = check_prefix(prefix)
        self._listener: AsyncListener | None = None
        self._waiter = AsyncWaiter(self.redis, self.url, check_max_lanes(max_wait_connections))
        #: Calls beyond the pool's size wait here for a connection instead of failing.
        self._calls = AsyncCallSlots(call_limit(self.redis))
        #: Set on a Redis Cluster: run_many pipelines per node.
        self._routing = Routing() if isinstance(self.redis, RedisCluster) else None

    def __repr__(self) -> str:
        return f"<rqueue.asyncio.AsyncClient {self.url}>"

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

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncGenerator[None, None]:
        """A slot of ``_calls`` for a call other than ``run``'s."""
        if not self._calls.take_now():
            await self._calls.take()
        try:
            yield
        finally:
            self._calls.give()

    def _fail(self, e: BaseException, queue: str) -> NoReturn:
        """Raise ``e`` as the rqueue error it means ('client is closed' once it is)."""
        if self._waiter.core.closed:
            raise self._waiter.core.closed_error() from e
        raise_mapped(e, self.url, queue)

    async def run(self, call: Call[T]) -> T:
        """Run one script call and parse its reply."""
        slots = self._calls
        if not slots.take_now():
            await slots.take()
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
        """run_many on a cluster: one pipeline per node, on that node's own connections, concurrently."""
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
            cmds = []
            for i in idx:
                call = calls[i]
                cmds.append(PipelineCommand(i, "EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args))
            try:
                async with self._slot():
                    await node.execute_pipeline(cmds)
                got = [c.result for c in cmds]
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
        for part in (groups[:first], groups[first:]):
            if len(part) == 1:
                await on(*part[0])
            elif part:
                done = await asyncio.gather(*(on(*g) for g in part), return_exceptions=True)
                failures = [f for f in done if isinstance(f, BaseException)]
                if failures:  # an unreachable node fails the whole batch
                    raise next((f for f in failures if isinstance(f, _errors.ConnectionError)), failures[0])
        out, again, moved = settle(calls, replies, self.url)
        if again:
            if moved:  # a slot changed owner: learn the new map, then follow it singly
                try:
                    await rc.nodes_manager.initialize()
                except Exception:  # noqa: BLE001 - run() follows the redirection anyway
                    routing.stale = True
            await self._run_again(calls, out, again)
        return out

    async def wait(self, key: str, timeout: float) -> bool:
        """Wait until a token is pushed on ``key`` or ``timeout`` seconds pass."""
        try:
            return await self._waiter.wait(key, timeout)
        except Exception as e:  # noqa: BLE001
            self._fail(e, "")

    async def hand_on(self, key: str) -> None:
        """Pass a wake-up token this client took but will not use to another waiter."""
        await self._waiter.hand_on(key)

    async def pop(self, key: str, timeout: float, give_up: Call[Any] | None = None) -> bytes | None:
        """Pop the value pushed on ``key``, or None after ``timeout`` seconds.

        Cancelled, or its wait's connection lost, before a value came, it runs
        ``give_up`` (a request withdraws its message) before the error goes
        on; not once the client is closed.
        """
        w: Waiter | None = None
        try:
            w = await self._waiter.join(key, timeout, True)
            value = await self._waiter.result(w, timeout)
        except Exception as e:  # noqa: BLE001
            got = None if w is None else self._waiter.leave(w)
            if isinstance(got, bytes):
                return got
            if give_up is not None and not self._waiter.core.closed:
                await self._settle(self._run_all([give_up]))
            self._fail(e, "")
        except BaseException:
            got = None if w is None else self._waiter.leave(w)
            if give_up is not None and not isinstance(got, bytes):
                await self._settle(self._run_all([give_up]))
            raise
        return None if value is AGAIN else value

    async def _run_kept(self, call: Call[T]) -> T:
        """Run a call with ``settle``: a cancelled caller lets it finish, then settles it."""
        task = asyncio.ensure_future(self.run(call))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await self._settle(self._after(task, call))
            raise

    async def _after(self, task: asyncio.Future[Any], call: Call[Any]) -> None:
        try:
            result = await task
        except Exception:  # noqa: BLE001 - it failed: nothing to undo
            return
        if call.settle is not None:
            await self._run_all(call.settle(result))

    async def _run_all(self, calls: Sequence[Call[Any]]) -> None:
        for call in calls:
            with contextlib.suppress(Exception):  # best effort: the caller has given up
                await self.run(call)

    async def _settle(self, work: Any) -> None:
        """Run ``work`` to its end even if the caller is cancelled again (it then
        goes on in the background, and ``aclose`` waits for it)."""
        job = self._waiter.background(work)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(job)

    def listener(self) -> AsyncListener:
        """The client's one event listener (started on the first tracked send)."""
        if self._listener is None:
            self._listener = AsyncListener(self.redis, self.url)
        return self._listener

    async def drive(self, flow: Generator[Op, Any, T]) -> T:
        """Run a flow of the core (calls and waits) to its result.

        Cancelled at any await, it settles first what the flow had started
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
    ) -> AsyncQueue:
        """Create a queue (and its dead-letter queue); a no-op if it exists alike."""
        keys = QueueKeys.for_queue(self.prefix, name)
        await self.run(
            _core.create_queue(keys, visibility_timeout, delay, retention, max_message_size, max_receive_count)
        )
        try:
            async with self._slot():
                await self.redis.sadd(registry(self.prefix), keys.name)
        except Exception as e:  # noqa: BLE001
            raise_mapped(e, self.url, name)
        return AsyncQueue(self, keys)

    def queue(self, name: str) -> AsyncQueue:
        """A handle to an existing queue; no round trip."""
        return AsyncQueue(self, QueueKeys.for_queue(self.prefix, name))

    def topic(self, name: str) -> AsyncTopic:
        """A handle to the topic ``name`` (created by its first subscription); no round trip."""
        from rqueue._async.topic import AsyncTopic

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
        waiting (long polls, requests) end with ``rqueue.ConnectionError``.
        """
        try:
            await self._waiter.aclose()
            if self._listener is not None:
                await self._listener.aclose()
            await self.redis.aclose()
        finally:
            for stop in self._backend.on_close:
                result = stop()
                if inspect.isawaitable(result):
                    await result
            self._backend.on_close.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncQueue(QueueHandle):
    """A handle to one queue; the methods of ``rqueue.Queue``, awaited."""

    __slots__ = ("client",)

    def __init__(self, client: AsyncClient, keys: QueueKeys) -> None:
        super().__init__(keys)
        self.client = client

    async def send(
        self,
        body: Any,
        *,
        delay: float | None = None,
        attributes: Attributes | None = None,
        on_event: Callable[[Event], Any] | None = None,
    ) -> str:
        """Store one message; returns its id.

        With ``on_event``, the message is tracked: ``on_event(Event)`` runs in
        the client's listener task for each of its events (see ``send_tracked``).
        """
        if on_event is not None:
            return (await self.send_tracked(body, delay=delay, attributes=attributes, on_event=on_event)).message_id
        return (await self.send_batch([body], delay=delay, attributes=attributes))[0]

    async def send_tracked(
        self,
        body: Any,
        *,
        delay: float | None = None,
        attributes: Attributes | None = None,
        on_event: Callable[[Event], Any] | None = None,
    ) -> AsyncTracker:
        """Store one message whose events (received, processed with the reply,
        dead_lettered, expired) are published; returns its tracker.

        The client's listener subscribes to this queue's events before the
        send, so no event is lost; untracked sends publish nothing.
        """
        keys = self._keys
        if keys.is_dlq:
            raise InvalidParameter(f"{keys.name!r} is a dead-letter queue; track messages of its source queue")
        encoded = _core.encode_batch([body], attributes)
        listener = self.client.listener()
        generation = await listener.ensure(keys.events)
        (message_id,) = await self.client.run(_core.send(keys, encoded, delay, _codec.EVENTS))
        tracker = AsyncTracker(message_id, on_event)
        for sink, event in listener.router.register(keys.events, message_id, tracker._deliver, generation):
            sink(event)
        return tracker

    async def send_batch(
        self, bodies: Iterable[Any], *, delay: float | None = None, attributes: Attributes | None = None
    ) -> list[str]:
        """Store 1-1000 messages atomically; returns their ids."""
        return await self.client.run(_core.send(self._keys, _core.encode_batch(bodies, attributes), delay))

    async def receive(
        self, max_messages: int = 1, *, visibility_timeout: float | None = None, wait_time: float = 0
    ) -> list[Message]:
        """Receive up to ``max_messages`` and hide them; wait up to ``wait_time`` s for one."""
        return await self.client.drive(_core.receive_flow(self._keys, max_messages, visibility_timeout, wait_time))

    async def delete(self, receipt: str, *, reply: Any = None) -> bool:
        """Delete by the latest receipt; False if stale."""
        return (await self.delete_batch([receipt], replies=[reply]))[0]

    async def delete_batch(self, receipts: Iterable[str], *, replies: Sequence[Any] | None = None) -> list[bool]:
        """Delete many; one bool per receipt. ``replies``: one per receipt, see ``delete``."""
        return await self.client.run(_core.delete(self._keys, receipts, replies))

    async def request(
        self,
        body: Any,
        *,
        timeout: float,
        attributes: Attributes | None = None,
        delay: float | None = None,
    ) -> Any:
        """Send ``body`` and block until a consumer deletes it; return its reply.

        Raises RequestTimeout (a TimeoutError) after ``timeout`` seconds, having
        withdrawn the message if no consumer had received it yet, and
        MessageDeadLettered if it was dead-lettered meanwhile.
        """
        return await self.client.drive(_core.request_flow(self._keys, body, attributes, delay, timeout))

    async def change_visibility(self, receipt: str, seconds: float) -> bool:
        """Hide for ``seconds`` from now; False if the receipt is stale."""
        return (await self.change_visibility_batch([receipt], seconds))[0]

    async def change_visibility_batch(self, receipts: Iterable[str], seconds: float) -> list[bool]:
        """change_visibility for many receipts in one call."""
        return await self.client.run(_core.change_visibility(self._keys, receipts, seconds))

    async def reject(self, receipt: str, reason: str = "") -> bool:
        """Move a received message to the dead-letter queue now, keeping ``reason``."""
        return (await self.reject_batch([receipt], reason))[0]

    async def reject_batch(self, receipts: Iterable[str], reason: str = "") -> list[bool]:
        """reject for many receipts in one call; one bool per receipt."""
        return await self.client.run(_core.reject(self._keys, receipts, reason))

    async def stats(self) -> QueueStats:
        """Counts and counters."""
        return await self.client.run(_core.stats(self._keys))

    async def attributes(self) -> QueueAttributes:
        """The queue's stored attributes."""
        return await self.client.run(_core.attributes(self._keys))

    async def purge(self) -> int:
        """Delete every message (not the dead letters); returns how many."""
        return await self.client.run(_core.purge(self._keys))

    @property
    def dead_letter_queue(self) -> AsyncQueue:
        """This queue's dead-letter queue."""
        return AsyncQueue(self.client, self._keys.dlq())

    async def redrive(self) -> int:
        """Move every dead letter not in flight back here; returns how many."""
        moved = total = await self.client.run(_core.redrive(self._keys))
        while moved == _core.REDRIVE_CHUNK:
            moved = await self.client.run(_core.redrive(self._keys))
            total += moved
        return total
