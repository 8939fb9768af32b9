"""rqueue for asyncio: ``client = await rqueue.asyncio.connect(url)``."""

from .._listen import AsyncTracker
from ._client import AsyncClient, AsyncQueue, connect
from ._consumer import Consumer
from ._topic import AsyncSubscription, AsyncTopic

Client = AsyncClient
Queue = AsyncQueue

__all__ = [
    "AsyncClient",
    "AsyncQueue",
    "AsyncSubscription",
    "AsyncTopic",
    "AsyncTracker",
    "Client",
    "Consumer",
    "Queue",
    "connect",
]
