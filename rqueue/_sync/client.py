"""The sync client: ``rqueue.connect(url)`` -> ``Client`` -> ``Queue``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from redis import exceptions as rx
from redis.cluster import RedisCluster

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
    CallSlots,
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
from rqueue._transport.listen import SyncListener, Tracker
from rqueue._transport.wait import DEFAULT_MAX_LANES, SyncWaiter, check_max_lanes

if TYPE_CHECKING:
    from rqueue._sync.topic import Topic

T = TypeVar("T")


def connect(
    url: str | None = None,
    *,
    prefix: str = "rqueue",
    max_wait_connections: int = DEFAULT_MAX_LANES,
    **options: Any,
) -> Client:
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
        backend = factory_for(url)(url, is_async=False, **options)
    except Exception as e:  # noqa: BLE001 - a malformed URL, bad options, an unreachable cluster
        raise_connect_error(e, url, options=bool(options))
    backend.url = mask_url(backend.url)  # a plugin's factory may have left a password in it
    client = Client(backend, prefix=prefix, max_wait_connections=max_wait_connections)
    try:
        client._check_server()
    except BaseException as e:  # noqa: BLE001 - closed, then raised again (mapped)
        client.close()
        raise_connect_error(e, url, options=bool(options))
    return client


class Client:
    """A connection to one server or cluster; makes ``Queue`` handles.

    Thread-safe: every call takes a connection from redis-py's pool; waiting
    calls (long polls, requests) share a few connections of their own
    (``rqueue._transport.wait``), so they never take the pool from other calls.
    """

    def __init__(
        self, backend: Backend, *, prefix: str = "rqueue", max_wait_connections: int = DEFAULT_MAX_LANES
    ) -> None:
        self._backend = backend
        self.redis: Any = backend.client
        self.url = backend.url
        self.prefix = check_prefix(prefix)
        self._listener: SyncListener | None = None
        self._waiter = SyncWaiter(self.redis, self.url, check_max_lanes(max_wait_connections))
        #: Calls beyond the pool's size wait here for a connection instead of failing.
        self._calls = CallSlots(call_limit(self.redis))
        #: Set on a Redis Cluster: run_many pipelines per node.
        self._routing = Routing() if isinstance(self.redis, RedisCluster) else None

    def __repr__(self) -> str:
        return f"<rqueue.Client {self.url}>"

    # -- plumbing

    def _check_server(self) -> None:
        """The first round trip (login, database): its failures are raised as they are, for
        ``connect()`` to map; warns when the server may evict messages."""
        try:
            reply = self.redis.config_get("maxmemory-policy")
        except rx.ResponseError as e:
            if not config_refused(e):  # a database the server lacks, a permission, ...
                raise
            return  # CONFIG disabled (managed services): cannot check
        check_policy(policy_from(reply), self.url)

    @contextlib.contextmanager
    def _slot(self) -> Generator[None, None, None]:
        """A slot of ``_calls`` for a call other than ``run``'s."""
        self._calls.take()
        try:
            yield
        finally:
            self._calls.give(None)

    def _fail(self, e: BaseException, queue: str) -> NoReturn:
        """Raise ``e`` as the rqueue error it means; anything met once the
        client is closed (redis-py's internals included) as 'client is closed'."""
        if self._waiter.core.closed:
            raise self._waiter.core.closed_error() from e
        raise_mapped(e, self.url, queue)

    def run(self, call: Call[T]) -> T:
        """Run one script call and parse its reply."""
        slots = self._calls
        slots.take()
        try:
            try:
                reply = self.redis.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            except rx.NoScriptError:
                self.redis.script_load(call.script.source)
                reply = self.redis.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        except Exception as e:  # noqa: BLE001
            self._fail(e, call.queue)
        finally:
            slots.give(None)
        return call.parse(reply)

    def run_many(self, calls: Sequence[Call[Any]]) -> list[Any]:
        """Run several script calls in one round trip (a pipeline, not a transaction).

        Each result is the parsed reply, or the rqueue exception that call met;
        a lost connection raises ``rqueue.ConnectionError`` for the whole batch.
        On a cluster, each node owning some of the calls gets its own pipeline.
        """
        if self._routing is not None:
            return self._run_many_cluster(calls, self._routing)
        pipe = self.redis.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        try:
            with self._slot():
                replies = pipe.execute(raise_on_error=False)
        except Exception as e:  # noqa: BLE001
            self._fail(e, "")
        out, again, _moved = settle(calls, replies, self.url)
        if again:
            self._run_again(calls, out, again)
        return out

    def _run_again(self, calls: Sequence[Call[Any]], out: list[Any], again: list[int]) -> None:
        """Run the calls at ``again`` singly (NOSCRIPT: load the script; MOVED/ASK: follow it)."""
        for i in again:
            try:
                out[i] = self.run(calls[i])
            except _errors.ConnectionError:
                raise
            except Exception as e:  # noqa: BLE001
                out[i] = e

    def _run_many_cluster(self, calls: Sequence[Call[Any]], routing: Routing) -> list[Any]:
        """run_many on a cluster: one pipeline per node, on that node's own connections."""
        rc: RedisCluster = self.redis
        try:
            if routing.stale:
                rc.nodes_manager.initialize()
                routing.stale = False
            groups, _first = routing.plan(calls, rc.nodes_manager.get_node_from_slot)
        except Exception as e:  # no node answers, or a slot has no owner yet
            routing.stale = True
            raise _errors.ConnectionError(f"cannot reach {self.url}: {e}") from e
        replies: list[Any] = [None] * len(calls)
        # One node after the other, suspects first (see Routing). Measured: a thread per node
        # costs more than it saves with nearby nodes; it would save (nodes - 1) round trips.
        for node, idx in groups:
            pipe = rc.get_redis_connection(node).pipeline(transaction=False)
            for i in idx:
                call = calls[i]
                pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
            try:
                with self._slot():
                    got = pipe.execute(raise_on_error=False)
                down = unreachable(got)
                if down is not None:  # CLUSTERDOWN, LOADING...: the node cannot serve
                    raise down
            except Exception as e:  # noqa: BLE001
                if isinstance(e, CONNECTION_ERRORS):
                    routing.failed(node)
                self._fail(e, "")
            routing.answered(node)
            for i, reply in zip(idx, got, strict=True):
                replies[i] = reply
        out, again, moved = settle(calls, replies, self.url)
        if again:
            if moved:  # a slot changed owner: learn the new map, then follow it singly
                try:
                    rc.nodes_manager.initialize()
                except Exception:  # noqa: BLE001 - run() follows the redirection anyway
                    routing.stale = True
            self._run_again(calls, out, again)
        return out

    def wait(self, key: str, timeout: float, *, on_block: Callable[[Callable[[], None]], None] | None = None) -> bool:
        """Block until a token is pushed on ``key`` or ``timeout`` seconds pass.

        ``on_block`` receives a function that ends the wait early (from another thread).
        """
        try:
            return self._waiter.wait(key, timeout, on_block=on_block)
        except Exception as e:  # noqa: BLE001
            self._fail(e, "")

    def pop(self, key: str, timeout: float, give_up: Call[Any] | None = None) -> bytes | None:
        """Pop the value pushed on ``key``, or None after ``timeout`` seconds.

        A caller interrupted (KeyboardInterrupt, SystemExit), or a wait whose
        connection was lost, before a value came runs ``give_up`` (a request
        withdraws its message, so nobody processes it for a sender who left)
        and re-raises; not once the client is closed.
        """
        w = None
        try:
            w = self._waiter.join_pop(key, timeout)
            return self._waiter.result(w, timeout)
        except Exception as e:  # noqa: BLE001
            got = None if w is None else self._waiter.leave(w)
            if isinstance(got, bytes):
                return got
            if give_up is not None and not self._waiter.core.closed:
                self._settle([give_up])
            self._fail(e, "")
        except BaseException:
            got = None if w is None else self._waiter.leave(w)
            if give_up is not None and not isinstance(got, bytes):
                self._settle([give_up])
            raise

    def _settle(self, calls: Sequence[Call[Any]]) -> None:
        for call in calls:
            with contextlib.suppress(Exception):  # best effort: the caller has given up
                self.run(call)

    def listener(self) -> SyncListener:
        """The client's one event listener (started on the first tracked send)."""
        if self._listener is None:
            self._listener = SyncListener(self.redis, self.url)
        return self._listener

    def hand_on(self, key: str) -> None:
        """Pass a wake-up token this client took but will not use to another waiter."""
        self._waiter.hand_on(key)

    def drive(self, flow: Generator[Op, Any, T]) -> T:
        """Run a flow of the core (calls and waits) to its result."""
        try:
            op = next(flow)
            while True:
                if isinstance(op, Call):
                    result = self.run(op)
                elif isinstance(op, Pop):
                    result = self.pop(op.key, op.timeout, op.settle)
                else:
                    result = self.wait(op.key, op.timeout)
                op = flow.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    # -- queues

    def create_queue(
        self,
        name: str,
        *,
        visibility_timeout: float = 30,
        delay: float = 0,
        retention: float = _core.DEFAULT_RETENTION,
        max_message_size: int = 256 * 1024,
        max_receive_count: int | None = None,
    ) -> Queue:
        """Create a queue (and its dead-letter queue); a no-op if it exists alike.

        Raises QueueAlreadyExists when it exists with other attributes.
        """
        keys = QueueKeys.for_queue(self.prefix, name)
        self.run(_core.create_queue(keys, visibility_timeout, delay, retention, max_message_size, max_receive_count))
        self._registry_add(keys.name)
        return Queue(self, keys)

    def _registry_add(self, name: str) -> None:
        try:
            with self._slot():
                self.redis.sadd(registry(self.prefix), name)
        except Exception as e:  # noqa: BLE001
            raise_mapped(e, self.url, name)

    def queue(self, name: str) -> Queue:
        """A handle to an existing queue (``name:dlq`` for its dead-letter queue).

        No round trip: using a queue that does not exist raises QueueDoesNotExist.
        """
        return Queue(self, QueueKeys.for_queue(self.prefix, name))

    def topic(self, name: str) -> Topic:
        """A handle to the topic ``name`` (created by its first subscription); no round trip."""
        from rqueue._sync.topic import Topic

        return Topic(self, TopicKeys.for_topic(self.prefix, name))

    def list_queues(self) -> list[str]:
        """Names of all queues, sorted (dead-letter queues not included)."""
        try:
            with self._slot():
                names = sorted(n.decode() for n in self.redis.smembers(registry(self.prefix)))
        except Exception as e:  # noqa: BLE001
            raise_mapped(e, self.url, "")
        return names

    def delete_queue(self, name: str) -> None:
        """Delete a queue, its dead-letter queue and all their messages."""
        keys = QueueKeys.for_queue(self.prefix, check_name(name))
        existed = self.run(_core.delete_queue(keys))
        try:
            with self._slot():
                self.redis.srem(registry(self.prefix), keys.name)
        except Exception as e:  # noqa: BLE001
            raise_mapped(e, self.url, name)
        if not existed:
            raise QueueDoesNotExist(f"queue {name!r} does not exist")

    def close(self) -> None:
        """Close connections (and stop an embedded server).

        Calls waiting meanwhile (long polls, requests, in other threads) end
        with ``rqueue.ConnectionError`` ('the client ... is closed').
        """
        try:
            self._waiter.close()
            if self._listener is not None:
                self._listener.close()
            self.redis.close()
        finally:
            for stop in self._backend.on_close:
                stop()
            self._backend.on_close.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Queue(QueueHandle):
    """A handle to one queue. Methods mirror SQS; see ``rqueue.asyncio.AsyncQueue``."""

    __slots__ = ("client",)

    def __init__(self, client: Client, keys: QueueKeys) -> None:
        super().__init__(keys)
        self.client = client

    def send(
        self,
        body: Any,
        *,
        delay: float | None = None,
        attributes: Attributes | None = None,
        on_event: Callable[[Event], Any] | None = None,
    ) -> str:
        """Store one message; returns its id. ``delay`` None uses the queue's.

        With ``on_event``, the message is tracked: ``on_event(Event)`` runs on
        the client's listener thread for each of its events (see ``send_tracked``).
        """
        if on_event is not None:
            return self.send_tracked(body, delay=delay, attributes=attributes, on_event=on_event).message_id
        return self.send_batch([body], delay=delay, attributes=attributes)[0]

    def send_tracked(
        self,
        body: Any,
        *,
        delay: float | None = None,
        attributes: Attributes | None = None,
        on_event: Callable[[Event], Any] | None = None,
    ) -> Tracker:
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
        generation = listener.ensure(keys.events)
        (message_id,) = self.client.run(_core.send(keys, encoded, delay, _codec.EVENTS))
        tracker = Tracker(message_id, on_event)
        for sink, event in listener.router.register(keys.events, message_id, tracker._deliver, generation):
            sink(event)
        return tracker

    def send_batch(
        self, bodies: Iterable[Any], *, delay: float | None = None, attributes: Attributes | None = None
    ) -> list[str]:
        """Store 1-1000 messages atomically (all or nothing); returns their ids."""
        return self.client.run(_core.send(self._keys, _core.encode_batch(bodies, attributes), delay))

    def receive(
        self, max_messages: int = 1, *, visibility_timeout: float | None = None, wait_time: float = 0
    ) -> list[Message]:
        """Receive up to ``max_messages`` and hide them; wait up to ``wait_time`` s for one."""
        return self.client.drive(_core.receive_flow(self._keys, max_messages, visibility_timeout, wait_time))

    def delete(self, receipt: str, *, reply: Any = None) -> bool:
        """Delete by the latest receipt; False if stale (someone else holds it now).

        ``reply`` (str, bytes or any orjson value) goes to the message's sender
        when it was sent with ``request()`` or tracked; otherwise it is dropped.
        """
        return self.delete_batch([receipt], replies=[reply])[0]

    def delete_batch(self, receipts: Iterable[str], *, replies: Sequence[Any] | None = None) -> list[bool]:
        """Delete many; one bool per receipt. ``replies``: one per receipt, see ``delete``."""
        return self.client.run(_core.delete(self._keys, receipts, replies))

    def request(
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
        return self.client.drive(_core.request_flow(self._keys, body, attributes, delay, timeout))

    def change_visibility(self, receipt: str, seconds: float) -> bool:
        """Hide for ``seconds`` from now (0: visible now); False if the receipt is stale."""
        return self.change_visibility_batch([receipt], seconds)[0]

    def change_visibility_batch(self, receipts: Iterable[str], seconds: float) -> list[bool]:
        """change_visibility for many receipts in one call."""
        return self.client.run(_core.change_visibility(self._keys, receipts, seconds))

    def reject(self, receipt: str, reason: str = "") -> bool:
        """Move a received message to the dead-letter queue now, keeping ``reason``."""
        return (self.reject_batch([receipt], reason))[0]

    def reject_batch(self, receipts: Iterable[str], reason: str = "") -> list[bool]:
        """reject for many receipts in one call; one bool per receipt."""
        return self.client.run(_core.reject(self._keys, receipts, reason))

    def stats(self) -> QueueStats:
        """Counts (visible, in flight, delayed, dead) and counters."""
        return self.client.run(_core.stats(self._keys))

    def attributes(self) -> QueueAttributes:
        """The queue's stored attributes."""
        return self.client.run(_core.attributes(self._keys))

    def purge(self) -> int:
        """Delete every message (not the dead letters); returns how many."""
        return self.client.run(_core.purge(self._keys))

    @property
    def dead_letter_queue(self) -> Queue:
        """This queue's dead-letter queue, a queue in its own right."""
        return Queue(self.client, self._keys.dlq())

    def redrive(self) -> int:
        """Move every dead letter not in flight back here; returns how many."""
        moved = total = self.client.run(_core.redrive(self._keys))
        while moved == _core.REDRIVE_CHUNK:
            moved = self.client.run(_core.redrive(self._keys))
            total += moved
        return total
