"""Queue handles: ``client.queue(name)``.

Written once for asyncio; ``scripts/unasync`` generates the sync handles.

The handle knows its client only as ``AsyncCalls`` (what it runs calls and
flows with), so this module needs nothing of ``client`` and no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from rqueue._async.listener import AsyncListener, AsyncTracker
from rqueue._protocol import codec as _codec
from rqueue._protocol import operations as _core
from rqueue._protocol.codec import Attributes
from rqueue._protocol.errors import InvalidParameter
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.models import Event, Message, QueueAttributes, QueueStats
from rqueue._protocol.operations import Call, Op
from rqueue._transport.handle import QueueHandle

T = TypeVar("T")


class AsyncCalls(Protocol):
    """What a queue or topic handle needs of its client (``AsyncClient``)."""

    async def run(self, call: Call[T]) -> T: ...

    async def drive(self, flow: Generator[Op, Any, T]) -> T: ...

    def listener(self) -> AsyncListener: ...


class AsyncQueue(QueueHandle):
    """A handle to one queue; its methods mirror SQS."""

    __slots__ = ("client",)

    def __init__(self, client: AsyncCalls, keys: QueueKeys) -> None:
        super().__init__(keys)
        self.client = client

    async def send(
        self,
        body: Any,
        *,
        delay: float | None = None,
        attributes: Attributes | None = None,
        on_event: Callable[[Event], Any] | None = None,
        group: str | None = None,
    ) -> str:
        """Store one message; returns its id. ``delay`` None uses the queue's.

        With ``on_event``, the message is tracked: ``on_event(Event)`` runs in
        the client's listener for each of its events (see ``send_tracked``).
        A FIFO queue needs ``group`` (1-128 characters) and takes no ``delay``.
        """
        if on_event is not None:
            tracker = await self.send_tracked(body, delay=delay, attributes=attributes, on_event=on_event, group=group)
            return tracker.message_id
        return (await self.send_batch([body], delay=delay, attributes=attributes, group=group))[0]

    async def send_tracked(
        self,
        body: Any,
        *,
        delay: float | None = None,
        attributes: Attributes | None = None,
        on_event: Callable[[Event], Any] | None = None,
        group: str | None = None,
    ) -> AsyncTracker:
        """Store one message whose events (received, processed with the reply,
        dead_lettered, expired) are published; returns its tracker.

        The client's listener subscribes to this queue's events before the
        send, so no event is lost; untracked sends publish nothing.
        """
        keys = self._keys
        if keys.is_dlq:
            raise InvalidParameter(f"{keys.name!r} is a dead-letter queue; track messages of its source queue")
        encoded = _core.encode_batch([body], attributes)
        listener = self.client.listener()
        generation = await listener.ensure(keys.events)
        (message_id,) = await self.client.run(_core.send(keys, encoded, delay, _codec.EVENTS, group))
        tracker = AsyncTracker(message_id, on_event)
        for sink, event in listener.router.register(keys.events, message_id, tracker._deliver, generation):
            sink(event)
        return tracker

    async def send_batch(
        self,
        bodies: Iterable[Any],
        *,
        delay: float | None = None,
        attributes: Attributes | None = None,
        group: str | Sequence[str] | None = None,
    ) -> list[str]:
        """Store 1-1000 messages atomically (all or nothing); returns their ids. A FIFO queue
        needs ``group``: one for the batch, or a list of one per body."""
        return await self.client.run(_core.send(self._keys, _core.encode_batch(bodies, attributes), delay, "", group))

    async def receive(
        self, max_messages: int = 1, *, visibility_timeout: float | None = None, wait_time: float = 0
    ) -> list[Message]:
        """Receive up to ``max_messages`` and hide them; wait up to ``wait_time`` s for one."""
        return await self.client.drive(_core.receive_flow(self._keys, max_messages, visibility_timeout, wait_time))

    async def delete(self, receipt: str, *, reply: Any = None) -> bool:
        """Delete by the latest receipt; False if stale (someone else holds it now).

        ``reply`` (str, bytes or any orjson value) goes to the message's sender
        when it was sent with ``request()`` or tracked; otherwise it is dropped.
        """
        return (await self.delete_batch([receipt], replies=[reply]))[0]

    async def delete_batch(self, receipts: Iterable[str], *, replies: Sequence[Any] | None = None) -> list[bool]:
        """Delete many; one bool per receipt. ``replies``: one per receipt, see ``delete``."""
        return await self.client.run(_core.delete(self._keys, receipts, replies))

    async def request(
        self,
        body: Any,
        *,
        timeout: float,
        attributes: Attributes | None = None,
        delay: float | None = None,
        group: str | None = None,
    ) -> Any:
        """Send ``body`` and block until a consumer deletes it; return its reply.

        Raises RequestTimeout (a TimeoutError) after ``timeout`` seconds, having
        withdrawn the message if no consumer had received it yet, and
        MessageDeadLettered if it was dead-lettered meanwhile.
        """
        return await self.client.drive(_core.request_flow(self._keys, body, attributes, delay, timeout, group))

    async def change_visibility(self, receipt: str, seconds: float) -> bool:
        """Hide for ``seconds`` from now (0: visible now); False if the receipt is stale."""
        return (await self.change_visibility_batch([receipt], seconds))[0]

    async def change_visibility_batch(self, receipts: Iterable[str], seconds: float) -> list[bool]:
        """change_visibility for many receipts in one call."""
        return await self.client.run(_core.change_visibility(self._keys, receipts, seconds))

    async def reject(self, receipt: str, reason: str = "") -> bool:
        """Move a received message to the dead-letter queue now, keeping ``reason``."""
        return (await self.reject_batch([receipt], reason))[0]

    async def reject_batch(self, receipts: Iterable[str], reason: str = "") -> list[bool]:
        """reject for many receipts in one call; one bool per receipt."""
        return await self.client.run(_core.reject(self._keys, receipts, reason))

    async def stats(self) -> QueueStats:
        """Counts (visible, in flight, delayed, dead) and counters."""
        return await self.client.run(_core.stats(self._keys))

    async def attributes(self) -> QueueAttributes:
        """The queue's stored attributes."""
        return await self.client.run(_core.attributes(self._keys))

    async def set_attributes(self, **changes: Any) -> QueueAttributes:
        """Change attributes (any of QueueAttributes' but ``fifo``) for every host at once and
        return the new set. Raises InvalidParameter, changing nothing, on an unknown name or
        a value out of range."""
        return await self.client.run(_core.set_attributes(self._keys, changes))

    async def pause(self) -> None:
        """Stop handing out messages, on every host: receives return nothing (long polls keep
        waiting) while sends are still accepted. ``stats().paused`` tells."""
        await self.client.run(_core.set_paused(self._keys, True))

    async def resume(self) -> None:
        """Hand out messages again after ``pause()``; waiting receivers wake at once."""
        await self.client.run(_core.set_paused(self._keys, False))

    async def purge(self) -> int:
        """Delete every message (not the dead letters); returns how many."""
        return await self.client.run(_core.purge(self._keys))

    @property
    def dead_letter_queue(self) -> AsyncQueue:
        """This queue's dead-letter queue, a queue in its own right."""
        return AsyncQueue(self.client, self._keys.dlq())

    async def redrive(self) -> int:
        """Move every dead letter not in flight back here; returns how many."""
        return await self.client.drive(_core.redrive_flow(self._keys))
