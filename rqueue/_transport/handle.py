"""The identity of a queue handle (name, keys, equality), shared by the
sync and asyncio handles. No I/O."""

from __future__ import annotations

from rqueue._protocol.keys import QueueKeys


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
