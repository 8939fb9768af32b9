"""``embedded://`` servers live exactly as long as the process that started them, and leave nothing behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

import rqueue

from .cli_helpers import ROOT
from .servers import FixtureServer


def _thread_gone(native_id: int) -> bool:
    return not Path(f"/proc/self/task/{native_id}").exists()


def _wait_until(predicate: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_server_outlives_the_thread_that_connected() -> None:
    made: dict[str, object] = {}

    def connect_here() -> None:
        made["client"] = rqueue.connect("embedded://")
        made["tid"] = threading.get_native_id()

    worker = threading.Thread(target=connect_here)
    worker.start()
    worker.join()
    client = made["client"]
    assert isinstance(client, rqueue.Client)
    try:
        tid = made["tid"]
        assert isinstance(tid, int)
        _wait_until(lambda: _thread_gone(tid), "the connecting thread to exit")
        server = psutil.Process(int(client.redis.info("server")["process_id"]))
        # A parent-death signal tied to that thread would stop the server within a server tick (100 ms).
        with pytest.raises(psutil.TimeoutExpired):
            server.wait(1.0)
        q = client.create_queue("orders")
        q.send("from the main thread")
        assert [m.body for m in q.receive(wait_time=1)] == ["from the main thread"]
    finally:
        client.close()
    assert not server.is_running()


def _orphaner(url: str, *, from_thread: bool) -> subprocess.Popen[str]:
    """A process that connects to ``url`` (from a thread that then ends, if asked), prints
    the server's pid and folder, and sleeps until it is killed."""
    code = textwrap.dedent(f"""
        import sys, threading, time, rqueue
        made = {{}}
        def go():
            made["c"] = rqueue.connect({url!r})
        if {from_thread!r}:
            t = threading.Thread(target=go); t.start(); t.join()
        else:
            go()
        c = made["c"]
        print(c.redis.info("server")["process_id"], c.redis.config_get("dir")["dir"], flush=True)
        time.sleep(600)
    """)
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
    )


@pytest.mark.parametrize("from_thread", [False, True], ids=["main-thread", "worker-thread"])
def test_sigkill_of_the_parent_stops_the_server_and_removes_its_folder(from_thread: bool) -> None:
    parent = _orphaner("embedded://", from_thread=from_thread)
    try:
        assert parent.stdout is not None
        pid_text, folder = parent.stdout.readline().split()
        server = psutil.Process(int(pid_text))
        assert Path(folder).is_dir() and server.is_running()
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert parent.stdout is not None
        parent.stdout.close()
    _wait_until(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, "the server to stop")
    _wait_until(lambda: not Path(folder).exists(), f"{folder} to be removed")


def test_sigkill_of_the_parent_keeps_a_named_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    parent = _orphaner(f"embedded://{data}", from_thread=True)
    try:
        assert parent.stdout is not None
        pid_text, folder = parent.stdout.readline().split()
        server = psutil.Process(int(pid_text))
        assert Path(folder) == data
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert parent.stdout is not None
        parent.stdout.close()
    _wait_until(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, "the server to stop")
    assert any(p.name.startswith("appendonly") for p in data.iterdir())  # the user's data stays


def test_a_killed_server_restarts_on_its_folder() -> None:
    """kill() (a crash) and start() again keep the temporary folder; close() removes it."""
    server = FixtureServer().start()
    folder = server.data_dir
    try:
        pid = server.pid
        assert pid is not None
        server.kill()
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert folder.is_dir()
        server.start()
        assert server.pid != pid
        with rqueue.connect(server.url) as c:
            assert c.list_queues() == []
    finally:
        server.close()
    assert not folder.exists()


def test_unusable_folder_is_invalid_parameter(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(rqueue.InvalidParameter, match=r"^url 'embedded://.*a-file/data': cannot make the folder"):
        rqueue.connect(f"embedded://{blocker}/data")


def test_relative_folder_is_refused_not_made_temporary() -> None:
    """embedded://data would otherwise start a temporary server and lose the data on close."""
    with pytest.raises(rqueue.InvalidParameter, match=r"absolute path after three slashes \(embedded:///"):
        rqueue.connect("embedded://data")
