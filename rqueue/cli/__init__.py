"""The ``rqueue`` command line: a thin layer over the library.

Every command takes ``--url`` (else ``RQUEUE_URL``, else localhost; ``demo``
falls back to ``embedded://``) and ``--prefix`` (else ``RQUEUE_PREFIX``).
A user's mistake (bad URL, unreachable server, unknown queue, bad number,
oversized body) and a server's refusal (full, wrong password, read-only)
print one line to stderr and exit with code 2.
"""

from __future__ import annotations

import sys

import click
from redis import exceptions as rx

from rqueue._protocol.errors import RQueueError
from rqueue._transport.backends import mask_url, resolve_url
from rqueue._transport.errors import map_error
from rqueue.cli import queues as _cli_queues
from rqueue.cli import traffic as _cli_traffic
from rqueue.cli.shared import USER_ERROR, cli, one_line

__all__ = ["cli", "main"]
_COMMANDS = (_cli_queues, _cli_traffic)  # importing them registers their commands


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
    except (rx.RedisError, rx.RedisClusterException) as err:  # unmapped (a gap of ours): still one line
        click.echo(f"rqueue: error: {one_line(map_error(err, mask_url(resolve_url(None)), ''))}", err=True)
        sys.exit(USER_ERROR)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
