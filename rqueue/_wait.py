"""Waiting for a queue's wake-up token with millisecond precision.

A server times out a blocked BLPOP only on its periodic tick (100 ms at the
default ``hz 10``), far too coarse for "return as soon as a delayed message
becomes visible". So a waiter takes its own connection from the pool (other
calls of the client are never stalled), sends ``CLIENT ID`` and ``BLPOP``
together, waits on the socket for exactly its timeout, and if nothing came
releases itself with ``CLIENT UNBLOCK`` from another connection. The server
timeout stays as a backstop where ACLs forbid CLIENT UNBLOCK.

``pop`` is the same wait returning the popped value: a request's sender
blocks on its reply key this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: The server is gone: handing a token on would only wait on it too.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _server_timeout(timeout: float) -> float:
    # 0 would mean "forever"; the server counts whole milliseconds.
    return max(0.001, math.ceil(timeout * 1000) / 1000)


class SyncWaiter:
    """Blocking waits for a sync ``Redis`` or ``RedisCluster``."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._cluster = hasattr(client, "get_node_from_key")

    def _node(self, key: str) -> Any:
        if self._cluster:
            return self._client.get_node_from_key(key).redis_connection
        return self._client

    def wait(self, key: str, timeout: float, *, on_block: Callable[[Callable[[], None]], None] | None = None) -> bool:
        """True when a token was popped, False on timeout (or when ended early).

        ``on_block`` is called once the wait is blocked with a function that
        ends it early from another thread (a stopping consumer uses it).
        """
        try:
            return self._blpop(key, timeout, on_block) is not None
        except BaseException as e:
            if not isinstance(e, _UNREACHABLE):  # interrupted: the token may be ours
                self.hand_on(key)
            raise

    def hand_on(self, key: str) -> None:
        """Push a wake-up token for another waiter (best effort).

        A waiter that leaves abnormally, or wakes when it will not receive,
        may hold the token a send pushed; without this the other waiters would
        sleep on while a message is visible. At worst it is one spurious wake-up.
        """
        with contextlib.suppress(Exception):
            self._client.rpush(key, 1)
            self._client.ltrim(key, 0, 0)

    def pop(self, key: str, timeout: float) -> bytes | None:
        """The value popped from ``key``, or None on timeout."""
        reply = self._blpop(key, timeout, None)
        return reply[1] if isinstance(reply, list) else None

    def _blpop(self, key: str, timeout: float, on_block: Callable[[Callable[[], None]], None] | None) -> Any:
        node = self._node(key)
        pool = node.connection_pool
        conn = pool.get_connection()
        healthy = False
        try:
            conn.send_packed_command(conn.pack_commands([("CLIENT", "ID"), ("BLPOP", key, _server_timeout(timeout))]))
            client_id = conn.read_response()
            if on_block is not None:

                def unblock() -> None:
                    with contextlib.suppress(Exception):
                        node.execute_command("CLIENT", "UNBLOCK", client_id)

                on_block(unblock)
            if not conn.can_read(timeout):
                with contextlib.suppress(ResponseError):
                    node.execute_command("CLIENT", "UNBLOCK", client_id)
            try:
                reply = conn.read_response()
            except ResponseError:  # MOVED/ASK during a resharding: look again
                reply = True
            healthy = True
            return reply
        finally:
            if not healthy:
                conn.disconnect()
            pool.release(conn)


class AsyncWaiter:
    """Blocking waits for an asyncio ``Redis`` or ``RedisCluster``."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._cluster = hasattr(client, "get_node_from_key")
        self._handing_on: set[asyncio.Future[None]] = set()

    async def wait(self, key: str, timeout: float) -> bool:
        """True when a token was popped, False on timeout."""
        try:
            return await self._blpop(key, timeout) is not None
        except BaseException as e:
            if not isinstance(e, _UNREACHABLE):  # cancelled: the token may be ours
                # In the background: a cancelled caller must not wait on it.
                task = asyncio.ensure_future(self.hand_on(key))
                self._handing_on.add(task)
                task.add_done_callback(self._handing_on.discard)
            raise

    async def settle(self, timeout: float = 1.0) -> None:
        """Let hand-ons still under way finish before the client closes its connections.

        Run after the close they would open connections again (and leak them).
        """
        if self._handing_on:
            _done, pending = await asyncio.wait(set(self._handing_on), timeout=timeout)
            for task in pending:
                task.cancel()

    async def hand_on(self, key: str) -> None:
        """Push a wake-up token for another waiter (best effort; see ``SyncWaiter.hand_on``)."""
        with contextlib.suppress(Exception):
            await self._client.rpush(key, 1)
            await self._client.ltrim(key, 0, 0)

    async def pop(self, key: str, timeout: float) -> bytes | None:
        """The value popped from ``key``, or None on timeout."""
        reply = await self._blpop(key, timeout)
        return reply[1] if isinstance(reply, list) else None

    async def _blpop(self, key: str, timeout: float) -> Any:
        if self._cluster:
            node = self._client.get_node_from_key(key)
            conn = node.acquire_connection()
            unblock = node.execute_command
        else:
            node = None
            conn = await self._client.connection_pool.get_connection()
            unblock = self._client.execute_command
        healthy = False
        reader: asyncio.Future[Any] | None = None
        try:
            await conn.send_packed_command(
                conn.pack_commands([("CLIENT", "ID"), ("BLPOP", key, _server_timeout(timeout))])
            )
            client_id = await conn.read_response()
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                # Cancelled meanwhile, but the cancellation was swallowed on the way (Python 3.11's
                # wait_for does when the send it guards has just finished): honour it, or this
                # wait would run its whole timeout (a stopping consumer would hang that long).
                raise asyncio.CancelledError
            # Our own deadline, not the client's socket_timeout, bounds this read.
            reader = asyncio.ensure_future(conn.read_response(timeout=timeout + 5.0))
            done, _ = await asyncio.wait({reader}, timeout=timeout)
            if not done:
                with contextlib.suppress(ResponseError):
                    await unblock("CLIENT", "UNBLOCK", client_id)
            try:
                reply = await reader
            except ResponseError:
                reply = True
            healthy = True
            return reply
        finally:
            if not healthy:
                if reader is not None and not reader.done():
                    reader.cancel()
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            if node is not None:
                node.release(conn)
            else:
                await self._client.connection_pool.release(conn)
