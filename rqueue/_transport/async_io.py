"""The few things asyncio does its own way, for the asyncio client (the one
source the sync client is generated from); ``sync_io`` is the sync twin, the
same functions doing the plain thing. Hand-written twins: keep them tiny."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster

from rqueue._protocol import errors as _errors
from rqueue._transport.lane_async import AsyncBackground

if TYPE_CHECKING:
    from rqueue._protocol.operations import Call

T = TypeVar("T")

#: What ``connect`` asks the backend for.
IS_ASYNC = True


async def node_pipeline(rc: RedisCluster, node: ClusterNode, calls: Sequence[Call[Any]]) -> list[Any]:
    """Run ``calls`` in one pipeline on the cluster node ``node``; each reply or error, in order."""
    cmds = [PipelineCommand(i, "EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args) for i, c in enumerate(calls)]
    await node.execute_pipeline(cmds)
    return [c.result for c in cmds]


async def each(groups: Sequence[tuple[Any, list[int]]], on: Callable[[Any, list[int]], Awaitable[None]]) -> None:
    """``on(node, indexes)`` for every group, concurrently; a failure of one fails all
    (an unreachable node's ``ConnectionError`` first)."""
    if len(groups) == 1:
        await on(*groups[0])
    elif groups:
        done = await asyncio.gather(*(on(*g) for g in groups), return_exceptions=True)
        failures = [f for f in done if isinstance(f, BaseException)]
        if failures:
            raise next((f for f in failures if isinstance(f, _errors.ConnectionError)), failures[0])


async def kept(work: Coroutine[Any, Any, T], undo: Callable[[T], Awaitable[None]], background: AsyncBackground) -> T:
    """Await ``work``; cancelled meanwhile, let it finish and run ``undo`` on its result
    (a receive's messages become visible again), then raise the CancelledError."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await finish(background, _undo_after, task, undo)
        raise


async def _undo_after(task: asyncio.Future[T], undo: Callable[[T], Awaitable[None]]) -> None:
    try:
        result = await task
    except Exception:  # noqa: BLE001 - it failed: nothing to undo
        return
    await undo(result)


async def finish(background: AsyncBackground, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    """Run ``fn(*args)`` to its end even if the caller is cancelled again (it then goes
    on in ``background``, which the waiter's ``aclose`` waits for)."""
    job = background.run(fn(*args))
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(job)
