"""Drive a command in a real terminal: a tmux pane on a private tmux server."""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid


class Pane:
    """One command in a detached tmux session; the pane stays after it exits."""

    def __init__(self, argv: list[str], env: dict[str, str], *, width: int = 160, height: int = 50) -> None:
        self.socket = "rqueue-test-" + uuid.uuid4().hex[:8]
        command = "exec env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + shlex.join(argv)
        self._tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "sleep 600")
        self._tmux("set-option", "-g", "remain-on-exit", "on")
        self._tmux("respawn-pane", "-k", "-t", "t", command)

    def _tmux(self, *args: str) -> str:
        p = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, timeout=10, check=True)
        return p.stdout.decode()

    def text(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

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

    def pid(self) -> int:
        return int(self._tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip())

    def exit_status(self, timeout: float = 60) -> int:
        """Wait for the command to exit; its exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self._tmux("display-message", "-p", "-t", "t", "#{pane_dead} #{pane_dead_status}").split()
            if state[0] == "1":
                return int(state[1])
            time.sleep(0.1)
        raise AssertionError(f"command still running after {timeout} s; screen:\n{self.text()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
