"""The listener's own connection for pushed replies, on redis-py's sync and asyncio APIs.

redis-py reads with a timeout differently on its two sides (``can_read`` then
``read_response`` / ``read_response(timeout=...)``), so that much is written
per side, the rest once; the listener that uses it is generated
(``rqueue._async.listener``). Never one of the pool's connections: the pool
would count it against ``max_connections`` for good, and every reconnect
would use up one more.
"""

from __future__ import annotations

import contextlib
from typing import Any

from rqueue._transport.lanes import connection_maker


class _PushConnection:
    """What the push connections of both sides share: a connection of their own
    to one server (on Cluster: node ``attempt`` modulo their number), whose
    ``connect``, ``send`` and ``disconnect`` are redis-py's (coroutine functions
    on asyncio); only reading with a timeout and interrupting differ."""

    def __init__(self, redis: Any, attempt: int) -> None:
        if hasattr(redis, "get_nodes"):  # any node hears every PUBLISH
            nodes = redis.get_nodes()
            maker = connection_maker(nodes[attempt % len(nodes)])
        else:
            maker = redis.connection_pool
        self._conn = conn = maker.connection_class(**maker.connection_kwargs)
        self.connect = conn.connect
        self.send = conn.send_command
        self.disconnect = conn.disconnect

    def interrupt(self) -> None:
        """Nothing (asyncio): closing cancels the listener's task, which ends its read."""


class AsyncPushConnection(_PushConnection):
    """An asyncio connection for pushed replies."""

    async def read(self, timeout: float) -> Any:
        """The next pushed reply, or None after ``timeout`` seconds of silence."""
        return await self._conn.read_response(timeout=timeout, push_request=True)


class PushConnection(_PushConnection):
    """A sync connection for pushed replies."""

    def read(self, timeout: float) -> Any:
        """The next pushed reply, or None after ``timeout`` seconds of silence."""
        if not self._conn.can_read(timeout):
            return None
        return self._conn.read_response(push_request=True)

    def interrupt(self) -> None:
        """Disconnect from another thread: wakes the listener thread's read."""
        with contextlib.suppress(Exception):
            self._conn.disconnect()
