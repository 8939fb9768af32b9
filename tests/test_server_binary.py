"""RQUEUE_SERVER_BINARY picks the server of embedded:// and of the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import rqueue
from rqueue._transport.embedded import server_binary


def test_the_variable_wins_and_a_bad_path_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RQUEUE_SERVER_BINARY", raising=False)
    found = server_binary()
    monkeypatch.setenv("RQUEUE_SERVER_BINARY", found)
    assert server_binary() == found
    missing = str(tmp_path / "no-such-server")
    monkeypatch.setenv("RQUEUE_SERVER_BINARY", missing)
    with pytest.raises(rqueue.RQueueError, match="RQUEUE_SERVER_BINARY=.*no-such-server.*not an executable"):
        server_binary()


def test_embedded_runs_the_chosen_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = server_binary()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    monkeypatch.setenv("RQUEUE_SERVER_BINARY", binary)
    client = rqueue.connect("embedded://")
    try:
        info = client.redis.info("server")
        reported = info.get("valkey_version") or info["redis_version"]
        assert f"v={reported} " in version, (version, reported)
        q = client.create_queue("q")
        q.send("x")
        assert [m.body for m in q.receive(1)] == ["x"]
    finally:
        client.close()
