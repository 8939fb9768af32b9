"""The sync twins of ``async_io``: what the generated sync client calls where
the asyncio client needs tasks (see there). Hand-written: keep them tiny."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis.cluster import ClusterNode, RedisCluster

if TYPE_CHECKING:
    from rqueue._protocol.operations import Call

T = TypeVar("T")

#: What ``connect`` asks the backend for.
IS_ASYNC = False


def node_pipeline(rc: RedisCluster, node: ClusterNode, calls: Sequence[Call[Any]]) -> list[Any]:
    """Run ``calls`` in one pipeline on the cluster node ``node``; each reply or error, in order."""
    pipe = rc.get_redis_connection(node).pipeline(transaction=False)
    for c in calls:
        pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
    return pipe.execute(raise_on_error=False)


def each(groups: Sequence[tuple[Any, list[int]]], on: Callable[[Any, list[int]], None]) -> None:
    """``on(node, indexes)`` for every group, one after the other (the first failure fails all).

    Measured: a thread per node costs more than it saves with nearby nodes.
    """
    for g in groups:
        on(*g)


def kept(work: T, undo: object, background: object) -> T:
    """``work``'s result: a sync call is not cancelled half way, so nothing to undo."""
    return work


def finish(background: object, fn: Callable[..., None], *args: Any) -> None:
    """``fn(*args)``: a sync caller is not cancelled half way."""
    fn(*args)
