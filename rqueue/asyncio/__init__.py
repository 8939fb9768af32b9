"""rqueue for asyncio: ``client = await rqueue.asyncio.connect(url)``."""

from ._client import AsyncClient, AsyncQueue, connect
from ._consumer import Consumer

Client = AsyncClient
Queue = AsyncQueue

__all__ = ["AsyncClient", "AsyncQueue", "Client", "Consumer", "Queue", "connect"]
