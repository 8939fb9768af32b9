"""Property test: random operation sequences against a pure-Python model.

Visibility timeouts are 0 or an hour, so no lease expires during a run and
the model needs no clock: a message is visible, or in flight with one
latest receipt.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOUR = 3600

ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 5)),
        st.tuples(st.just("receive"), st.integers(1, 4), st.sampled_from([0, HOUR])),
        st.tuples(st.just("delete"), st.integers(0, 50)),
        st.tuples(st.just("change"), st.integers(0, 50), st.sampled_from([0, HOUR])),
    ),
    min_size=1,
    max_size=30,
)


@dataclass
class Model:
    visible: set[str] = field(default_factory=set)
    in_flight: dict[str, str] = field(default_factory=dict)  # id -> latest receipt
    latest: dict[str, str] = field(default_factory=dict)  # id -> latest receipt, visible or not
    bodies: dict[str, int] = field(default_factory=dict)
    deleted: int = 0


_names = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=ops)
@pytest.mark.parametrize("backend_url", ["standalone"], indirect=True)
def test_queue_matches_model(client: Any, sequence: list[tuple[Any, ...]]) -> None:
    q = client.create_queue(f"model{next(_names)}", visibility_timeout=HOUR)
    model = Model()
    receipts: list[str] = []  # every receipt ever issued, stale ones included
    counter = 0
    for op in sequence:
        if op[0] == "send":
            bodies = list(range(counter, counter + op[1]))
            counter += op[1]
            for mid, body in zip(q.send_batch(bodies), bodies, strict=True):
                model.visible.add(mid)
                model.bodies[mid] = body
        elif op[0] == "receive":
            _, n, vt = op
            got = q.receive(n, visibility_timeout=vt)
            assert len(got) == min(n, len(model.visible))
            for m in got:
                assert m.id in model.visible
                assert m.body == model.bodies[m.id]
                receipts.append(m.receipt)
                model.latest[m.id] = m.receipt
                if vt:
                    model.visible.discard(m.id)
                    model.in_flight[m.id] = m.receipt
        elif op[0] == "delete" and receipts:
            r = receipts[op[1] % len(receipts)]
            mid = r.split(".")[0]
            expected = model.latest.get(mid) == r and mid in model.bodies
            assert q.delete(r) is expected
            if expected:
                model.visible.discard(mid)
                model.in_flight.pop(mid, None)
                del model.bodies[mid]
                model.deleted += 1
        elif op[0] == "change" and receipts:
            _, i, seconds = op
            r = receipts[i % len(receipts)]
            mid = r.split(".")[0]
            expected = model.latest.get(mid) == r and mid in model.bodies
            assert q.change_visibility(r, seconds) is expected
            if expected:
                if seconds:
                    model.visible.discard(mid)
                    model.in_flight[mid] = r
                else:
                    model.in_flight.pop(mid, None)
                    model.visible.add(mid)
        s = q.stats()
        assert (s.visible, s.in_flight, s.deleted_total) == (len(model.visible), len(model.in_flight), model.deleted)
