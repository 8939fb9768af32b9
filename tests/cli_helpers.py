"""Running the ``rqueue`` command as a real subprocess, and looking at Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from rqueue._protocol.keys import prefix_pattern

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli_env(url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RQUEUE_")}
    env.update(RQUEUE_URL=url, RQUEUE_PREFIX=prefix, PYTHONUNBUFFERED="1", COLUMNS="200", **extra)
    return env


def run_cli(url: str, prefix: str, *args: str, stdin: bytes | None = None, timeout: float = 60) -> Result:
    """``rqueue ARGS`` in a new process with RQUEUE_URL and RQUEUE_PREFIX set."""
    p = subprocess.run(
        [sys.executable, "-m", "rqueue", *args],
        input=stdin,
        capture_output=True,
        env=cli_env(url, prefix),
        timeout=timeout,
        cwd=ROOT,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    return Result(p.returncode, p.stdout.decode(), p.stderr.decode())


def assert_user_error(r: Result, *needles: str) -> None:
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert r.rc == 2, (r.rc, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("rqueue: error: "), r.err
    assert "Traceback" not in r.err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def snapshot(raw: Any, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its full content, to prove nothing changed."""
    snap: dict[str, Any] = {}
    for key in sorted(raw.scan_iter(match=prefix_pattern(prefix), count=1000)):
        kind = raw.type(key).decode()
        if kind == "hash":
            snap[key.decode()] = raw.hgetall(key)
        elif kind == "zset":
            snap[key.decode()] = raw.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            snap[key.decode()] = raw.lrange(key, 0, -1)
        elif kind == "set":
            snap[key.decode()] = sorted(raw.smembers(key))
        else:
            snap[key.decode()] = raw.get(key)
    return snap


def descendants_alive(pid: int) -> list[psutil.Process]:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]


def processes_with_env(marker: str) -> list[psutil.Process]:
    """Live processes whose environment holds ``marker`` (RQUEUE_TEST_MARK), to find orphans."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("RQUEUE_TEST_MARK") == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
