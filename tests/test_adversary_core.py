"""Adversarial review of the core after the issue 9/17 sweeps: each test failed before its fix."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

import rqueue

# ---------------------------------------------------------------- NaN in a dataclass's non-field attribute


@dataclasses.dataclass
class _Reading:
    """A dataclass that sets an attribute outside its fields: orjson serialises its ``__dict__``."""

    value: float

    def __post_init__(self) -> None:
        self.ratio = self.value / 0.0 if self.value else math.nan


def test_nan_in_a_dataclass_attribute_outside_its_fields_is_refused(q: Any) -> None:
    """orjson writes every public ``__dict__`` entry of a dataclass; NaN there must not become null."""
    with pytest.raises(rqueue.InvalidParameter, match=r"body\.ratio must be a finite number"):
        q.send(_Reading(0.0))
    assert q.stats().sent_total == 0


@dataclasses.dataclass
class _Cached:
    label: Any
    _cache: float = math.nan


def test_nan_in_a_private_dataclass_field_orjson_skips_is_accepted(q: Any) -> None:
    """orjson leaves out fields named with a leading underscore: a NaN there is not sent, so no refusal."""
    q.send(_Cached(None))
    (m,) = q.receive()
    assert m.body == {"label": None}


# ---------------------------------------------------------------- huge ints in number parameters


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda q: q.receive(visibility_timeout=10**400), "visibility_timeout"),
        (lambda q: q.receive(wait_time=10**400), "wait_time"),
        (lambda q: q.send("x", delay=10**400), "delay"),
        (lambda q: q.request("x", timeout=10**400), "timeout"),
        (lambda q: q.receive(max_messages=10**5000), "max_messages"),
        (lambda q: q.receive(visibility_timeout=-(10**5000)), "visibility_timeout"),
    ],
)
def test_an_int_too_large_for_a_float_is_an_invalid_parameter(q: Any, call: Any, name: str) -> None:
    """``math.isnan`` raises OverflowError on an int past float range: a number out of range is InvalidParameter."""
    with pytest.raises(rqueue.InvalidParameter, match=name):
        call(q)


def test_create_queue_with_a_huge_int_is_an_invalid_parameter(client: Any) -> None:
    with pytest.raises(rqueue.InvalidParameter, match="retention"):
        client.create_queue("orders", retention=10**400)
    assert client.list_queues() == []


# ---------------------------------------------------------------- reject reasons that are not UTF-8


def test_reject_reason_with_a_lone_surrogate_is_an_invalid_parameter(q: Any) -> None:
    """redis-py cannot encode it: a raw UnicodeEncodeError escaped, and nothing may change."""
    q.send("x")
    (m,) = q.receive()
    with pytest.raises(rqueue.InvalidParameter, match="reason"):
        q.reject(m.receipt, "bad \ud800 reason")
    assert q.delete(m.receipt) is True
    assert q.stats().dead == 0


# ---------------------------------------------------------------- the limits themselves are accepted


def test_every_limit_at_its_bound_is_accepted(client: Any) -> None:
    """12 h visibility, 14-day retention, delay == retention, 16 MiB messages, 1000 receives, 1000 max receives."""
    q = client.create_queue(
        "edge",
        visibility_timeout=12 * 3600,
        delay=14 * 86400,
        retention=14 * 86400,
        max_message_size=16 * 1024 * 1024,
        max_receive_count=1000,
    )
    assert q.attributes() == rqueue.QueueAttributes(12 * 3600, 14 * 86400, 14 * 86400, 16 * 1024 * 1024, 1000)
    big = b"x" * (16 * 1024 * 1024)
    q.send(big, delay=0)
    q.send("later", delay=14 * 86400)
    with pytest.raises(rqueue.MessageTooLarge):
        q.send(big + b"x", delay=0)
    ids = q.send_batch([str(i) for i in range(1000)], delay=0)
    got = q.receive(1000, visibility_timeout=12 * 3600)
    assert len(got) == 1000 and got[0].body == big
    assert [m.id for m in got[1:]] == ids[:999]
    s = q.stats()
    assert (s.visible, s.in_flight, s.delayed) == (1, 1000, 1)
    assert q.change_visibility_batch([m.receipt for m in got], 12 * 3600) == [True] * 1000
    assert q.delete_batch([m.receipt for m in got]) == [True] * 1000


# ---------------------------------------------------------------- embedded:///dir leaves one log, not one per run


def test_a_kept_embedded_folder_does_not_gather_a_log_file_per_run(tmp_path: Path) -> None:
    """Each run listens on a new free port; naming the log after the port left one more file per run."""
    folder = tmp_path / "data"
    for i in range(3):
        with rqueue.connect(f"embedded://{folder}") as c:
            c.create_queue("orders").send(i)
    logs = sorted(p.name for p in folder.iterdir() if p.suffix == ".log")
    assert logs == ["server.log"]
    with rqueue.connect(f"embedded://{folder}") as c:
        assert c.queue("orders").stats().visible == 3


def test_a_second_server_on_a_kept_embedded_folder_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    """Two servers on one append-only file would each keep only their own writes: refuse clearly."""
    url = f"embedded://{tmp_path / 'data'}"
    with rqueue.connect(url) as a:
        a.create_queue("orders").send("from a")
        with pytest.raises(rqueue.RQueueError, match=r"another embedded server uses that folder \(redis://127"):
            rqueue.connect(url)
        a.queue("orders").send("from a, later")
    with rqueue.connect(url) as b:  # the folder is free again, with everything a stored
        assert b.queue("orders").stats().visible == 2
