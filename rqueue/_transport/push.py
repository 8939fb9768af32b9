"""The listener's own connection for pushed replies, on redis-py's sync and asyncio APIs.

redis-py reads with a timeout differently on its two sides (``can_read`` then
``read_response`` / ``read_response(timeout=...)``) and builds connections
from different objects, so this small twin is written by hand; the listener
that uses it is generated (``rqueue._async.listener``). Never one of the
pool's connections: the pool would count it against ``max_connections`` for
good, and every reconnect would use up one more.
"""

from __future__ import annotations

import contextlib
from typing import Any


def _node(redis: Any, attempt: int) -> Any:
    """On Cluster the node for this attempt (any node hears every PUBLISH), else None."""
    if not hasattr(redis, "get_nodes"):
        return None
    nodes = redis.get_nodes()
    return nodes[attempt % len(nodes)]


class AsyncPushConnection:
    """An asyncio connection to one server (on Cluster: node ``attempt`` modulo their number)."""

    def __init__(self, redis: Any, attempt: int) -> None:
        node = _node(redis, attempt)
        if node is None:
            self._conn: Any = redis.connection_pool.make_connection()
        else:
            self._conn = node.connection_class(**node.connection_kwargs)

    async def connect(self) -> None:
        await self._conn.connect()

    async def send(self, *args: str) -> None:
        await self._conn.send_command(*args)

    async def read(self, timeout: float) -> Any:
        """The next pushed reply, or None after ``timeout`` seconds of silence."""
        return await self._conn.read_response(timeout=timeout, push_request=True)

    def interrupt(self) -> None:
        """Nothing: closing cancels the listener's task, which ends its read."""

    async def disconnect(self) -> None:
        await self._conn.disconnect()


class PushConnection:
    """A sync connection to one server (on Cluster: node ``attempt`` modulo their number)."""

    def __init__(self, redis: Any, attempt: int) -> None:
        node = _node(redis, attempt)
        pool = redis.connection_pool if node is None else node.redis_connection.connection_pool
        self._conn = pool.connection_class(**pool.connection_kwargs)

    def connect(self) -> None:
        self._conn.connect()

    def send(self, *args: str) -> None:
        self._conn.send_command(*args)

    def read(self, timeout: float) -> Any:
        """The next pushed reply, or None after ``timeout`` seconds of silence."""
        if not self._conn.can_read(timeout):
            return None
        return self._conn.read_response(push_request=True)

    def interrupt(self) -> None:
        """Disconnect from another thread: wakes the listener thread's read."""
        with contextlib.suppress(Exception):
            self._conn.disconnect()

    def disconnect(self) -> None:
        self._conn.disconnect()
