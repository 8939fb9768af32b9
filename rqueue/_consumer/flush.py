"""Work for the queue, without I/O: acks (with replies), retries, dead letters, releases, unreceives.

``Flush`` collects what a consumer's finished and released messages mean for
the queue and builds the script calls that carry it out (one pipeline);
``flush_problems`` reads their results back into log lines.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rqueue._consumer.core import clean
from rqueue._protocol import codec as _codec
from rqueue._protocol import operations as _core
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.operations import Call

log = logging.getLogger("rqueue.consumer")


@dataclass(slots=True)
class Flush:
    """Work for the queue: acks (with the handlers' replies), retries, dead letters, releases
    (stopping: unstarted messages visible at once) and unreceives (FIFO: the held messages
    behind a failed one of their group, given back unrun, their receive not counted)."""

    deletes: dict[int, list[tuple[str, Any]]] = field(default_factory=dict)
    retries: list[tuple[int, str, float]] = field(default_factory=list)
    rejects: list[tuple[int, str, str]] = field(default_factory=list)
    releases: dict[int, list[str]] = field(default_factory=dict)
    unreceives: dict[int, list[str]] = field(default_factory=dict)
    #: What each call of the last ``calls()`` carries, in order: (label, queue index).
    plan: list[tuple[str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.deletes or self.retries or self.rejects or self.releases or self.unreceives)

    def calls(self, keys: Sequence[QueueKeys]) -> list[Call[Any]]:
        """The script calls that carry this flush out (one pipeline). Never raises.

        Acks go out here and only here; each carries its handler's return
        value (``reply``) so replies to waiting senders can ride along (as
        None when it cannot be encoded). Batches over the scripts' limit are
        split. An item no call can be built for is logged and left out of
        this flush (its message comes back after its lease): one bad item
        never holds back the others.
        """
        out: list[Call[Any]] = []
        plan: list[tuple[str, int]] = []
        self.plan = plan
        for qi, acks in list(self.deletes.items()):
            kept = _batches(out, plan, "acknowledging", qi, acks, functools.partial(_delete, keys[qi]))
            if kept is not acks:
                self._keep(self.deletes, qi, kept)
        if self.retries:
            self.retries = [
                i for i in self.retries if _one(out, plan, "retry", i[0], i[1], functools.partial(_retry, keys, i))
            ]
        if self.rejects:
            self.rejects = [
                i
                for i in self.rejects
                if _one(out, plan, "dead-letter", i[0], i[1], functools.partial(_reject, keys, i))
            ]
        for qi, receipts in list(self.releases.items()):
            kept = _batches(out, plan, "release", qi, receipts, functools.partial(_release, keys[qi]))
            if kept is not receipts:
                self._keep(self.releases, qi, kept)
        for qi, receipts in list(self.unreceives.items()):
            kept = _batches(out, plan, "unreceive", qi, receipts, functools.partial(_core.unreceive, keys[qi]))
            if kept is not receipts:
                self._keep(self.unreceives, qi, kept)
        return out

    @staticmethod
    def _keep(groups: dict[int, list[Any]], qi: int, kept: list[Any]) -> None:
        if kept:
            groups[qi] = kept
        else:
            del groups[qi]

    def merge(self, other: Flush) -> None:
        """Put back work that could not be sent (connection lost), keeping order."""
        for qi, acks in other.deletes.items():
            self.deletes[qi] = acks + self.deletes.get(qi, [])
        self.retries[:0] = other.retries
        self.rejects[:0] = other.rejects
        for qi, receipts in other.releases.items():
            self.releases[qi] = receipts + self.releases.get(qi, [])
        for qi, receipts in other.unreceives.items():
            self.unreceives[qi] = receipts + self.unreceives.get(qi, [])


def _delete(keys: QueueKeys, acks: list[tuple[str, Any]]) -> Call[Any]:
    """Acks with their replies (None for a tracked reply that cannot be encoded)."""
    return _core.delete(keys, [r for r, _ in acks], [_sendable(r, reply) for r, reply in acks])


def _release(keys: QueueKeys, receipts: list[str]) -> Call[Any]:
    return _core.change_visibility(keys, receipts, 0)


def _retry(keys: Sequence[QueueKeys], item: tuple[int, str, float]) -> Call[Any]:
    qi, receipt, seconds = item
    return _core.change_visibility(keys[qi], [receipt], round(seconds, 3))


def _reject(keys: Sequence[QueueKeys], item: tuple[int, str, str]) -> Call[Any]:
    qi, receipt, reason = item
    return _core.reject(keys[qi], [receipt], reason)


_VERB = {
    "acknowledging": "acknowledge",
    "retry": "retry",
    "dead-letter": "dead-letter",
    "release": "release",
    "unreceive": "give back",
}
#: Calls whose False replies are no news: a message whose lease ended came back by itself.
_QUIET = frozenset({"release", "unreceive"})


def _one(
    out: list[Call[Any]],
    plan: list[tuple[str, int]],
    label: str,
    qi: int,
    receipt: str | None,
    make: Callable[[], Call[Any]],
) -> bool:
    """Append the call ``make()`` builds; False (logged if ``receipt`` names the item) if it cannot."""
    try:
        call = make()
    except Exception as e:  # noqa: BLE001 - one bad item must not hold back the rest
        if receipt is not None:
            log.error("cannot %s message %s (%s); left out, it comes back after its lease", _VERB[label], receipt, e)
        return False
    out.append(call)
    plan.append((label, qi))
    return True


def _batches(
    out: list[Call[Any]],
    plan: list[tuple[str, int]],
    label: str,
    qi: int,
    items: list[Any],
    make: Callable[[list[Any]], Call[Any]],
) -> list[Any]:
    """Calls for ``items`` in batches the scripts take; a batch that cannot be built goes item by item.

    Returns the items the calls carry: ``items`` itself in the usual case (one good batch).
    """
    if len(items) <= _core.MAX_BATCH and _one(out, plan, label, qi, None, functools.partial(make, items)):
        return items
    kept: list[Any] = []
    for i in range(0, len(items), _core.MAX_BATCH):
        chunk = items[i : i + _core.MAX_BATCH]
        if len(chunk) < len(items) and _one(out, plan, label, qi, None, functools.partial(make, chunk)):
            kept += chunk
            continue
        for item in chunk:
            receipt = item if isinstance(item, str) else item[0]
            if _one(out, plan, label, qi, receipt, functools.partial(make, [item])):
                kept.append(item)
    return kept


def _sendable(receipt: str, reply: Any) -> Any:
    """The reply for a tracked message (receipt ending r/e) if it can be encoded, else None.

    Untracked receipts never send their reply, so nothing is checked for them.
    """
    if reply is None or not receipt.endswith(("r", "e")):
        return reply
    try:
        _codec.encode_body(reply)
    except Exception as e:  # noqa: BLE001 - a lone surrogate, NaN, an object orjson refuses, ...
        log.warning("handler reply for %s cannot be sent (%s); the sender gets None", receipt, clean(str(e)))
        return None
    return reply


def flush_problems(flush: Flush, results: Sequence[Any], names: Sequence[str]) -> list[str]:
    """Log lines for a flush whose results show lost leases or errors (usually none)."""
    out: list[str] = []
    late = 0
    for (label, qi), r in zip(flush.plan, results, strict=True):
        if isinstance(r, Exception):
            out.append(f"queue {names[qi]!r}: {label} failed: {r}")
        elif label not in _QUIET:
            late += r.count(False)
    if late:
        out.append(
            f"{late} message(s) finished after their lease ended (visibility timeout passed "
            "without a heartbeat); another consumer may process them again"
        )
    return out
