"""The worker behind ``rqueue worker pkg.module:handler --queue NAME``: load a handler, run a consumer.

``run_worker`` is what the ``rqueue worker`` command (``rqueue/cli/traffic.py``) calls; this module
has no command line of its own. A bad import path or an unknown queue raises ``WorkerError`` with one
clear line; the command line turns it into exit code 2.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from rqueue._consumer.handlers import Router, all_async
from rqueue._consumer.metrics import Hook, PrometheusHook, start_exporter
from rqueue._consumer.threads import Consumer
from rqueue._protocol.errors import QueueDoesNotExist, RQueueError
from rqueue._sync.client import connect

#: A call that gets no reply for this long fails (and is retried), so a dead peer
#: that never closed the connection cannot hang a worker; long polls do not count.
SOCKET_TIMEOUT = 30.0


class WorkerError(RQueueError):
    """A worker cannot start: bad import path, bad handler or unknown queue."""


def load_handler(target: str) -> Callable[..., Any] | Router:
    """The object ``pkg.module:attr`` names (a handler function or a Router)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise WorkerError(f"handler must be given as pkg.module:function, got {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` would: the project being run is importable
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise WorkerError(f"cannot import module {module_name!r} for {target!r}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise WorkerError(f"module {module_name!r} has no attribute {attr!r} (from {target!r})") from None
    if not isinstance(obj, Router) and not callable(obj):
        raise WorkerError(f"{target!r} is a {type(obj).__name__}, not a handler function or rqueue.Router")
    return obj  # type: ignore[no-any-return]


def run_worker(
    target: str,
    queues: list[str],
    *,
    url: str | None,
    concurrency: int,
    batch_size: int,
    prefix: str = "rqueue",
    metrics_port: int | None = None,
    retry_base: float = 0.5,
    retry_cap: float = 60.0,
    shutdown_timeout: float = 30.0,
) -> None:
    """Consume ``queues`` with the handler ``target`` until SIGINT/SIGTERM.

    Async handlers run on an asyncio consumer, sync ones on threads.
    Raises WorkerError for a bad import path or an unknown queue.
    """
    handler = load_handler(target)
    if not queues:
        raise WorkerError("name at least one queue (--queue NAME)")
    kind = all_async(handler)
    if kind is None:
        raise WorkerError(f"{target!r} mixes sync and async handlers; use one kind")
    hooks: list[Hook] = []
    if metrics_port is not None:
        hooks.append(PrometheusHook())
        start_exporter(metrics_port)
    options: dict[str, Any] = {
        "concurrency": concurrency,
        "batch_size": batch_size,
        "retry_base": retry_base,
        "retry_cap": retry_cap,
        "shutdown_timeout": shutdown_timeout,
        "hooks": hooks,
    }
    if kind:
        asyncio.run(_consume_async(handler, queues, url, prefix, options))
    else:
        _consume(handler, queues, url, prefix, options)


def _consume(
    handler: Callable[..., Any] | Router, queues: list[str], url: str | None, prefix: str, options: dict[str, Any]
) -> None:
    """Run a thread consumer on ``queues`` (each must exist) until it stops."""
    client = connect(url, prefix=prefix, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=10)
    try:
        qs = [client.queue(name) for name in queues]
        for q in qs:
            try:
                q.attributes()
            except QueueDoesNotExist:
                raise WorkerError(f"queue {q.name!r} does not exist at {client.url}; create it first") from None
        Consumer(qs, handler, **options).run()
    finally:
        client.close()


async def _consume_async(
    handler: Callable[..., Any] | Router, queues: list[str], url: str | None, prefix: str, options: dict[str, Any]
) -> None:
    """Run an asyncio consumer on ``queues`` (each must exist) until it stops."""
    from rqueue.asyncio import Consumer as AsyncConsumer
    from rqueue.asyncio import connect as aconnect

    client = await aconnect(url, prefix=prefix, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=10)
    try:
        qs = [client.queue(name) for name in queues]
        for q in qs:
            try:
                await q.attributes()
            except QueueDoesNotExist:
                raise WorkerError(f"queue {q.name!r} does not exist at {client.url}; create it first") from None
        await AsyncConsumer(qs, handler, **options).run()
    finally:
        await client.aclose()
