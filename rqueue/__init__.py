"""rqueue: a Redis-native message queue with SQS semantics.

client = rqueue.connect("redis://localhost:6379/0")
q = client.create_queue("orders")
q.send({"id": 1})
for m in q.receive(10, wait_time=20):
    q.delete(m.receipt)
"""

from ._backends import Backend, RQueueWarning, mask_url, register_backend
from ._client import Client, Queue, connect
from ._consumer import Consumer
from ._errors import (
    ConnectionError,
    InvalidParameter,
    InvalidQueueName,
    MessageTooLarge,
    QueueAlreadyExists,
    QueueDoesNotExist,
    RQueueError,
)
from ._handlers import Reject, Router
from ._metrics import HandlerResult, PrometheusHook
from ._models import DeadLetter, Message, QueueAttributes, QueueStats

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Client",
    "ConnectionError",
    "Consumer",
    "DeadLetter",
    "HandlerResult",
    "InvalidParameter",
    "InvalidQueueName",
    "Message",
    "PrometheusHook",
    "MessageTooLarge",
    "Queue",
    "QueueAlreadyExists",
    "QueueAttributes",
    "QueueDoesNotExist",
    "QueueStats",
    "RQueueError",
    "RQueueWarning",
    "Reject",
    "Router",
    "connect",
    "mask_url",
    "register_backend",
]
