"""What the sync and asyncio clients share besides the core: error mapping,
reading a pipeline's replies, routing calls to cluster nodes, and the queue
handle's identity. No I/O here."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from redis import exceptions as rx
from redis.crc import key_slot

from . import _errors
from ._keys import QueueKeys

if TYPE_CHECKING:
    from ._core import Call

N = TypeVar("N", bound=Hashable)

#: redis-py errors that mean "the server is unreachable or failing over".
#: ClusterError: the cluster client gave up following redirections (a slot
#: moving between nodes: its multi-key scripts get TRYAGAIN until it has moved).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ClusterError,
    rx.TryAgainError,
    rx.MasterNotFoundError if hasattr(rx, "MasterNotFoundError") else rx.ConnectionError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,
)


def raise_mapped(e: BaseException, url: str, queue: str) -> NoReturn:
    """Re-raise a redis-py error as the rqueue error it means."""
    if isinstance(e, CONNECTION_ERRORS) or (  # before ResponseError: CLUSTERDOWN, TRYAGAIN, READONLY are replies
        isinstance(e, rx.RedisClusterException) and isinstance(e.__cause__, CONNECTION_ERRORS)  # no node reachable
    ):
        raise _errors.ConnectionError(f"cannot reach {url}: {e}") from e
    if isinstance(e, rx.ResponseError):
        mapped = _errors.from_lua(str(e), queue)
        if mapped is not None:
            raise mapped from None
    raise e


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


class QueueHandle:
    """Identity of a queue handle: name and keys. No I/O."""

    __slots__ = ("_keys",)

    def __init__(self, keys: QueueKeys) -> None:
        self._keys = keys

    @property
    def name(self) -> str:
        """The queue's name (``<source>:dlq`` for a dead-letter queue)."""
        return self._keys.name

    @property
    def is_dead_letter_queue(self) -> bool:
        return self._keys.is_dlq

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueueHandle) and type(other) is type(self) and other._keys == self._keys

    def __hash__(self) -> int:
        return hash(self._keys)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def policy_from(reply: Any) -> str | None:
    """maxmemory-policy out of a CONFIG GET reply (dict, or dict per node)."""
    if isinstance(reply, dict):
        for k, v in reply.items():
            if isinstance(v, dict):
                return policy_from(v)
            if (k.decode() if isinstance(k, bytes) else k) == "maxmemory-policy":
                return v.decode() if isinstance(v, bytes) else str(v)
    return None
