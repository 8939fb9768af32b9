"""``rqueue`` commands that move messages: request, publish, subscribe, worker, produce, bench, demo.

(The queue-administration commands are in ``queues.py``.)
"""

from __future__ import annotations

import errno
import threading
import time
from typing import Any

import click

from rqueue._consumer.threads import Consumer
from rqueue._protocol import operations as _core
from rqueue._protocol.errors import RequestTimeout, RQueueError
from rqueue._sync.client import Client, Queue
from rqueue._sync.topic import Subscription
from rqueue.cli import output as out
from rqueue.cli.shared import (
    BODY_FORMAT,
    Env,
    Interrupted,
    Stoppable,
    UserError,
    cli,
    common,
    console,
    emit,
    env,
    log,
    one_line,
    queue_name,
    read_body,
    session,
    stop_on_signals,
)
from rqueue.cli.worker import load_handler, run_worker

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
    """Send BODY to queue NAME and wait for the consumer's reply (a sync request).

    Ctrl-C or SIGTERM withdraws a request still waiting, as a timeout does, and
    exits 130 or 143 (with --every: ends the loop, exit 0).
    """
    e = env(url, prefix, as_json)
    value = read_body(body, body_format)
    stop = Stoppable()
    ctx = click.get_current_context()
    try:
        with session(e) as client:
            q = client.queue(name)
            n = 0
            while not stop.event.is_set():
                _one_request(e, client, q, value, timeout, stop, repeating=every is not None)
                n += 1
                if every is None or (count is not None and n >= count):
                    return
                stop.event.wait(every)
    except Interrupted:  # before a request was sent, or a second signal
        stopped = None
    except _Stopped as err:
        stopped = err
    else:
        stopped = None
    if every is not None:  # a stop is how a repeating requester ends: exit 0
        if stopped is not None:
            log.warning("%s", stopped, extra={"queue": name})
        return
    click.echo(f"rqueue: {stopped or 'interrupted before the request was sent'}", err=True)
    ctx.exit(stop.exit_code)


def _one_request(
    e: Env, client: Client, q: Queue, value: Any, timeout: float, stop: Stoppable, repeating: bool
) -> None:
    """One request of ``rqueue request``: print its reply, or exit 1 on a timeout; when
    ``repeating`` (--every), log the reply or the failure and go on."""
    t0 = time.perf_counter()
    try:
        reply = _stoppable_request(client, q, value, timeout, stop)
    except TimeoutError as err:  # not a mistake of the user's: exit code 1
        if not repeating:
            click.echo(f"rqueue: {one_line(err)}", err=True)
            click.get_current_context().exit(1)
        log.warning("no reply: %s", one_line(err), extra={"queue": q.name, "timeout": timeout})
        return
    except RQueueError as err:
        if not repeating:
            raise
        log.warning("request failed: %s", one_line(err), extra={"queue": q.name})
        return
    ms = (time.perf_counter() - t0) * 1000
    if repeating:
        log.info("reply", extra={"queue": q.name, "reply": out.jsonable(reply), "ms": round(ms, 3)})
    else:
        emit(e, {"reply": reply, "ms": round(ms, 3)}, out.preview(reply, 10_000))


class _Stopped(Exception):
    """A stop signal ended a request; says what became of its message."""


def _stoppable_request(client: Client, q: Queue, value: Any, timeout: float, stop: Stoppable) -> Any:
    """``q.request(value, timeout=timeout)``, but a stop signal ends the wait at once and
    withdraws the message as a timeout would (raising ``_Stopped``, which says how it went)."""
    keys = q._keys
    flow = _core.request_flow(keys, value, None, None, timeout)
    message_id: str | None = None
    try:
        op = next(flow)
        while True:
            if stop.event.is_set():
                raise Interrupted
            if isinstance(op, _core.Call):
                result = client.run(op)
                message_id = message_id or result[0]  # the first call sends and returns [id]
            else:
                with stop.interruptible():
                    result = client.pop(op.key, op.timeout)
            op = flow.send(result)
    except StopIteration as done:
        return done.value
    except Interrupted:
        flow.close()
        if message_id is None:
            raise
    try:
        reply = client.run(_core.withdraw(keys, message_id, timeout))
    except Interrupted:
        raise _Stopped(f"interrupted; message {message_id} may still be queued") from None
    except RequestTimeout as err:
        raise _Stopped(
            f"interrupted; message {message_id} withdrawn: it will not be processed"
            if err.withdrawn
            else f"interrupted; a consumer had received message {message_id} and may still process it "
            "(its reply is dropped)"
        ) from None
    except RQueueError as err:
        raise _Stopped(f"interrupted; {one_line(err)}") from None
    return reply  # it came just as the request was stopped: the request succeeded


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
        mid = client.topic(topic).publish(value)
    emit(e, {"id": mid}, mid)


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
    handler = load_handler(target)
    with session(e) as client:
        sub = client.topic(topic).subscribe(subscription, ttl=ttl)
        log.info("subscribed", extra={"topic": topic, "subscription": subscription, "queue": sub.name})
        done = threading.Event()
        keeper = threading.Thread(target=keep_alive, args=(sub, ttl, done), name="rqueue-subscription", daemon=True)
        keeper.start()
        try:
            Consumer(sub, handler, concurrency=concurrency, batch_size=batch_size).run()
        finally:
            done.set()
            keeper.join()


def keep_alive(sub: Subscription, ttl: float, done: threading.Event) -> None:
    """Refresh a subscription three times per TTL while its consumer runs, so it is not removed."""
    while not done.wait(ttl / 3):
        try:
            sub.refresh()
        except RQueueError as err:  # an outage: the consumer logs it too; try again next period
            log.warning("cannot refresh subscription: %s", one_line(err), extra={"queue": sub.name})


# ---------------------------------------------------------------- workers and load


@cli.command()
@click.argument("target")
@click.option("--queue", "-q", "queues", multiple=True, required=True, help="Queue to consume; repeat for more.")
@click.option("--concurrency", "-c", type=click.IntRange(1, 10_000), default=16, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, help="Serve Prometheus metrics here.")
@click.option("--retry-base", type=float, default=0.5, show_default=True, help="First retry delay in seconds.")
@common
def worker(
    target: str,
    queues: tuple[str, ...],
    concurrency: int,
    batch_size: int,
    metrics_port: int | None,
    retry_base: float,
    url: str | None,
    prefix: str,
    as_json: bool,
) -> None:
    """Run handler TARGET (pkg.module:function) on --queue until SIGINT/SIGTERM."""
    for q in queues:
        queue_name(q)
    try:
        run_worker(
            target,
            list(queues),
            url=url,
            concurrency=concurrency,
            batch_size=batch_size,
            prefix=prefix,
            metrics_port=metrics_port,
            retry_base=retry_base,
        )
    except OSError as err:
        if err.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        raise UserError(f"cannot serve metrics on port {metrics_port}: {err.strerror}") from None


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
    from rqueue.cli.loadgen import LoadGenerator

    if requests + tracked > 100:
        raise UserError(f"--requests plus --tracked must be at most 100 %, got {requests + tracked:g}")
    e = env(url, prefix, as_json)
    stop = stop_on_signals()
    with session(e) as client:
        client.queue(name).stats()  # fail now on an unknown queue
        gen = LoadGenerator(
            client, name, rate=rate, requests_pct=requests, tracked_pct=tracked, poison_pct=poison, topic=topic
        )
        thread = threading.Thread(target=gen.produce, args=(stop, seconds or None), name="rqueue-produce")
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

    from rqueue.cli import bench as _bench

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
            result = _bench.measure(
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
    from rqueue.cli import demo as _demo

    the_demo = _demo.Demo(
        url=url, prefix=prefix, seconds=seconds or None, rate=rate, consumers=consumers, console=console, quiet=as_json
    )
    summary = the_demo.run()
    emit(Env(url, prefix, as_json), summary, _demo.render_summary(summary))
    if not summary["all_accounted"]:
        click.get_current_context().exit(1)
