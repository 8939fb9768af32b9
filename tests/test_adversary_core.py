"""Adversarial review of the core after the issue 9/17 sweeps: each test failed before its fix."""

from __future__ import annotations

import dataclasses
import math
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
