"""Topics: ``client.topic(name)``.

Written once for asyncio; ``scripts/unasync`` generates the sync topics.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rqueue._async.queue import AsyncCalls, AsyncQueue
from rqueue._protocol import topic_operations as _topics
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys, TopicKeys
from rqueue._protocol.models import SubscriptionInfo
from rqueue._protocol.operations import DEFAULT_RETENTION


class AsyncSubscription(AsyncQueue):
    """A subscription of a topic: a queue with all of ``Queue``'s methods.

    A consumer of a subscription calls ``refresh()`` more often than its TTL,
    or it is removed with its backlog.
    """

    __slots__ = ("_options", "topic")

    def __init__(self, topic: AsyncTopic, keys: QueueKeys, options: dict[str, Any] | None) -> None:
        super().__init__(topic.client, keys)
        self.topic = topic
        self._options = options

    @property
    def subscription_name(self) -> str:
        return self.name.split("/", 1)[1]

    async def refresh(self) -> bool:
        """Push the expiry to now + ttl (re-creating it if it expired); True if it joined anew."""
        if self._options is None:
            raise InvalidParameter(
                f"subscription {self.name!r} was not made by subscribe(); call "
                f"topic.subscribe({self.subscription_name!r}, ...) to refresh it"
            )
        return await self.client.drive(
            _topics.subscribe_flow(self.topic._keys, self.subscription_name, refresh=True, **self._options)
        )


class AsyncTopic:
    """A broadcast topic: every message published goes to every live subscription."""

    __slots__ = ("_cache", "_keys", "client")

    def __init__(self, client: AsyncCalls, keys: TopicKeys) -> None:
        self.client = client
        self._keys = keys
        self._cache = _topics.MemberCache()

    @property
    def name(self) -> str:
        return self._keys.name

    def __repr__(self) -> str:
        return f"<AsyncTopic {self.name!r}>"  # unasync: return f"<Topic {self.name!r}>"

    async def subscribe(
        self,
        name: str,
        *,
        ttl: float = _topics.DEFAULT_TTL,
        visibility_timeout: float = 30,
        delay: float = 0,
        retention: float = DEFAULT_RETENTION,
        max_message_size: int = 256 * 1024,
        max_receive_count: int | None = None,
        deduplication_window: float = 300,
        content_based_deduplication: bool = False,
        rate_limit: float | None = None,
        max_in_flight: int | None = None,
    ) -> AsyncSubscription:
        """Create the subscription ``name``, or refresh it (same attributes), for ``ttl`` seconds.

        It receives what is published from now on. Raises QueueAlreadyExists
        when it exists with other attributes.
        """
        options: dict[str, Any] = {
            "ttl": ttl,
            "visibility_timeout": visibility_timeout,
            "delay": delay,
            "retention": retention,
            "max_message_size": max_message_size,
            "max_receive_count": max_receive_count,
            "deduplication_window": deduplication_window,
            "content_based_deduplication": content_based_deduplication,
            "rate_limit": rate_limit,
            "max_in_flight": max_in_flight,
        }
        await self.client.drive(_topics.subscribe_flow(self._keys, name, **options))
        return AsyncSubscription(self, self._keys.subscription(name), options)

    def subscription(self, name: str) -> AsyncSubscription:
        """A handle to an existing subscription; no round trip."""
        return AsyncSubscription(self, self._keys.subscription(name), None)

    async def unsubscribe(self, name: str) -> bool:
        """Remove a subscription with its messages; False if there was none."""
        removed = await self.client.run(_topics.unsubscribe(self._keys, [name], only_expired=False))
        return bool(removed)

    async def publish(self, body: Any) -> str:
        """Copy one message into every live subscription; returns its id (the same in each)."""
        return (await self.publish_batch([body]))[0]

    async def publish_batch(self, bodies: Iterable[Any]) -> list[str]:
        """Copy 1-1000 messages into every live subscription atomically; returns their ids."""
        return await self.client.drive(_topics.publish_flow(self._keys, self._cache, bodies))

    async def subscriptions(self) -> list[SubscriptionInfo]:
        """The live subscriptions, with their depth."""
        return await self.client.drive(_topics.subscriptions_flow(self._keys))
