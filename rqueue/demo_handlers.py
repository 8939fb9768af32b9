"""The demo's handlers under their published name (``rqueue.demo_handlers:process_order``)."""

from rqueue.cli.demo_handlers import UnknownSku, audit, customer_order, email, process_order

__all__ = ["UnknownSku", "audit", "customer_order", "email", "process_order"]
