"""``rqueue demo`` end to end: a bounded run on embedded://, and Ctrl-C in a terminal."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from .cli_helpers import ROOT, cli_env, descendants_alive, processes_with_env
from .tmux import Pane


def demo_env(mark: str) -> dict[str, str]:
    env = cli_env("", "rqueue", RQUEUE_TEST_MARK=mark)
    del env["RQUEUE_URL"]  # neither --url nor RQUEUE_URL: the demo uses embedded://
    return env


def alive(pids: set[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def test_bounded_demo_on_embedded_accounts_for_every_message(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    with open(tmp_path / "out", "wb") as stdout, open(tmp_path / "err", "wb") as stderr:
        p = subprocess.Popen(
            [sys.executable, "-m", "rqueue", "demo", "--seconds", "5", "--rate", "100", "--json"],
            stdout=stdout,
            stderr=stderr,
            env=demo_env(mark),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    seen: set[int] = set()  # every process the demo started (server, workers, subscribers)
    deadline = time.monotonic() + 90
    while p.poll() is None and time.monotonic() < deadline:
        seen.update(c.pid for c in descendants_alive(p.pid))
        time.sleep(0.1)
    assert p.wait(5) == 0, (tmp_path / "err").read_text()
    summary = json.loads((tmp_path / "out").read_text())
    assert summary["server"].startswith("redis://127.0.0.1:")
    assert not summary["interrupted"]
    assert summary["processed"] > 0
    assert summary["all_accounted"]
    orders = summary["queues"]["demo-orders"]
    assert orders["sent"] == summary["load"]["sent"] > 0  # what the generator sent is what the server counted
    assert orders["sent"] == orders["processed"] + orders["dead_lettered"] + orders["expired"] + orders["still_queued"]
    assert orders["dead_lettered"] <= summary["load"]["poison"]  # only poison orders die
    # Each worker and subscriber stopped gracefully on SIGTERM.
    assert summary["processes"] and set(summary["processes"].values()) == {0}, summary["processes"]
    # The FIFO queue of per-customer orders: every order ran, each customer's in order.
    fifo = summary["fifo"]
    customer_orders = summary["queues"]["demo-customer-orders"]
    assert fifo["sent"] == customer_orders["sent"] > 0
    assert fifo["checked"] == customer_orders["processed"] > 0
    assert fifo["out_of_order"] == 0
    subs = {name: q for name, q in summary["queues"].items() if name.startswith("demo-events/")}
    assert sorted(subs) == ["demo-events/audit", "demo-events/email"]
    assert all(q["sent"] == summary["load"]["published"] == orders["sent"] for q in subs.values())
    assert all(q["processed"] > 0 for q in subs.values())
    load = summary["load"]
    assert load["requests"] > 0 and load["replies"] > 0  # sync requests got their replies
    assert load["replies"] + load["request_timeouts"] + load["request_errors"] == load["requests"]
    assert load["tracked"] > 0 and load["events"].get("processed", 0) > 0  # tracked sends saw events
    # No child process (worker, subscriber, server) outlives the demo.
    assert len(seen) >= 5, seen  # the server and four workers at least
    assert alive(seen) == []
    assert processes_with_env(mark) == []
    port = int(summary["server"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_demo_in_a_terminal_shows_the_live_table_and_stops_on_ctrl_c() -> None:
    mark = uuid.uuid4().hex
    pane = Pane([sys.executable, "-m", "rqueue", "demo", "--seconds", "0", "--rate", "50"], demo_env(mark))
    try:
        pane.wait_for("Ctrl-C to stop")
        # 3 consumers, 1 on the FIFO queue, 2 subscribers
        screen = pane.wait_for("worker processes: 6 of 6 running", timeout=60)
        pane.wait_for("events: processed")  # tracked sends hear back
        screen = pane.wait_for("demo-events → email")
        needles = ("rqueue demo — running", "demo-orders", "processed", "dead-lettered", "sent/s", "replies")
        for needle in (*needles, "demo-customer-orders (FIFO)", "FIFO groups (customers)"):
            assert needle in screen, needle
        children = {c.pid for c in descendants_alive(pane.command_pid())}
        assert len(children) >= 7  # its server and its worker and subscriber processes
        pane.send("C-c")
        assert pane.exit_status() == 0
        screen = pane.text()
        assert "every message accounted for" in screen and "MISMATCH" not in screen
        assert "every customer's orders in order" in screen
        assert "Traceback" not in screen
        assert alive(children) == []
        assert processes_with_env(mark) == []
    finally:
        pane.close()
