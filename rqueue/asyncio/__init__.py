"""rqueue for asyncio: ``client = await rqueue.asyncio.connect(url)``."""

from rqueue._async.client import AsyncClient, AsyncQueue, connect
from rqueue._async.topic import AsyncSubscription, AsyncTopic
from rqueue._consumer.tasks import AsyncConsumer, Consumer
from rqueue._transport.listen import AsyncTracker

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
