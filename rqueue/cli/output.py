"""How the ``rqueue`` command prints things: rich tables for people, JSON for scripts."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import orjson
from rich.table import Table
from rich.text import Text

from rqueue._protocol.models import Message, QueueStats
from rqueue._protocol.peek import Peeked

PREVIEW = 60


def jsonable(value: Any) -> Any:
    """A value orjson can write: bytes become ``{"base64": ...}``."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return orjson.dumps(jsonable(value), option=orjson.OPT_SORT_KEYS).decode()


def preview(body: Any, width: int = PREVIEW) -> str:
    """A one-line view of a body: text as is, JSON compact, bytes as a repr."""
    if isinstance(body, str):
        text = body
    elif isinstance(body, bytes):
        text = repr(body)
    else:
        text = orjson.dumps(body).decode()
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def age(ms: int, now_ms: int | None = None) -> str:
    """How long ago a server time (ms) was, as ``4s``, ``3m``, ``2h``, ``5d``."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return duration(max(0, now_ms - ms) / 1000)


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def stats_dict(s: QueueStats) -> dict[str, Any]:
    return asdict(s)


def rate(now: float | None) -> str:
    return "" if now is None else f"{now:,.0f}/s"


def stats_table(
    rows: Iterable[QueueStats], rates: Mapping[str, tuple[float | None, float | None]] | None = None
) -> Table:
    """One row per queue; with ``rates`` (queue -> sent/s, deleted/s) two more columns."""
    rows = list(rows)
    fifo = any(s.attributes.fifo for s in rows)
    table = Table(title="rqueue stats", title_justify="left", expand=False)
    table.add_column("queue", style="bold", no_wrap=True)
    for col in ("visible", "in flight", "delayed", "dead", "sent", "received", "deleted", "dead-lettered"):
        table.add_column(col, justify="right")
    if rates is not None:
        table.add_column("sent/s", justify="right")
        table.add_column("deleted/s", justify="right")
    table.add_column("oldest", justify="right")
    if fifo:
        table.add_column("groups (in flight)", justify="right")
    for s in rows:
        cells: list[str | Text] = [
            Text(f"{s.name} (paused)", style="yellow") if s.paused else s.name,
            f"{s.visible:,}",
            f"{s.in_flight:,}",
            f"{s.delayed:,}",
            Text(f"{s.dead:,}", style="red" if s.dead else ""),
            f"{s.sent_total:,}",
            f"{s.received_total:,}",
            f"{s.deleted_total:,}",
            f"{s.dead_lettered_total:,}",
        ]
        if rates is not None:
            sent_rate, deleted_rate = rates.get(s.name, (None, None))
            cells += [rate(sent_rate), rate(deleted_rate)]
        cells.append(duration(s.oldest_age) if s.oldest_age else "-")
        if fifo:
            cells.append(f"{s.groups:,} ({s.groups_in_flight:,})" if s.attributes.fifo else "")
        table.add_row(*cells)
    return table


def message_dict(m: Message) -> dict[str, Any]:
    out = {
        "id": m.id,
        "body": m.body,
        "attributes": m.attributes,
        "receipt": m.receipt,
        "receive_count": m.receive_count,
        "sent_at": m.sent_at,
        "first_received_at": m.first_received_at,
        "queue": m.queue,
    }
    if m.dead_letter is not None:
        out["dead_letter"] = asdict(m.dead_letter)
    if m.group is not None:
        out["group"] = m.group
    return out


def messages_table(messages: list[Message], *, deleted: bool) -> Table:
    table = Table(title=f"{len(messages)} message(s)" + (", deleted" if deleted else ""), title_justify="left")
    table.add_column("id", no_wrap=True)
    if not deleted:
        table.add_column("receipt", no_wrap=True)
    fifo = any(m.group is not None for m in messages)
    if fifo:
        table.add_column("group")
    table.add_column("receives", justify="right")
    table.add_column("sent", justify="right")
    table.add_column("attributes")
    table.add_column("body")
    for m in messages:
        cells = [m.id]
        if not deleted:
            cells.append(m.receipt)
        if fifo:
            cells.append(m.group or "")
        attrs = " ".join(f"{k}={preview(v, 20)}" for k, v in m.attributes.items())
        cells += [str(m.receive_count), age(m.sent_at) + " ago", attrs, preview(m.body)]
        table.add_row(*cells)
    return table


def peeked_dict(p: Peeked) -> dict[str, Any]:
    out = {
        "id": p.id,
        "body": p.body,
        "attributes": p.attributes,
        "sent_at": p.sent_at,
        "receive_count": p.receive_count,
        "in_flight": p.in_flight,
    }
    if p.dead_letter is not None:
        out["dead_letter"] = asdict(p.dead_letter)
    return out


def dead_letters_table(name: str, items: list[Peeked], total: int) -> Table:
    shown = f"showing {len(items)}" if len(items) < total else "all shown"
    table = Table(title=f"{name}: {total:,} dead letter(s), {shown}", title_justify="left")
    for col in ("id", "died", "reason", "detail", "sent", "body"):
        table.add_column(col)
    for p in items:
        d = p.dead_letter
        table.add_row(
            p.id + (" (in flight)" if p.in_flight else ""),
            age(d.dead_at) + " ago" if d else "-",
            Text(d.reason if d else "-", style="red"),
            preview(d.detail, 40) if d else "",
            age(p.sent_at) + " ago",
            preview(p.body),
        )
    return table
