"""rqueue for asyncio: ``client = await rqueue.asyncio.connect(url)``."""

from .._listen import AsyncTracker
from ._client import AsyncClient, AsyncQueue, connect

Client = AsyncClient
Queue = AsyncQueue

__all__ = ["AsyncClient", "AsyncQueue", "AsyncTracker", "Client", "Queue", "connect"]
