"""Kept for the importers of ``map_error`` not yet moved to ``rqueue._transport.errors``
(the listener, the command line). Its jobs now live in ``errors`` (server errors,
mapped), ``routing`` (cluster pipelines), ``slots`` (call admission) and ``handle``."""

from __future__ import annotations

from rqueue._transport.errors import map_error

__all__ = ["map_error"]
