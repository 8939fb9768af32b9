"""``rqueue`` commands that inspect and fix queues and messages."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import click
from rich.live import Live
from rich.text import Text

from rqueue._protocol.attributes import NAMES as ATTRIBUTE_NAMES
from rqueue._protocol.errors import QueueDoesNotExist, RQueueError
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.peek import peek
from rqueue._sync.client import Client
from rqueue.cli import output as out
from rqueue.cli.shared import (
    BODY_FORMAT,
    Env,
    cli,
    common,
    confirm,
    console,
    emit,
    env,
    one_line,
    parse_attribute,
    queue_name,
    read_body,
    session,
)

# ---------------------------------------------------------------- queues


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.option("--visibility-timeout", type=float, default=30, show_default=True, help="Seconds a receive hides.")
@click.option("--delay", type=float, default=0, show_default=True, help="Seconds before a new message shows.")
@click.option("--retention", type=float, default=4 * 86400, show_default=True, help="Seconds a message is kept.")
@click.option("--max-message-size", type=int, default=256 * 1024, show_default=True, help="Bytes.")
@click.option("--max-receive-count", type=int, default=None, help="Receives before dead-lettering. Default: never.")
@click.option("--deduplication-window", type=float, default=300, show_default=True, help="Seconds a dedup id counts.")
@click.option("--fifo", is_flag=True, help="Deliver each group's messages in order, one at a time.")
@click.option("--content-based-deduplication", is_flag=True, help="Deduplicate sends without a dedup id by content.")
@click.option("--rate-limit", type=float, default=None, help="Messages handed out per second, all consumers together.")
@click.option("--max-in-flight", type=int, default=None, help="Messages in flight at once, all consumers together.")
@common
def create(
    name: str,
    url: str | None,
    prefix: str,
    as_json: bool,
    **attributes: Any,
) -> None:
    """Create queue NAME (a no-op if it exists with the same attributes)."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        q = client.create_queue(name, **attributes)
        attrs = q.attributes()
    emit(e, {"name": name, **vars_of(attrs)}, f"queue {name} ready ({fmt_attrs(attrs)})")


def vars_of(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


def fmt_attrs(a: Any) -> str:
    mrc = "never" if a.max_receive_count is None else str(a.max_receive_count)
    text = (
        f"{'FIFO, ' if a.fifo else ''}visibility {a.visibility_timeout:g}s, delay {a.delay:g}s, "
        f"retention {out.duration(a.retention)}, max size {a.max_message_size:,} B, "
        f"dead-letter after {mrc} receives, dedup window {out.duration(a.deduplication_window)}"
    )
    if a.content_based_deduplication:
        text += ", dedup by content"
    if a.rate_limit is not None:
        text += f", at most {a.rate_limit:g}/s"
    if a.max_in_flight is not None:
        text += f", at most {a.max_in_flight} in flight"
    return text


_NONE = ("none", "off", "")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_setting(text: str) -> tuple[str, Any]:
    """``key=value`` of `rqueue set` as (attribute, value): none/off clear a limit."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or key not in ATTRIBUTE_NAMES:
        raise click.BadParameter(f"{text!r}: expected key=value with key one of {', '.join(ATTRIBUTE_NAMES)}")
    raw = raw.strip()
    try:
        if key in ("fifo", "content_based_deduplication"):
            if raw.lower() not in _TRUE + _FALSE:
                raise ValueError(raw)
            return key, raw.lower() in _TRUE
        if key in ("max_receive_count", "rate_limit", "max_in_flight") and raw.lower() in _NONE:
            return key, None
        if key in ("max_message_size", "max_receive_count", "max_in_flight"):
            return key, int(raw)
        return key, float(raw)
    except ValueError:
        raise click.BadParameter(f"{text!r}: {raw!r} is not a value for {key}") from None


@cli.command(name="set")
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.argument("settings", nargs=-1, required=True)
@common
def set_(name: str, settings: tuple[str, ...], url: str | None, prefix: str, as_json: bool) -> None:
    """Change attributes of queue NAME live: `rqueue set orders rate_limit=50 max_in_flight=none`."""
    changes = dict(parse_setting(s) for s in settings)
    e = env(url, prefix, as_json)
    with session(e) as client:
        attrs = client.queue(name).set_attributes(**changes)
    emit(e, {"name": name, **vars_of(attrs)}, f"queue {name} now: {fmt_attrs(attrs)}")


@cli.command(name="list")
@common
def list_(url: str | None, prefix: str, as_json: bool) -> None:
    """List queues with their depth."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        names = client.list_queues()
        if e.as_json:
            click.echo(out.dumps(names))
            return
        rows = []
        for n in names:
            with contextlib.suppress(QueueDoesNotExist):  # deleted meanwhile
                rows.append(client.queue(n).stats())
    if not rows:
        console.print(f"no queues under prefix {prefix!r}")
        return
    console.print(out.stats_table(rows))


@cli.command()
@click.argument("names", nargs=-1, callback=lambda _c, _p, v: [queue_name(n) for n in v])
@click.option("--watch", "-w", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True, help="Seconds.")
@common
def stats(names: list[str], watch: bool, interval: float, url: str | None, prefix: str, as_json: bool) -> None:
    """Counts and counters of queues NAMES (default: all)."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        rows = _stats(client, names)
        if not watch:
            emit(e, [out.stats_dict(s) for s in rows], out.stats_table(rows))
            return
        with contextlib.suppress(KeyboardInterrupt):
            _watch(e, client, names, rows, interval)


def _stats(client: Client, names: list[str]) -> list[Any]:
    if names:
        return [client.queue(n).stats() for n in names]
    rows = []
    for n in client.list_queues():
        with contextlib.suppress(QueueDoesNotExist):
            rows.append(client.queue(n).stats())
    return rows


def _watch(e: Env, client: Client, names: list[str], rows: list[Any], interval: float) -> None:
    """Refresh every ``interval`` s: a live table, or one JSON line per refresh."""
    prev = {s.name: (time.monotonic(), s) for s in rows}
    rates: dict[str, tuple[float | None, float | None]] = {}
    if e.as_json:
        click.echo(out.dumps([out.stats_dict(s) for s in rows]))
    live = None if e.as_json else Live(out.stats_table(rows, rates), console=console, auto_refresh=False)
    with live or contextlib.nullcontext():
        while True:
            time.sleep(interval)
            try:
                rows = _stats(client, names)
            except RQueueError as err:  # keep watching through an outage
                if live is not None:
                    live.update(Text(f"{one_line(err)} (retrying)", style="red"), refresh=True)
                continue
            now = time.monotonic()
            for s in rows:
                if s.name in prev:
                    t0, s0 = prev[s.name]
                    dt = max(now - t0, 1e-6)
                    rates[s.name] = ((s.sent_total - s0.sent_total) / dt, (s.deleted_total - s0.deleted_total) / dt)
                prev[s.name] = (now, s)
            if live is not None:
                live.update(out.stats_table(rows, rates), refresh=True)
            else:
                click.echo(out.dumps([{**out.stats_dict(s), "rates": rates.get(s.name)} for s in rows]))


# ---------------------------------------------------------------- messages


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.argument("body", required=False)
@BODY_FORMAT
@click.option("--delay", type=float, default=None, help="Seconds before it shows. Default: the queue's.")
@click.option("--attribute", "-a", "attributes", multiple=True, callback=parse_attribute, help="key=value; repeat.")
@click.option("--group", default=None, help="The message group (FIFO queues need one).")
@common
def send(
    name: str,
    body: str | None,
    body_format: str,
    delay: float | None,
    attributes: dict[str, str],
    group: str | None,
    url: str | None,
    prefix: str,
    as_json: bool,
) -> None:
    """Send one message with BODY (or stdin) to queue NAME; prints its id."""
    e = env(url, prefix, as_json)
    value = read_body(body, body_format)
    with session(e) as client:
        mid = client.queue(name).send(value, delay=delay, attributes=attributes or None, group=group)
    emit(e, {"id": mid}, mid)


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.option("--max", "max_messages", type=int, default=1, show_default=True, help="1-1000.")
@click.option("--wait", type=float, default=0, show_default=True, help="Seconds to wait for a message (0-300).")
@click.option("--visibility-timeout", type=float, default=None, help="Seconds to hide. Default: the queue's.")
@click.option("--delete", is_flag=True, help="Delete what was received (else print receipts for `rqueue delete`).")
@common
def receive(
    name: str,
    max_messages: int,
    wait: float,
    visibility_timeout: float | None,
    delete: bool,
    url: str | None,
    prefix: str,
    as_json: bool,
) -> None:
    """Receive up to --max messages from queue NAME."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        q = client.queue(name)
        messages = q.receive(max_messages, visibility_timeout=visibility_timeout, wait_time=wait)
        if delete and messages:
            q.delete_batch([m.receipt for m in messages])
    human = out.messages_table(messages, deleted=delete) if messages else f"no message received from {name}"
    emit(e, [out.message_dict(m) for m in messages], human)


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.argument("receipts", nargs=-1, required=True)
@common
def delete(name: str, receipts: tuple[str, ...], url: str | None, prefix: str, as_json: bool) -> None:
    """Delete messages of queue NAME by RECEIPTS. Exit code 1 if a receipt is stale."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        done = client.queue(name).delete_batch(list(receipts))
    stale = [r for r, ok in zip(receipts, done, strict=True) if not ok]
    msg = f"deleted {len(receipts) - len(stale)} message(s)"
    if stale:
        msg += f"; {len(stale)} receipt(s) stale (received again since, or already deleted): {' '.join(stale)}"
    emit(e, {"deleted": len(receipts) - len(stale), "stale": stale}, msg)
    if stale:
        click.get_current_context().exit(1)


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@common
def purge(name: str, yes: bool, url: str | None, prefix: str, as_json: bool) -> None:
    """Delete every message of queue NAME (not its dead letters)."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        q = client.queue(name)
        q.stats()  # fail on an unknown queue before asking
        confirm(yes, f"delete every message of {name}")
        n = q.purge()
    emit(e, {"purged": n}, f"purged {n:,} message(s) from {name}")


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@common
def pause(name: str, url: str | None, prefix: str, as_json: bool) -> None:
    """Pause queue NAME: receives hand out nothing (sends go on) until `rqueue resume`."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        client.queue(name).pause()
    emit(e, {"name": name, "paused": True}, f"queue {name} paused: receives hand out nothing until resumed")


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@common
def resume(name: str, url: str | None, prefix: str, as_json: bool) -> None:
    """Resume queue NAME after `rqueue pause`; waiting receivers wake at once."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        client.queue(name).resume()
    emit(e, {"name": name, "paused": False}, f"queue {name} resumed")


@cli.command(name="delete-queue")
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@common
def delete_queue(name: str, yes: bool, url: str | None, prefix: str, as_json: bool) -> None:
    """Delete queue NAME, its dead-letter queue and all their messages."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        client.queue(name).stats()
        confirm(yes, f"delete queue {name} and all its messages")
        client.delete_queue(name)
    emit(e, {"deleted": name}, f"deleted queue {name}")


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@common
def redrive(name: str, url: str | None, prefix: str, as_json: bool) -> None:
    """Move the dead letters of queue NAME back to it."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        n = client.queue(name).redrive()
    emit(e, {"moved": n}, f"moved {n:,} dead letter(s) back to {name}")


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.option("--max", "max_messages", type=int, default=20, show_default=True, help="1-1000.")
@common
def dlq(name: str, max_messages: int, url: str | None, prefix: str, as_json: bool) -> None:
    """Show the dead letters of queue NAME and why they died, without receiving them."""
    e = env(url, prefix, as_json)
    keys = QueueKeys.for_queue(prefix, name)
    keys = keys if keys.is_dlq else keys.dlq()
    with session(e) as client:
        items = client.run(peek(keys, max_messages))
        s = client.queue(keys.name).stats()
    total = s.visible + s.in_flight + s.delayed
    emit(e, [out.peeked_dict(p) for p in items], out.dead_letters_table(keys.name, items, total))
