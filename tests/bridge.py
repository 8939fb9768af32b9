"""Run the asyncio client under the sync test bodies.

``AsyncBridge`` wraps an ``AsyncClient``/``AsyncQueue``: each coroutine
method runs for real on an event loop in a background thread, and its result
(wrapped again if it is an async handle) comes back to the caller. So one
test body exercises both clients.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import rqueue.asyncio as rqa


class LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _wrap(value: Any, loop: LoopThread) -> Any:
    if isinstance(value, rqa.AsyncQueue | rqa.AsyncClient | rqa.AsyncTracker | rqa.AsyncTopic):
        return AsyncBridge(value, loop)
    return value


class AsyncBridge:
    """Sync facade over an asyncio object; attribute access is passed through."""

    def __init__(self, target: Any, loop: LoopThread) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_loop", loop)

    @property
    def wrapped(self) -> Any:
        return self._target

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if asyncio.iscoroutinefunction(value):
            fn: Callable[..., Coroutine[Any, Any, Any]] = value

            def call(*args: Any, **kwargs: Any) -> Any:
                return _wrap(self._loop.run(fn(*args, **kwargs)), self._loop)

            return call
        if callable(value) and not isinstance(value, type):

            def plain(*args: Any, **kwargs: Any) -> Any:
                return _wrap(value(*args, **kwargs), self._loop)

            return plain
        return _wrap(value, self._loop)

    def close(self) -> None:
        self._loop.run(self._target.aclose())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncBridge) and other._target == self._target

    def __hash__(self) -> int:
        return hash(self._target)
