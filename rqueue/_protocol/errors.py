"""rqueue's exceptions, and the one place where Lua error codes become them."""

from __future__ import annotations

import builtins


class RQueueError(Exception):
    """Base of every error rqueue raises."""


class QueueDoesNotExist(RQueueError):
    """The queue was never created, or was deleted."""


class QueueAlreadyExists(RQueueError):
    """A queue of that name exists with other attributes."""


class InvalidQueueName(RQueueError, ValueError):
    """A queue name outside 1-80 characters of [A-Za-z0-9_-]."""


class MessageTooLarge(RQueueError, ValueError):
    """Encoded body plus attributes exceed the queue's max_message_size."""


class InvalidParameter(RQueueError, ValueError):
    """A number out of range, a bad batch, an unserialisable body or a bad receipt."""


class ConnectionError(RQueueError, builtins.ConnectionError):
    """The server could not be reached; the message names the URL, password masked."""


class AuthenticationError(ConnectionError):
    """The server refused the URL's user name or password, or needs one."""


class ServerError(RQueueError):
    """The server refused a command for a reason of its own; the message says what to change."""


class ServerFull(ServerError):
    """The server is at its ``maxmemory`` (with ``noeviction``) and refuses writes; nothing was stored."""


class PermissionDenied(ServerError):
    """The server's ACL denies the URL's user a command, key or channel rqueue needs."""


class RequestTimeout(RQueueError, builtins.TimeoutError):
    """``request()`` got no reply in time.

    ``withdrawn`` is True when no consumer had received the message, so it was
    deleted and will never be processed; False when a consumer holds it (its
    reply will be dropped).
    """

    def __init__(self, message: str, *, message_id: str, withdrawn: bool) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.withdrawn = withdrawn


class RequestFailed(RQueueError):
    """A request's message will never be processed (dead-lettered, purged or deleted)."""

    def __init__(self, message: str, *, message_id: str) -> None:
        super().__init__(message)
        self.message_id = message_id


class MessageDeadLettered(RequestFailed):
    """A request's message went to the dead-letter queue while its sender waited.

    ``reason``: ``max_receives``, ``expired`` or ``rejected``; ``detail``: the
    receive count, or the rejection reason.
    """

    def __init__(self, message: str, *, message_id: str, reason: str, detail: str) -> None:
        super().__init__(message, message_id=message_id)
        self.reason = reason
        self.detail = detail


class WaitTimeout(RQueueError, builtins.TimeoutError):
    """A tracker's ``wait()`` saw no matching event in time."""


def from_lua(message: str, queue: str) -> RQueueError | None:
    """Map an error reply of a script (``RQ_<CODE> args...``) to a typed exception.

    Returns None for a reply that is not one of ours, so the caller re-raises it.
    """
    code, _, rest = message.partition(" ")
    args = rest.split()
    if code == "RQ_NOQUEUE":
        return QueueDoesNotExist(f"queue {queue!r} does not exist: create it with create_queue({queue!r})")
    if code == "RQ_NEEDGROUP":
        return InvalidParameter(
            f"queue {queue!r} is a FIFO queue: every send needs a group (send(..., group='...')) and takes "
            "no per-message delay; nothing was stored"
        )
    if code == "RQ_NOTFIFO":
        return InvalidParameter(
            f"group is only for FIFO queues and queue {queue!r} is not one "
            "(create_queue(..., fifo=True)); nothing was stored"
        )
    if code == "RQ_TOOLARGE":
        index, size, limit = args
        return MessageTooLarge(
            f"message {index} of the batch is {size} bytes (body plus attributes), over queue "
            f"{queue!r}'s max_message_size of {limit} bytes; nothing was stored"
        )
    if code == "RQ_BADDELAY":
        delay, retention = args
        return InvalidParameter(
            f"delay must be between 0 and the queue's retention ({int(retention) / 1000:g} s), "
            f"got {int(delay) / 1000:g} s; nothing was stored"
        )
    if code == "RQ_BADARG":
        # A script refused an argument before changing anything (a raw call, or a client bug).
        name, _, what = rest.partition(" ")
        return InvalidParameter(f"{name} must be {what}; nothing was changed (queue {queue!r})")
    if code == "RQ_EXISTS":
        return QueueAlreadyExists(
            f"queue {queue!r} already exists with other attributes ({', '.join(args)}); "
            "use client.queue() to use it, set_attributes() to change it, or delete_queue() first"
        )
    return None
