"""``run_many``: several script calls in one round trip, on every backend.

On a cluster the calls of one batch live on several nodes: each node gets its
own pipeline, and a slot moving between nodes (MOVED, ASK) is followed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

import rqueue
import rqueue.asyncio as rqa
from rqueue._protocol import operations as _core
from rqueue._protocol.keys import QueueKeys, prefix_pattern
from rqueue._protocol.operations import Call
from rqueue._protocol.scripts import Script

from .bridge import AsyncBridge, LoopThread
from .conftest import names_on_every_node, raw_client
from .servers import Cluster


def test_run_many_keeps_the_order_and_gives_each_call_its_result(client: Any, backend_url: str) -> None:
    names = names_on_every_node(backend_url)
    qs = [client.create_queue(n) for n in names]
    qs[1].send_batch(["x", "y"])
    missing = client.queue("missing")
    calls = [
        _core.stats(qs[0]._keys),
        _core.receive(qs[1]._keys, 10, None),
        _core.stats(missing._keys),
        _core.delete(qs[2]._keys, ["1.1"], None),
        _core.stats(qs[1]._keys),
    ]
    a, received, gone, deleted, b = client.run_many(calls)
    assert (a.name, a.visible) == (names[0], 0)
    assert sorted(m.body for m in received[0]) == ["x", "y"]
    assert isinstance(gone, rqueue.QueueDoesNotExist)
    assert deleted == [False]
    assert (b.name, b.visible, b.in_flight) == (names[1], 0, 2)
    assert client.run_many([]) == []


def test_run_many_loads_flushed_scripts_again(client: Any, raw: Any, backend_url: str) -> None:
    names = names_on_every_node(backend_url)
    qs = [client.create_queue(n) for n in names]
    for q in qs:
        q.send(q.name)
    raw.script_flush()  # as after a restart or failover: every EVALSHA gets NOSCRIPT
    got = client.run_many([_core.receive(q._keys, 1, None) for q in qs])
    assert [r[0][0].body for r in got] == names
    assert [s.in_flight for s in client.run_many([_core.stats(q._keys) for q in qs])] == [1, 1, 1]


# ---------------------------------------------------------------- resharding


def _node_client(raw: Any, node: Any) -> Any:
    return raw.get_redis_connection(node)


def _node_id(raw: Any, node: Any) -> str:
    reply = _node_client(raw, node).execute_command("CLUSTER", "MYID")
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _migrate_keys(raw: Any, slot: int, src: Any, dst: Any) -> None:
    """Start moving ``slot`` from ``src`` to ``dst`` and move its keys: from now on
    ``src`` answers ASK for them."""
    s, d = _node_client(raw, src), _node_client(raw, dst)
    d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(raw, src))
    s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(raw, dst))
    while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
        s.execute_command("MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", *keys)


def _hand_over(raw: Any, slot: int, dst: Any) -> None:
    """Finish the move: every master says ``dst`` owns ``slot`` (others then answer MOVED)."""
    owner = _node_id(raw, dst)
    primaries = sorted(raw.get_primaries(), key=lambda n: n.name != dst.name)  # the new owner first
    for node in primaries:
        _node_client(raw, node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner)


def _owner(client: Any, slot: int) -> str:
    return str(client.redis.nodes_manager.get_node_from_slot(slot).name)


_PROBE = b"return redis.call('EXISTS', KEYS[1])"


def _exists(keys: QueueKeys) -> Call[int]:
    """A one-key script call (runs while its slot moves, unlike rqueue's multi-key ones)."""
    return Call(Script("probe", _PROBE, hashlib.sha1(_PROBE).hexdigest()), [keys.meta], [], int, keys.name)


@pytest.mark.parametrize("backend_url", ["cluster"], indirect=True)
def test_run_many_follows_a_slot_moving_to_another_node(client: Any, raw: Any, backend_url: str) -> None:
    """ASK while the keys move, MOVED once the slot has a new owner; then straight to the new owner."""
    moving, other = names_on_every_node(backend_url, 2)
    q, o = client.create_queue(moving), client.create_queue(other)
    q.send_batch(["a", "b"])
    o.send("o")
    slot = key_slot(q._keys.meta.encode())
    src = raw.nodes_manager.get_node_from_slot(slot)
    dst = next(n for n in raw.get_primaries() if n.name != src.name)
    assert _owner(client, slot) == src.name
    step = "start"
    try:
        _migrate_keys(raw, slot, src, dst)
        step = "migrating"
        # The source answers ASK for a key it gave away: that call runs again, following it.
        assert client.run_many([_exists(q._keys), _core.stats(o._keys), _exists(o._keys)])[::2] == [1, 1]
        # Scripts over several keys get TRYAGAIN until the slot has moved: the batch fails, to be retried.
        with pytest.raises(rqueue.ConnectionError):
            client.run_many([_core.stats(o._keys), _core.receive(q._keys, 1, None)])
        with pytest.raises(rqueue.ConnectionError):
            q.receive(1)  # one call: the same (not redis-py's ClusterError)
        _hand_over(raw, slot, dst)
        step = "moved"
        # The old owner answers MOVED: the client learns the new map and runs the call there.
        got = client.run_many([_core.receive(q._keys, 1, None), _core.stats(o._keys), _core.stats(q._keys)])
        assert [m.body for m in got[0][0]] == ["a"]
        assert (got[1].visible, got[2].visible, got[2].in_flight) == (1, 1, 1)
        assert _owner(client, slot) == dst.name
        got = client.run_many([_core.receive(q._keys, 1, None)])
        assert [m.body for m in got[0][0]] == ["b"]
    finally:  # give the slot back to its first owner, keys and all
        if step == "migrating":
            _hand_over(raw, slot, dst)
        if step != "start":
            _migrate_keys(raw, slot, dst, src)
            _hand_over(raw, slot, src)
    assert [s.in_flight for s in client.run_many([_core.stats(q._keys), _core.stats(o._keys)])] == [2, 0]
    assert _owner(client, slot) == src.name


# ---------------------------------------------------------------- a node lost


@pytest.mark.cluster
def test_a_cluster_node_down_fails_whole_batches_that_then_touch_no_healthy_node(
    restartable_cluster: Cluster, prefix: str, loop_thread: LoopThread
) -> None:
    """While a node is down, a batch with calls on it raises ConnectionError; after the first,
    such batches fail before running anything on the healthy nodes (no messages taken and
    dropped there). Once the node is back, batches run again. Sync and asyncio."""
    cluster = restartable_cluster
    sync = rqueue.connect(cluster.url, prefix=prefix)
    clients: list[Any] = [sync, AsyncBridge(loop_thread.run(rqa.connect(cluster.url, prefix=prefix)), loop_thread)]
    up, down = names_on_every_node(cluster.url, 2)
    qu, qd = sync.create_queue(up), sync.create_queue(down)
    qu.send_batch(list(range(10)))
    batch = [_core.receive(qu._keys, 1, None), _core.stats(qd._keys)]
    brief = rqueue.connect(cluster.url, prefix=prefix, retry=Retry(NoBackoff(), 0))  # redis-py gives up at once
    for c in clients:
        c.run_many(batch)  # both know the map and have connections to every node
    node = cluster.node_for(qd._keys.meta)
    node.kill()
    try:
        for c in clients:
            with pytest.raises(rqueue.ConnectionError, match="cannot reach redis\\+cluster://"):
                c.run_many(batch)  # ran on the healthy node first, then failed
        taken = qu.stats().received_total
        for c in clients:
            for _ in range(3):
                with pytest.raises(rqueue.ConnectionError):
                    c.run_many(batch)
        assert qu.stats().received_total == taken  # the down node went first: nothing else ran
        assert [c.run_many([_core.stats(qu._keys)])[0].received_total for c in clients] == [taken, taken]
        # Once the others mark it failed, the whole cluster answers CLUSTERDOWN: unreachable too.
        cluster.set_node_timeout(500)
        cluster.wait_state("fail")
        for c in clients:
            with pytest.raises(rqueue.ConnectionError, match="CLUSTERDOWN|cluster is down"):
                c.run_many([_core.stats(qu._keys)])
        with pytest.raises(rqueue.ConnectionError, match="CLUSTERDOWN|cluster is down"):
            brief.queue(up).stats()  # one call: the same
    finally:
        node.start()
        cluster.wait_state("ok")
        cluster.set_node_timeout(5000)
    try:
        for c in clients:
            got = c.run_many(batch)
            assert len(got[0][0]) == 1 and got[1].name == down
        assert qu.stats().received_total == taken + 2
    finally:
        for c in [*clients, brief]:
            c.close()
        r = raw_client(cluster.url)
        for key in list(r.scan_iter(match=prefix_pattern(prefix), count=1000)):
            r.unlink(key)
        r.close()
