"""Live views in a real terminal (tmux): they draw, refresh and stop on Ctrl-C."""

from __future__ import annotations

import shutil
import sys
from typing import Any

import pytest

from .cli_helpers import cli_env
from .tmux import Pane

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def test_stats_watch_refreshes_in_place_and_stops_on_ctrl_c(server_url: str, prefix: str, lib: Any) -> None:
    q = lib.create_queue("orders")
    pane = Pane([sys.executable, "-m", "rqueue", "stats", "--watch", "--interval", "0.2"], cli_env(server_url, prefix))
    try:
        screen = pane.wait_for("orders")
        assert "rqueue stats" in screen and "sent/s" in screen
        q.send_batch(["x"] * 1000)
        q.send_batch(["x"] * 234)
        screen = pane.wait_for("1,234")
        assert screen.count("rqueue stats") == 1  # redrawn in place, not appended
        pane.send("C-c")
        assert pane.exit_status() == 0
        assert "Traceback" not in pane.text()
    finally:
        pane.close()
