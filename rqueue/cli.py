"""The ``rqueue`` command line: a thin layer over the library.

Every command takes ``--url`` (else ``RQUEUE_URL``, else localhost; ``demo``
falls back to ``embedded://``) and ``--prefix`` (else ``RQUEUE_PREFIX``).
A user's mistake (bad URL, unreachable server, unknown queue, bad number,
oversized body) prints one line to stderr and exits with code 2.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import orjson
from redis import exceptions as rx
from rich.console import Console
from rich.live import Live
from rich.text import Text

from . import _cli_output as out
from . import _logging
from ._backends import DEFAULT_URL, mask_url
from ._client import Client, connect
from ._errors import QueueDoesNotExist, RQueueError
from ._keys import QueueKeys
from ._peek import peek

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("rqueue.cli")

#: Exit code for a user's mistake; click uses 2 for usage errors too.
USER_ERROR = 2


class UserError(click.ClickException):
    """A mistake of the user's: one line on stderr, exit code 2."""

    exit_code = USER_ERROR


@dataclass
class Env:
    """What every command needs: where the server is and how to print."""

    url: str | None
    prefix: str
    as_json: bool

    def connect(self, default: str | None = None) -> Client:
        """Connect, turning a malformed URL into a one-line error."""
        url = self.url or default
        try:
            return connect(url, prefix=self.prefix)
        except RQueueError:
            raise
        except (ValueError, TypeError) as e:
            raise UserError(f"bad url {mask_url(url or DEFAULT_URL)!r}: {e}") from None
        except rx.RedisError as e:
            raise UserError(f"cannot use the server at {mask_url(url or DEFAULT_URL)}: {e}") from None


def common(f: F) -> F:
    """--url, --prefix and --json on a command."""
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)
    f = click.option(
        "--prefix",
        envvar="RQUEUE_PREFIX",
        default="rqueue",
        show_default=True,
        help="Key prefix; separates applications on one server. Env: RQUEUE_PREFIX.",
    )(f)
    f = click.option(
        "--url", envvar="RQUEUE_URL", default=None, help="Server URL. Env: RQUEUE_URL. Default: localhost."
    )(f)
    return f


def env(url: str | None, prefix: str, as_json: bool) -> Env:
    return Env(url, prefix, as_json)


#: In a pipe or a file, do not squeeze tables into 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def emit(e: Env, data: Any, human: Any) -> None:
    """Print ``data`` as JSON with --json, else ``human`` (text or a rich renderable)."""
    if e.as_json:
        click.echo(out.dumps(data))
    else:
        console.print(human)


@contextlib.contextmanager
def session(e: Env, default: str | None = None) -> Iterator[Client]:
    client = e.connect(default)
    try:
        yield client
    finally:
        client.close()


def queue_name(name: str) -> str:
    """Validate early so a bad name fails before any connection is made."""
    QueueKeys.for_queue("rqueue", name)
    return name


# ---------------------------------------------------------------- the group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="rqueue", prog_name="rqueue")
@click.option(
    "--log-level",
    envvar="RQUEUE_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--log-format",
    envvar="RQUEUE_LOG_FORMAT",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="json: one object per line (for compose and log shippers).",
)
def cli(log_level: str, log_format: str) -> None:
    """rqueue: a Redis-native message queue with SQS semantics.

    Inspect and fix queues, run workers, watch a live demo. Try: rqueue demo
    """
    _logging.setup(log_level, log_format)


# ---------------------------------------------------------------- queues


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.option("--visibility-timeout", type=float, default=30, show_default=True, help="Seconds a receive hides.")
@click.option("--delay", type=float, default=0, show_default=True, help="Seconds before a new message shows.")
@click.option("--retention", type=float, default=4 * 86400, show_default=True, help="Seconds a message is kept.")
@click.option("--max-message-size", type=int, default=256 * 1024, show_default=True, help="Bytes.")
@click.option("--max-receive-count", type=int, default=None, help="Receives before dead-lettering. Default: never.")
@common
def create(
    name: str,
    visibility_timeout: float,
    delay: float,
    retention: float,
    max_message_size: int,
    max_receive_count: int | None,
    url: str | None,
    prefix: str,
    as_json: bool,
) -> None:
    """Create queue NAME (a no-op if it exists with the same attributes)."""
    e = env(url, prefix, as_json)
    with session(e) as client:
        q = client.create_queue(
            name,
            visibility_timeout=visibility_timeout,
            delay=delay,
            retention=retention,
            max_message_size=max_message_size,
            max_receive_count=max_receive_count,
        )
        attrs = q.attributes()
    emit(e, {"name": name, **vars_of(attrs)}, f"queue {name} ready ({fmt_attrs(attrs)})")


def vars_of(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


def fmt_attrs(a: Any) -> str:
    mrc = "never" if a.max_receive_count is None else str(a.max_receive_count)
    return (
        f"visibility {a.visibility_timeout:g}s, delay {a.delay:g}s, retention {out.duration(a.retention)}, "
        f"max size {a.max_message_size:,} B, dead-letter after {mrc} receives"
    )


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


def parse_attribute(_ctx: Any, _param: Any, values: tuple[str, ...]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {v!r}")
        attrs[key] = val
    return attrs


def read_body(body: str | None, body_format: str) -> Any:
    """The body from the argument, or stdin when it is missing or ``-``."""
    raw: bytes = sys.stdin.buffer.read() if body is None or body == "-" else body.encode()
    if body_format == "bytes":
        return raw
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise UserError("body is not UTF-8 text; use --body-format bytes") from None
    if body_format == "json":
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as err:
            raise UserError(f"body is not valid JSON: {err}") from None
    return text


BODY_FORMAT = click.option(
    "--body-format",
    type=click.Choice(["text", "json", "bytes"]),
    default="text",
    show_default=True,
    help="json sends the decoded value; receivers get back the same kind.",
)


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.argument("body", required=False)
@BODY_FORMAT
@click.option("--delay", type=float, default=None, help="Seconds before it shows. Default: the queue's.")
@click.option("--attribute", "-a", "attributes", multiple=True, callback=parse_attribute, help="key=value; repeat.")
@common
def send(
    name: str,
    body: str | None,
    body_format: str,
    delay: float | None,
    attributes: dict[str, str],
    url: str | None,
    prefix: str,
    as_json: bool,
) -> None:
    """Send one message with BODY (or stdin) to queue NAME; prints its id."""
    e = env(url, prefix, as_json)
    value = read_body(body, body_format)
    with session(e) as client:
        mid = client.queue(name).send(value, delay=delay, attributes=attributes or None)
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


def confirm(yes: bool, what: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{what}: pass --yes to confirm (stdin is not a terminal)")
    if not click.confirm(what + "?"):
        raise UserError("aborted; nothing changed")


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


# ---------------------------------------------------------------- senders and topics


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.argument("body", required=False)
@BODY_FORMAT
@click.option("--timeout", type=click.FloatRange(0.001, 3600), default=30, show_default=True, help="Seconds.")
@click.option("--every", type=click.FloatRange(0.001, 86400), default=None, help="Repeat every this many seconds.")
@click.option("--count", type=click.IntRange(1), default=None, help="With --every: stop after this many.")
@common
def request(
    name: str,
    body: str | None,
    body_format: str,
    timeout: float,
    every: float | None,
    count: int | None,
    url: str | None,
    prefix: str,
    as_json: bool,
) -> None:
    """Send BODY to queue NAME and wait for the consumer's reply (a sync request)."""
    e = env(url, prefix, as_json)
    value = read_body(body, body_format)
    stop = stop_on_signals()
    with session(e) as client:
        q = client.queue(name)
        if not callable(getattr(q, "request", None)):
            raise UserError("sync requests are not in this build of rqueue")
        n = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                reply = q.request(value, timeout=timeout)  # type: ignore[attr-defined]
            except TimeoutError:
                if every is None:
                    raise UserError(f"no reply within {timeout:g} s; the request was withdrawn") from None
                log.warning("no reply", extra={"queue": name, "timeout": timeout})
            else:
                ms = (time.perf_counter() - t0) * 1000
                if every is None:
                    emit(e, {"reply": reply, "ms": round(ms, 3)}, out.preview(reply, 10_000))
                else:
                    log.info("reply", extra={"queue": name, "reply": out.jsonable(reply), "ms": round(ms, 3)})
            n += 1
            if every is None or (count is not None and n >= count):
                break
            stop.wait(every)


@cli.command()
@click.argument("topic")
@click.argument("body", required=False)
@BODY_FORMAT
@common
def publish(topic: str, body: str | None, body_format: str, url: str | None, prefix: str, as_json: bool) -> None:
    """Publish BODY (or stdin) to every subscription of TOPIC."""
    e = env(url, prefix, as_json)
    value = read_body(body, body_format)
    with session(e) as client:
        if not callable(getattr(client, "topic", None)):
            raise UserError("topics are not in this build of rqueue")
        result = client.topic(topic).publish(value)  # type: ignore[attr-defined]
    emit(e, {"result": out.jsonable(result)}, f"published to {topic}: {result}")


@cli.command()
@click.argument("topic")
@click.argument("subscription")
@click.argument("target")
@click.option("--ttl", type=float, default=300, show_default=True, help="Seconds a silent subscription lives.")
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=4, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 1000), default=10, show_default=True)
@common
def subscribe(
    topic: str,
    subscription: str,
    target: str,
    ttl: float,
    concurrency: int,
    batch_size: int,
    url: str | None,
    prefix: str,
    as_json: bool,
) -> None:
    """Subscribe SUBSCRIPTION to TOPIC and run handler TARGET (pkg.module:function) on it."""
    e = env(url, prefix, as_json)
    handler = import_target(target)
    with session(e) as client:
        if not callable(getattr(client, "topic", None)):
            raise UserError("topics are not in this build of rqueue")
        from ._consumer import Consumer

        sub = client.topic(topic).subscribe(subscription, ttl=ttl)  # type: ignore[attr-defined]
        log.info("subscribed", extra={"topic": topic, "subscription": subscription, "queue": sub.name})
        Consumer(sub, handler, concurrency=concurrency, batch_size=batch_size).run()


def import_target(target: str) -> Callable[..., Any]:
    """``pkg.module:function`` -> the function, or a one-line error."""
    import importlib

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"handler must be given as pkg.module:function, got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise UserError(f"cannot import handler {target!r}: {err}") from None
    if not callable(obj):
        raise UserError(f"handler {target!r} is not callable")
    return obj  # type: ignore[no-any-return]


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (docker stop), for loops that end cleanly."""
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


# ---------------------------------------------------------------- workers and load


@cli.command()
@click.argument("target")
@click.option("--queue", "-q", "queues", multiple=True, required=True, help="Queue to consume; repeat for more.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 10_000), default=16, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, help="Serve Prometheus metrics here.")
@common
def worker(
    target: str,
    queues: tuple[str, ...],
    concurrency: int,
    batch_size: int,
    metrics_port: int | None,
    url: str | None,
    prefix: str,
    as_json: bool,
) -> None:
    """Run handler TARGET (pkg.module:function) on --queue until SIGINT/SIGTERM."""
    for q in queues:
        queue_name(q)
    try:
        from ._worker import run_worker
    except ImportError:
        raise UserError("the consumer (rqueue worker) is not in this build of rqueue") from None
    run_worker(
        target,
        list(queues),
        url=url,
        concurrency=concurrency,
        batch_size=batch_size,
        prefix=prefix,
        metrics_port=metrics_port,
    )


@cli.command()
@click.argument("name", callback=lambda _c, _p, v: queue_name(v))
@click.option("--rate", type=click.FloatRange(0.01, 1_000_000), default=20, show_default=True, help="Messages/s.")
@click.option("--seconds", type=click.FloatRange(0), default=0, show_default=True, help="0: until Ctrl-C/SIGTERM.")
@click.option("--requests", type=click.FloatRange(0, 100), default=0, show_default=True, help="% as sync requests.")
@click.option("--tracked", type=click.FloatRange(0, 100), default=0, show_default=True, help="% as tracked sends.")
@click.option("--poison", type=click.FloatRange(0, 100), default=0, show_default=True, help="% the demo handler fails.")
@click.option("--topic", default=None, help="Also publish an order_placed event per message to this topic.")
@click.option("--report-every", type=click.FloatRange(0.1), default=5, show_default=True, help="Seconds between logs.")
@common
def produce(
    name: str,
    rate: float,
    seconds: float,
    requests: float,
    tracked: float,
    poison: float,
    topic: str | None,
    report_every: float,
    url: str | None,
    prefix: str,
    as_json: bool,
) -> None:
    """Send orders to queue NAME at --rate per second: a load generator."""
    from ._load import LoadGenerator

    if requests + tracked > 100:
        raise UserError(f"--requests plus --tracked must be at most 100 %, got {requests + tracked:g}")
    e = env(url, prefix, as_json)
    stop = stop_on_signals()
    with session(e) as client:
        client.queue(name).stats()  # fail now on an unknown queue
        gen = LoadGenerator(
            client, name, rate=rate, requests_pct=requests, tracked_pct=tracked, poison_pct=poison, topic=topic
        )
        thread = threading.Thread(target=gen.run, args=(stop, seconds or None), name="rqueue-produce")
        thread.start()
        log.info("producing", extra={"queue": name, "rate": rate, "topic": topic})
        while thread.is_alive():
            thread.join(report_every)
            c = gen.counts()
            log.info(
                "sent",
                extra={
                    "queue": name,
                    "sent": c.sent,
                    "requests": c.requests,
                    "replies": c.replies,
                    "tracked": c.tracked,
                    "events": c.events,
                    "published": c.published,
                    "errors": c.send_errors + c.request_errors,
                },
            )
    c = gen.counts()
    emit(e, vars(c) | {"reply_ms": None}, f"sent {c.sent:,} message(s) to {name}")


@cli.command()
@click.option("--messages", "-n", type=click.IntRange(1, 10_000_000), default=20_000, show_default=True)
@click.option("--batch", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--body-bytes", type=click.IntRange(1, 1_000_000), default=240, show_default=True)
@common
def bench(messages: int, batch: int, body_bytes: int, url: str | None, prefix: str, as_json: bool) -> None:
    """Measure send and receive+delete throughput on a throwaway queue."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import _bench

    e = env(url, prefix, as_json)
    with session(e) as client:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=e.as_json,
        )
        with progress:
            tasks = {p: progress.add_task(p, total=messages) for p in ("send", "drain")}
            result = _bench.run(
                client,
                messages=messages,
                batch=batch,
                body_bytes=body_bytes,
                progress=lambda phase, n: progress.advance(tasks[phase], n),
            )
        server = client.url
    data = {
        "server": server,
        "messages": messages,
        "batch": batch,
        "body_bytes": body_bytes,
        "send_per_s": round(result.send_rate),
        "receive_delete_per_s": round(result.drain_rate),
    }
    emit(
        e,
        data,
        f"{messages:,} messages of ~{body_bytes} B in batches of {batch}, one thread, {server}:\n"
        f"  send            {result.send_rate:>10,.0f} msgs/s\n"
        f"  receive+delete  {result.drain_rate:>10,.0f} msgs/s",
    )


@cli.command()
@click.option("--seconds", type=click.FloatRange(0), default=30, show_default=True, help="0: until Ctrl-C.")
@click.option("--rate", type=click.FloatRange(0.1, 100_000), default=100, show_default=True, help="Orders/s.")
@click.option("--consumers", type=click.IntRange(1, 32), default=3, show_default=True, help="Worker processes.")
@click.option(
    "--url", envvar="RQUEUE_URL", default=None, help="Server to use. Env: RQUEUE_URL. Default: embedded:// (private)."
)
@click.option("--prefix", envvar="RQUEUE_PREFIX", default="rqueue", show_default=True, help="Key prefix.")
@click.option("--json", "as_json", is_flag=True, help="No live view; print the summary as JSON.")
def demo(seconds: float, rate: float, consumers: int, url: str | None, prefix: str, as_json: bool) -> None:
    """Watch rqueue work: a server, a load generator, workers, a topic with two subscribers.

    Ends after --seconds (or on Ctrl-C) with a summary that accounts for every
    message: sent = processed + dead-lettered + still queued.
    """
    from . import _demo

    if not _demo.has_worker():
        raise UserError("rqueue demo needs the consumer (rqueue worker), which is not in this build of rqueue")
    run = _demo.Demo(
        url=url, prefix=prefix, seconds=seconds or None, rate=rate, consumers=consumers, console=console, quiet=as_json
    )
    summary = run.run()
    emit(Env(url, prefix, as_json), summary, _demo.render_summary(summary))
    if not summary["all_accounted"]:
        click.get_current_context().exit(1)


# ---------------------------------------------------------------- entry point


def one_line(err: BaseException) -> str:
    """An error as one line, with Python-only hints put in CLI terms."""
    msg = err.format_message() if isinstance(err, click.ClickException) else str(err)
    msg = re.sub(r"create it with create_queue\('([^']*)'\)", r"create it with: rqueue create \1", msg)
    msg = re.sub(
        r"use client\.queue\(\) to use it, or delete_queue\(\) first",
        "use it as it is, or delete it first with: rqueue delete-queue NAME",
        msg,
    )
    return " ".join(msg.split())


def main(argv: list[str] | None = None) -> None:
    """Run the command line; exit 2 with one line on stderr for a user's mistake."""
    try:
        rc = cli.main(args=argv, prog_name="rqueue", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("rqueue: aborted", err=True)
        sys.exit(130)
    except (click.ClickException, RQueueError) as err:
        click.echo(f"rqueue: error: {one_line(err)}", err=True)
        sys.exit(USER_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    except rx.RedisError as err:  # the server refused something: not a bug of ours, not worth a traceback
        click.echo(f"rqueue: server error: {one_line(err)}", err=True)
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
