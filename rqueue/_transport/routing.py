"""Pipelines on Redis Cluster: which node runs which calls of a batch, and
what each reply means (run again singly, or fail the batch). No I/O."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis import exceptions as rx
from redis.crc import key_slot

from rqueue._protocol import errors as _errors
from rqueue._transport.errors import CONNECTION_ERRORS, raise_mapped

if TYPE_CHECKING:
    from rqueue._protocol.operations import Call

N = TypeVar("N", bound=Hashable)

#: Replies after which a call runs again on its own through ``run()``: NOSCRIPT
#: (``run`` loads the script); MOVED, ASK and TRYAGAIN (a slot is moving: the
#: cluster client follows or retries). None of them ran the script.
_AGAIN = (rx.NoScriptError, rx.AskError, rx.TryAgainError)  # MovedError is an AskError


def unreachable(replies: Sequence[Any]) -> BaseException | None:
    """The first reply saying the node cannot serve (CLUSTERDOWN, LOADING...), if any."""
    for r in replies:
        if isinstance(r, CONNECTION_ERRORS) and not isinstance(r, rx.TryAgainError):
            return r
    return None


def settle(calls: Sequence[Call[Any]], replies: Sequence[Any], url: str) -> tuple[list[Any], list[int], bool]:
    """Parse a pipeline's replies: ``(results, again, moved)``.

    ``results`` holds each parsed reply or the rqueue exception its call met;
    the calls at the indexes ``again`` must run again singly (their slot in
    ``results`` is None), and ``moved`` says a slot has a new owner (refresh
    the slot map first). A reply meaning "server unreachable" raises
    ``rqueue.ConnectionError`` for the whole batch.
    """
    out: list[Any] = []
    again: list[int] = []
    moved = False
    for call, reply in zip(calls, replies, strict=True):
        try:
            if isinstance(reply, Exception):
                if isinstance(reply, _AGAIN):
                    again.append(len(out))
                    moved = moved or isinstance(reply, rx.MovedError)
                    out.append(None)
                    continue
                raise_mapped(reply, url, call.queue)
            out.append(call.parse(reply))
        except _errors.ConnectionError:
            raise
        except Exception as e:  # noqa: BLE001
            out.append(e)
    return out, again, moved


def slot_of(call: Call[Any]) -> int:
    """The cluster hash slot of a call (all keys of one call share its hash tag)."""
    return key_slot(call.keys[0].encode()) if call.keys else 0


class Routing:
    """A cluster client's view of where to send a batch of calls, kept between batches.

    ``plan`` groups the calls by the node owning their slot (one pipeline per
    node, order kept within each). A node whose pipeline failed is *suspect*:
    its pipeline goes first next time, on its own, so while it is down a batch
    fails before anything ran on the healthy nodes (a consumer does not take
    messages it then drops). After a failure the slot map is *stale*: the
    client refreshes it before the next batch (a replica may have taken over).
    """

    __slots__ = ("_suspects", "stale")

    def __init__(self) -> None:
        self.stale = False
        self._suspects: set[Hashable] = set()

    def plan(self, calls: Sequence[Call[Any]], node_of: Callable[[int], N]) -> tuple[list[tuple[N, list[int]]], int]:
        """``(groups, first)``: (node, call indexes) per node; the first ``first`` groups are suspect."""
        groups: dict[N, list[int]] = {}
        for i, call in enumerate(calls):
            node = node_of(slot_of(call))
            idx = groups.get(node)
            if idx is None:
                groups[node] = [i]
            else:
                idx.append(i)
        items = list(groups.items())
        if not self._suspects:
            return items, 0
        suspect = [g for g in items if g[0] in self._suspects]
        return suspect + [g for g in items if g[0] not in self._suspects], len(suspect)

    def failed(self, node: Hashable) -> None:
        """``node`` could not be reached (or answered that the cluster is down)."""
        self._suspects.add(node)
        self.stale = True

    def answered(self, node: Hashable) -> None:
        """``node`` ran its pipeline."""
        if self._suspects:
            self._suspects.discard(node)
