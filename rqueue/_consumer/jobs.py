"""What a consumer holds for each message, without I/O: a ``Job``; on a FIFO queue a ``GroupJob``.

Each stands for one delivery: two are equal only if they are the same object.
"""

from __future__ import annotations

from dataclasses import dataclass

from rqueue._protocol.models import Message


@dataclass(slots=True, eq=False)
class Job:
    """A message the consumer holds: queued for a slot, then running."""

    message: Message
    queue: int
    lease_end: float
    started: bool = False


@dataclass(slots=True, eq=False)
class GroupJob(Job):
    """A message of a FIFO queue: it runs after the earlier ones of its group that the consumer
    holds, never beside them (``rqueue._consumer.groups``)."""

    #: Set when its handler failed: the later held messages of its group, given back unrun.
    released: list[GroupJob] | None = None
