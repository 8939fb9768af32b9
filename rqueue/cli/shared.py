"""What every ``rqueue`` command shares: the group, common options, output and errors."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console

from rqueue._protocol.keys import QueueKeys
from rqueue._sync.client import Client, connect
from rqueue.cli import logs as _logging
from rqueue.cli import output as out

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
        """Connect; any failure is an ``RQueueError`` that ``main`` prints as one line."""
        return connect(self.url or default, prefix=self.prefix)


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


def confirm(yes: bool, what: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"{what}: pass --yes to confirm (stdin is not a terminal)")
    if not click.confirm(what + "?"):
        raise UserError("aborted; nothing changed")


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (docker stop), for loops that end cleanly."""
    stop = threading.Event()

    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


class Interrupted(BaseException):
    """A stop signal ended a blocking wait (a BaseException: nothing on the way swallows it)."""


class Stoppable:
    """SIGINT and SIGTERM for a command that blocks: the first signal sets ``event``, and
    ends a wait at once if it comes inside ``interruptible()``; a second one ends anything
    (the user insists). ``exit_code`` is then 130 (SIGINT) or 143 (SIGTERM), as a shell reports."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum = 0
        self._armed = False
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        first = not self.event.is_set()
        self.signum = self.signum or signum
        self.event.set()
        if self._armed or not first:
            self._armed = False
            raise Interrupted

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block a signal ends at once (raising Interrupted); raises at once if one came before."""
        self._armed = True  # before the check: a signal in between must not go unnoticed
        try:
            if self.event.is_set():
                raise Interrupted
            yield
        finally:
            self._armed = False

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def one_line(err: BaseException) -> str:
    """An error as one line, with Python-only hints put in CLI terms."""
    msg = err.format_message() if isinstance(err, click.ClickException) else str(err)
    msg = re.sub(r"create it with create_queue\('([^']*)'\)", r"create it with: rqueue create \1", msg)
    msg = re.sub(
        r"use client\.queue\(\) to use it, set_attributes\(\) to change it, or delete_queue\(\) first",
        "use it as it is, change it with: rqueue set NAME key=value, or delete it first with: rqueue delete-queue NAME",
        msg,
    )
    return " ".join(msg.split())
