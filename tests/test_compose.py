"""docker-compose.yml and the Dockerfile, tested without a Docker engine.

The file is parsed and checked service by service, then every service's
command runs here as compose would run it (same argv, same environment but
RQUEUE_URL pointing at the test server) for a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import rqueue
from rqueue._transport.embedded import free_port

from .cli_helpers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
RQUEUE_SERVICES = ["setup", "producer", "consumer", "requester", "subscriber"]


def test_redis_service_keeps_messages() -> None:
    r = SERVICES["redis"]
    assert r["image"].startswith("redis:")
    cmd = r["command"]
    assert cmd[0] == "redis-server"
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert flags["--appendonly"] == "yes"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert r["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in r["volumes"])


@pytest.mark.parametrize("name", RQUEUE_SERVICES)
def test_rqueue_services_are_rqueue_commands_on_the_shared_server(name: str) -> None:
    s = SERVICES[name]
    assert s["build"] == "." and (ROOT / "Dockerfile").is_file()
    assert s["image"] == "rqueue:local"
    assert s["command"][0] == "rqueue"
    assert s["environment"]["RQUEUE_URL"] == "redis://redis:6379/0"
    assert s["depends_on"]["redis"] == {"condition": "service_healthy"}
    if name != "setup":
        assert s["depends_on"]["setup"] == {"condition": "service_completed_successfully"}
        assert s["restart"] == "unless-stopped"


def test_consumer_can_be_scaled() -> None:
    # --scale consumer=3 fails with a fixed container name or host port.
    c = SERVICES["consumer"]
    assert "container_name" not in c and "ports" not in c


def test_dockerfile_installs_the_package_with_its_scripts() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    assert any(ln.startswith("FROM python:3.1") for ln in lines)
    copied = " ".join(ln for ln in lines if ln.startswith("COPY"))
    for needed in ("pyproject.toml", "README.md", "rqueue", "lua"):  # what hatch builds from
        assert needed in copied, needed
    assert any(ln.startswith('RUN pip install ".[metrics]"') for ln in lines)  # --metrics-port needs the extra
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "lua" not in ignored and "rqueue" not in ignored


def local_argv(command: list[str]) -> list[str]:
    """The service's command as it runs here. Each container has its own network, so two
    consumers on one host need their own metrics port."""
    assert command[0] == "rqueue"
    args = list(command[1:])
    if "--metrics-port" in args:
        args[args.index("--metrics-port") + 1] = str(free_port())
    return [sys.executable, "-m", "rqueue", *args]


def service_env(name: str, url: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RQUEUE_")}
    env.update({k: str(v) for k, v in SERVICES[name].get("environment", {}).items()})
    env.update(RQUEUE_URL=url, RQUEUE_PREFIX=prefix, PYTHONUNBUFFERED="1")
    return env


def json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_every_service_command_runs_as_configured(
    server_url: str, prefix: str, lib: rqueue.Client, tmp_path: Path
) -> None:
    setup = subprocess.run(
        local_argv(SERVICES["setup"]["command"]),
        env=service_env("setup", server_url, prefix),
        capture_output=True,
        timeout=60,
    )
    assert setup.returncode == 0, setup.stderr
    # Compose starts the rest once setup has completed; two consumers as with --scale.
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name in ["subscriber", "consumer", "consumer-2", "requester", "producer"]:
        service = name.partition("-")[0]
        with open(tmp_path / f"{name}.log", "wb") as log:
            procs[name] = subprocess.Popen(
                local_argv(SERVICES[service]["command"]),
                env=service_env(service, server_url, prefix),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    orders = lib.queue("orders")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            replies = [r for r in json_lines(tmp_path / "requester.log") if r.get("msg") == "reply"]
            subs = lib.topic("events").subscriptions()  # type: ignore[attr-defined]
            if orders.stats().deleted_total >= 50 and len(replies) >= 2 and subs:
                break
            for name, p in procs.items():
                assert p.poll() is None, f"{name} exited: {(tmp_path / f'{name}.log').read_text()}"
            time.sleep(0.2)
        else:
            pytest.fail("the stack did not get going: " + str(orders.stats()))
    finally:
        for p in procs.values():  # docker stop: SIGTERM, then the grace period
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = {}
        for name, p in procs.items():
            try:
                codes[name] = p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait()
    logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in procs}
    assert codes == dict.fromkeys(procs, 0), logs
    assert not any("Traceback" in text for text in logs.values()), logs
    # Replies are the handler's return value; the producer logged what it sent, as JSON lines.
    replies = [r for r in json_lines(tmp_path / "requester.log") if r.get("msg") == "reply"]
    assert replies[0]["reply"] == {"order": -1, "status": "shipped"}
    assert any(r.get("msg") == "sent" and r["sent"] > 0 for r in json_lines(tmp_path / "producer.log"))
    audit = lib.topic("events").subscription("audit")  # type: ignore[attr-defined]
    assert audit.stats().deleted_total > 0
    s = orders.stats()
    assert s.sent_total == s.deleted_total + s.dead_lettered_total + s.visible + s.in_flight + s.delayed
