"""rqueue for asyncio: ``client = await rqueue.asyncio.connect(url)``."""

from rqueue._async.client import AsyncClient, AsyncQueue, connect
from rqueue._async.listener import AsyncTracker
from rqueue._async.topic import AsyncSubscription, AsyncTopic
from rqueue._consumer.tasks import AsyncConsumer, Consumer

Client = AsyncClient
Queue = AsyncQueue

__all__ = [
    "AsyncClient",
    "AsyncConsumer",
    "AsyncQueue",
    "AsyncSubscription",
    "AsyncTopic",
    "AsyncTracker",
    "Client",
    "Consumer",
    "Queue",
    "connect",
]
