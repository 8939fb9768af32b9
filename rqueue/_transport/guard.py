"""A server's guard: runs it as a child and ties its life, and its temporary folder, to its starter.

``rqueue._transport.embedded`` runs this file as a script (standard library only)::

    python -I -S guard.py LOG [--cleanup DIR] -- SERVER ARGS...

Why: the parent-death signal (``PR_SET_PDEATHSIG``) fires when the *thread*
that forked the child exits, so a server started straight from a short-lived
thread died with that thread; and a server killed with its parent left its
temporary folder behind. The guard instead watches its stdin, a pipe whose
only writer is the starting process: end of file comes when that process
closes it or exits in any way (SIGKILL included; the kernel closes its pipes),
whichever thread started the server.

Protocol. stdout: the server's pid on one line, then ``exited`` when the
server ends on its own. stdin: end of file stops the server (SIGTERM, then
SIGKILL after a grace period) and removes DIR; ``s`` stops it keeping DIR,
``k`` kills it (SIGKILL, a crash for the tests) keeping DIR; the guard then
exits. After the server ended on its own the guard goes on waiting, so DIR is
still removed when the starter goes. SIGTERM to the guard counts as end of
file. On Linux the server also dies with the guard itself (the guard has one
thread, so its parent-death signal means what it says).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

#: Seconds a server has to stop on SIGTERM before it is killed.
STOP_GRACE = 10.0


def _die_with(guard: int) -> Callable[[], None]:
    def preexec() -> None:  # pragma: no cover - runs in the child
        if sys.platform.startswith("linux"):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.getppid() != guard:  # the guard died before the signal was armed
                os._exit(1)

    return preexec


def _stop(server: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    if server.poll() is not None:
        return
    if kill:
        server.kill()
    else:
        server.terminate()
        try:
            server.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            server.kill()
    server.wait()


class _Terminated(Exception):
    pass


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise _Terminated


def _say(line: bytes) -> None:
    try:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
    except OSError:  # the starter is gone; stdin will tell
        pass


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)  # Linux 5.3+: readable once the process ends
    except (AttributeError, OSError):
        return None


def main(argv: list[str]) -> int:
    log_path, rest = argv[0], argv[1:]
    cleanup = None
    if rest[:1] == ["--cleanup"]:
        cleanup, rest = rest[1], rest[2:]
    if rest[:1] != ["--"] or len(rest) < 2:
        print("usage: guard.py LOG [--cleanup DIR] -- SERVER ARGS...", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            rest[1:], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with(os.getpid())
        )
    _say(b"%d\n" % server.pid)
    pidfd = _pidfd(server.pid)
    running = True
    command = b""
    try:
        while True:
            watch = [0] + ([pidfd] if running and pidfd is not None else [])
            ready = select.select(watch, [], [], 0.2 if running and pidfd is None else None)[0]
            if running and (pidfd in ready or server.poll() is not None):
                server.wait()
                running = False
                _say(b"exited\n")
            if 0 in ready:
                command = os.read(0, 1)
                if command in (b"", b"s", b"k"):
                    break
    except _Terminated:
        command = b""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the stop and the clean-up
    _stop(server, kill=command == b"k")
    if command == b"" and cleanup:
        shutil.rmtree(cleanup, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
