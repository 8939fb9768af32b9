"""Drive a command in a real terminal: a tmux pane on a private tmux server."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
import uuid


class Pane:
    """One command in a detached tmux session, run by bash as a user's shell would.

    The command's exit status is printed by bash after it (``[exit N]``),
    which is how ``exit_status`` reads it; bash stays, so the terminal is not
    closed under a process that is still finishing.
    """

    def __init__(self, argv: list[str], env: dict[str, str], *, width: int = 160, height: int = 50) -> None:
        self.socket = "rqueue-test-" + uuid.uuid4().hex[:8]
        assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        script = f'env {assignments} {shlex.join(argv)}; echo "[exit $?]"; sleep 600'
        size = ["-x", str(width), "-y", str(height)]
        self._tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", *size, shlex.join(["bash", "-c", script]))

    def _tmux(self, *args: str) -> str:
        p = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, timeout=10, check=True)
        return p.stdout.decode()

    def text(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", "t")

    def wait_for(self, needle: str, timeout: float = 30) -> str:
        """Poll the screen until ``needle`` shows; return the screen."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.text()
            if needle in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} did not show within {timeout} s; screen:\n{screen}")
            time.sleep(0.1)

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def command_pid(self) -> int:
        """The pid of the command (the child of the pane's bash)."""
        shell = int(self._tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip())
        out = subprocess.run(["pgrep", "-P", str(shell)], capture_output=True, timeout=10).stdout.split()
        pids = [int(p) for p in out]
        assert pids, "the command is not running"
        return pids[0]

    def exit_status(self, timeout: float = 60) -> int:
        """Wait for the command to exit; its exit status (128 + N for signal N)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"\[exit (\d+)\]", self.text())
            if found:
                return int(found.group(1))
            time.sleep(0.1)
        raise AssertionError(f"command still running after {timeout} s; screen:\n{self.text()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
