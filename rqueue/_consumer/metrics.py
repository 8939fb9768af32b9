"""Metrics hooks: one ``HandlerResult`` per processed message, to any callbacks.

A hook is any ``Callable[[HandlerResult], None]``. ``PrometheusHook`` (the
``metrics`` extra, prometheus-client) turns the results into a counter by
outcome and a processing-time histogram, labelled by queue and handler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rqueue._protocol.errors import RQueueError

log = logging.getLogger("rqueue.consumer")

Outcome = Literal["ok", "retried", "dead_lettered", "rejected", "released"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "retried", "dead_lettered", "rejected", "released")


@dataclass(frozen=True, slots=True)
class HandlerResult:
    """What became of one message.

    outcome: ``ok`` (deleted), ``retried`` (visible again after a backoff),
    ``dead_lettered`` (failed on its last allowed receive), ``rejected``
    (``Reject`` raised, or the body did not fit the handler's type), ``released``
    (FIFO queues: held behind a message of its group that failed, so given back
    without running; it comes again after that one. Not a failure: no handler
    ran, so ``handler`` is '' and ``seconds`` 0).
    seconds: time spent in the handler.
    """

    queue: str
    handler: str
    outcome: Outcome
    seconds: float
    message_id: str
    error: BaseException | None = None


Hook = Callable[[HandlerResult], None]


def emit(hooks: Sequence[Hook], result: HandlerResult) -> None:
    """Call every hook; a failing hook is logged, never fatal."""
    for hook in hooks:
        try:
            hook(result)
        except Exception:
            log.exception("metrics hook %r failed", hook)


class PrometheusHook:
    """Counts and processing times as Prometheus metrics (needs prometheus-client).

    ``rqueue_messages_total{queue,handler,outcome}`` and
    ``rqueue_processing_seconds{queue,handler}``.
    """

    def __init__(self, registry: Any = None) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise RQueueError("Prometheus metrics need the metrics extra: pip install 'rqueue[metrics]'") from None
        kw: dict[str, Any] = {} if registry is None else {"registry": registry}
        self.messages = prom.Counter(
            "rqueue_messages", "Messages processed, by outcome", ["queue", "handler", "outcome"], **kw
        )
        self.seconds = prom.Histogram(
            "rqueue_processing_seconds", "Time spent in the handler", ["queue", "handler"], **kw
        )

    def __call__(self, result: HandlerResult) -> None:
        self.messages.labels(result.queue, result.handler, result.outcome).inc()
        if result.outcome != "released":  # no handler ran: no processing time to observe
            self.seconds.labels(result.queue, result.handler).observe(result.seconds)


def start_exporter(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics on ``port`` (prometheus-client's HTTP server thread)."""
    try:
        import prometheus_client as prom
    except ImportError:
        raise RQueueError("Prometheus metrics need the metrics extra: pip install 'rqueue[metrics]'") from None
    prom.start_http_server(port, addr)
