"""rqueue: a Redis-native message queue with SQS semantics.

client = rqueue.connect("redis://localhost:6379/0")
q = client.create_queue("orders")
q.send({"id": 1})
for m in q.receive(10, wait_time=20):
    q.delete(m.receipt)
"""

from rqueue._consumer.handlers import Reject, Router
from rqueue._consumer.metrics import HandlerResult, PrometheusHook
from rqueue._consumer.threads import Consumer
from rqueue._protocol.errors import (
    AuthenticationError,
    ConnectionError,
    InvalidParameter,
    InvalidQueueName,
    MessageDeadLettered,
    MessageTooLarge,
    PermissionDenied,
    QueueAlreadyExists,
    QueueDoesNotExist,
    RequestFailed,
    RequestTimeout,
    RQueueError,
    ServerError,
    ServerFull,
    WaitTimeout,
)
from rqueue._protocol.models import DeadLetter, Event, Message, QueueAttributes, QueueStats, SubscriptionInfo
from rqueue._sync.client import Client, Queue, connect
from rqueue._sync.listener import Tracker
from rqueue._sync.topic import Subscription, Topic
from rqueue._transport.backends import Backend, RQueueWarning, mask_url, register_backend

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Backend",
    "Client",
    "ConnectionError",
    "Consumer",
    "DeadLetter",
    "Event",
    "HandlerResult",
    "InvalidParameter",
    "InvalidQueueName",
    "Message",
    "MessageDeadLettered",
    "PrometheusHook",
    "MessageTooLarge",
    "PermissionDenied",
    "Queue",
    "QueueAlreadyExists",
    "QueueAttributes",
    "QueueDoesNotExist",
    "QueueStats",
    "RQueueError",
    "RequestFailed",
    "RequestTimeout",
    "RQueueWarning",
    "Reject",
    "Router",
    "ServerError",
    "ServerFull",
    "Subscription",
    "SubscriptionInfo",
    "Topic",
    "Tracker",
    "WaitTimeout",
    "connect",
    "mask_url",
    "register_backend",
]
