"""What ``rqueue demo`` shows: the live table of its queues while it runs, and the summary at the end."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rqueue._protocol.models import QueueStats
from rqueue.cli.loadgen import LoadCounts

_COLUMNS = ("sent", "received", "processed", "in flight", "queued", "dead-lettered", "sent/s", "processed/s")


@dataclass
class Row:
    """One queue's line in the live table."""

    label: str
    stats: QueueStats
    history: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=12))

    def sample(self, s: QueueStats) -> None:
        self.stats = s
        self.history.append((time.monotonic(), s.sent_total, s.deleted_total))

    def rates(self) -> tuple[float, float]:
        if len(self.history) < 2:
            return 0.0, 0.0
        (t0, s0, d0), (t1, s1, d1) = self.history[0], self.history[-1]
        dt = max(t1 - t0, 1e-6)
        return (s1 - s0) / dt, (d1 - d0) / dt

    @property
    def queued(self) -> int:
        return self.stats.visible + self.stats.in_flight + self.stats.delayed

    def accounting(self) -> dict[str, Any]:
        s = self.stats
        accounted = s.deleted_total + s.dead_lettered_total + s.expired_total + self.queued
        return {
            "sent": s.sent_total,
            "received": s.received_total,
            "processed": s.deleted_total,
            "dead_lettered": s.dead_lettered_total,
            "expired": s.expired_total,
            "still_queued": self.queued,
            "in_flight": s.in_flight,
            "accounted": accounted == s.sent_total,
        }


def live_view(
    phase: str,
    rows: Mapping[str, Row],
    counts: LoadCounts,
    children: tuple[int, int],
    notes: list[str],
    elapsed: float,
    seconds: float | None,
) -> Group:
    """The live view: the queues' table, the load's lines, ``children`` (alive, started), the clock."""
    alive, started = children
    lines = [requests_line(counts), tracked_line(counts)]
    lines += [fifo_line(row) for row in rows.values() if row.stats.attributes.fifo]
    lines.append(f"worker processes: {alive} of {started} running")
    lines += [f"note: {n}" for n in notes if "exited" in n]
    parts: list[Any] = [queue_table(phase, rows), Text("\n".join(line for line in lines if line))]
    hint = "Ctrl-C to stop" if phase == "running" else phase
    bar = Table.grid(padding=(0, 1))
    if seconds:
        done = min(elapsed, seconds)
        bar.add_row(ProgressBar(total=seconds, completed=done, width=40), f"{done:.0f} s of {seconds:g} s", hint)
    else:
        bar.add_row(f"{elapsed:.0f} s", hint)
    parts.append(bar)
    return Group(*parts)


def queue_table(phase: str, rows: Mapping[str, Row]) -> Table:
    """One line per queue: its counters and rates (none once stopped)."""
    table = Table(title=f"rqueue demo — {phase}", title_justify="left")
    table.add_column("queue", style="bold", no_wrap=True)
    for col in _COLUMNS:
        table.add_column(col, justify="right")
    for row in rows.values():
        s = row.stats
        sent_rate, done_rate = row.rates() if phase != "stopped" else (0.0, 0.0)
        table.add_row(
            row.label,
            f"{s.sent_total:,}",
            f"{s.received_total:,}",
            f"{s.deleted_total:,}",
            f"{s.in_flight:,}",
            f"{s.visible + s.delayed:,}",
            Text(f"{s.dead_lettered_total:,}", style="red" if s.dead_lettered_total else ""),
            f"{sent_rate:,.0f}",
            f"{done_rate:,.0f}",
        )
    return table


def fifo_line(row: Row) -> str:
    s = row.stats
    return (
        f"FIFO groups (customers) with orders waiting or in flight: {s.groups:,}, "
        f"{s.groups_in_flight:,} of them in flight (one order each at most; the rest wait their turn)"
    )


def requests_line(c: LoadCounts) -> str:
    p50 = c.reply_p50()
    lat = f", reply p50 {p50:.1f} ms" if p50 is not None else ""
    return (
        f"sync requests: {c.requests:,} sent, {c.replies:,} replies{lat}, "
        f"{c.request_timeouts:,} timed out, {c.request_errors:,} failed"
    )


def tracked_line(c: LoadCounts) -> str:
    events = ", ".join(f"{k} {v:,}" for k, v in sorted(c.events.items())) or "none yet"
    return f"tracked sends: {c.tracked:,}, events: {events}"


def render_summary(summary: dict[str, Any]) -> Group:
    """The end of the demo, in words: every message accounted for."""
    out: list[Any] = [Text(f"\nrqueue demo: ran {summary['seconds']:g} s against {summary['server']}", style="bold")]
    for name, q in summary["queues"].items():
        mark = Text("✓ every message accounted for", style="green") if q["accounted"] else Text("✗ MISMATCH", "red")
        line = Text(
            f"  {name}: sent {q['sent']:,} = processed {q['processed']:,} + dead-lettered {q['dead_lettered']:,}"
            + (f" + expired {q['expired']:,}" if q["expired"] else "")
            + f" + still queued {q['still_queued']:,}   "
        )
        line.append_text(mark)
        out.append(line)
    load = summary["load"]
    p50 = load["reply_p50_ms"]
    out.append(
        Text(
            f"  sync requests: {load['requests']:,} sent, {load['replies']:,} replied"
            + (f" (p50 {p50:.1f} ms)" if p50 is not None else "")
            + f", {load['request_timeouts']:,} timed out, {load['request_errors']:,} failed"
        )
    )
    events = ", ".join(f"{k} {v:,}" for k, v in sorted(load["events"].items())) or "none"
    out.append(Text(f"  tracked sends: {load['tracked']:,}; events: {events}"))
    out.append(Text(f"  poison orders sent (they end as dead letters): {load['poison']:,}"))
    fifo = summary.get("fifo")
    if fifo:
        ok = fifo["out_of_order"] == 0
        line = Text(
            f"  FIFO: {fifo['sent']:,} orders of {fifo['customers']} customers, {fifo['checked']:,} run, "
            f"{fifo['out_of_order']:,} out of order   "
        )
        line.append_text(Text("✓ every customer's orders in order", "green") if ok else Text("✗ ORDER BROKEN", "red"))
        out.append(line)
    for note in summary["notes"]:
        out.append(Text(f"  note: {note}", style="yellow" if "exited" in note else "dim"))
    return Group(*out)
