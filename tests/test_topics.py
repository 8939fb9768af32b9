"""SPEC §5 topics: publish copies into every live subscription, each a full queue."""

from __future__ import annotations

import time
from typing import Any

import pytest

import rqueue
from rqueue._protocol.keys import TopicKeys, prefix_pattern

from .conftest import stored_keys


def drain(subs: list[Any], expected: int) -> list[Any]:
    """Bodies received by competing consumers of one subscription, until ``expected`` came."""
    got: list[Any] = []
    deadline = time.monotonic() + 60
    while len(got) < expected and time.monotonic() < deadline:
        for s in subs:
            ms = s.receive(25, wait_time=0.5 if not got else 0)
            s.delete_batch([m.receipt for m in ms]) if ms else None
            got += [m.body for m in ms]
    return got


def test_fan_out_to_three_subscriptions_with_competing_consumers(client: Any, connect: Any) -> None:
    topic = client.topic("events")
    names = ["billing", "audit", "mail"]
    for n in names:
        topic.subscribe(n)
    ids = topic.publish_batch([{"n": i} for i in range(100)])
    ids += [topic.publish({"n": i}) for i in range(100, 120)]
    assert len(set(ids)) == 120
    others = [connect() for _ in range(2)]
    for n in names:
        consumers = [c.topic("events").subscription(n) for c in [client, *others]]
        got = drain(consumers, 120)
        assert sorted(b["n"] for b in got) == list(range(120))  # every message, exactly once
        assert consumers[0].receive(10) == []


def test_same_id_in_every_subscription(client: Any) -> None:
    topic = client.topic("events")
    a, b = topic.subscribe("a"), topic.subscribe("b")
    mid = topic.publish("hello")
    [ma], [mb] = a.receive(1), b.receive(1)
    assert ma.id == mb.id == mid and ma.body == mb.body == "hello"
    assert ma.queue == "events/a"


def test_late_subscription_sees_nothing_earlier(client: Any, connect: Any) -> None:
    topic = client.topic("events")
    early = topic.subscribe("early")
    topic.publish_batch(["one", "two"])
    # another client joins; this handle's cached subscription list is now stale
    late = connect().topic("events").subscribe("late")
    topic.publish("three")
    assert [m.body for m in late.receive(10)] == ["three"]
    assert [m.body for m in early.receive(10)] == ["one", "two", "three"]


def test_publish_without_subscriptions_stores_nothing(client: Any, raw: Any, prefix: str) -> None:
    topic = client.topic("empty")
    assert len(topic.publish_batch(["a", "b"])) == 2
    assert topic.subscriptions() == []
    assert stored_keys(raw, prefix, TopicKeys.for_topic(prefix, "empty").subscriptions_pattern) == []


def test_expired_subscription_disappears(client: Any, raw: Any, prefix: str) -> None:
    topic = client.topic("events")
    stays = topic.subscribe("stays", ttl=60)
    topic.subscribe("brief", ttl=0.2)
    topic.publish("before")
    assert {s.name for s in topic.subscriptions()} == {"stays", "brief"}
    time.sleep(0.3)  # the TTL passes on the server's clock
    assert [s.name for s in topic.subscriptions()] == ["stays"]
    topic.publish("after")  # reaps it with its backlog
    assert stored_keys(raw, prefix, TopicKeys.for_topic(prefix, "events").subscription("brief").pattern) == []
    assert [m.body for m in stays.receive(10)] == ["before", "after"]
    again = topic.subscribe("brief", ttl=60)  # afresh: nothing of its old backlog
    assert again.receive(10) == []


def test_refresh_keeps_a_subscription_alive(client: Any) -> None:
    topic = client.topic("events")
    sub = topic.subscribe("worker", ttl=0.5)
    for _ in range(3):
        time.sleep(0.25)
        assert sub.refresh() is False  # refreshed, not re-created
        topic.publish("tick")
    assert len(sub.receive(10)) == 3
    with pytest.raises(rqueue.InvalidParameter, match="subscribe"):
        topic.subscription("worker").refresh()


def test_subscriptions_list_depth(client: Any) -> None:
    topic = client.topic("events")
    topic.subscribe("a", ttl=100)
    b = topic.subscribe("b", ttl=200)
    topic.publish_batch(list(range(5)))
    b.delete_batch([m.receipt for m in b.receive(2)])
    info = {s.name: s for s in topic.subscriptions()}
    assert (info["a"].depth, info["b"].depth) == (5, 3)
    assert 90 < info["a"].expires_in <= 100 and 190 < info["b"].expires_in <= 200


def test_a_subscription_is_a_full_queue(client: Any) -> None:
    topic = client.topic("events")
    sub = topic.subscribe("jobs", max_receive_count=2, visibility_timeout=10)
    topic.publish_batch(["bad", "good"])
    ms = {m.body: m for m in sub.receive(2)}
    assert sub.reject(ms["bad"].receipt, "nope")
    assert sub.delete(ms["good"].receipt)
    [dead] = sub.dead_letter_queue.receive(1)
    assert dead.body == "bad" and dead.dead_letter.reason == "rejected"
    stats = sub.stats()
    assert (stats.sent_total, stats.deleted_total, stats.dead_lettered_total) == (2, 1, 1)
    assert sub.attributes().max_receive_count == 2
    with pytest.raises(rqueue.QueueAlreadyExists):
        topic.subscribe("jobs", max_receive_count=3)


def test_unsubscribe_removes_everything(client: Any, raw: Any, prefix: str) -> None:
    topic = client.topic("events")
    topic.subscribe("gone")
    topic.publish("x")
    assert topic.unsubscribe("gone") is True
    assert topic.unsubscribe("gone") is False
    assert stored_keys(raw, prefix, TopicKeys.for_topic(prefix, "events").subscriptions_pattern) == []
    topic.publish("y")
    assert topic.subscriptions() == []


def test_publish_validates_and_stores_nothing(client: Any) -> None:
    topic = client.topic("events")
    small = topic.subscribe("small", max_message_size=10)
    with pytest.raises(rqueue.MessageTooLarge):
        topic.publish_batch(["ok", "x" * 100])
    with pytest.raises(rqueue.InvalidParameter):
        topic.publish_batch([])
    with pytest.raises(rqueue.InvalidParameter, match="ttl"):
        topic.subscribe("small", ttl=0)
    with pytest.raises(rqueue.InvalidQueueName):
        client.topic("no spaces")
    assert small.receive(10) == []


@pytest.mark.cluster
def test_topic_keys_share_one_slot(cluster_url: str, prefix: str) -> None:
    from .conftest import raw_client

    client = rqueue.connect(cluster_url, prefix=prefix)
    r = raw_client(cluster_url)
    try:
        topic = client.topic("events")
        for n in ("a", "b", "c"):
            topic.subscribe(n, max_receive_count=1)
        topic.publish_batch(["m1", "m2"])
        sub = topic.subscription("a")
        [m] = sub.receive(1)
        sub.reject(m.receipt, "r")
        keys = list(r.scan_iter(match=prefix_pattern(prefix), count=1000))
        assert len(keys) > 10
        assert len({r.keyslot(k) for k in keys}) == 1
    finally:
        for k in list(r.scan_iter(match=prefix_pattern(prefix), count=1000)):
            r.unlink(k)
        r.close()
        client.close()
