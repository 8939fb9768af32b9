"""The pure parts, no server: codec, keys, validation, receipts."""

from __future__ import annotations

import pytest

import rqueue
from rqueue._protocol import codec as _codec
from rqueue._protocol import operations as _core
from rqueue._protocol.keys import QueueKeys, TopicKeys, is_wake_key, prefix_pattern, reply_pattern


@pytest.mark.parametrize("body", ["s", b"b", {"j": [1]}, 3.5, None, ""])
@pytest.mark.parametrize("attrs", [None, {}, {"a": "1", "b": b"\x00", "n": 2}])
def test_codec_round_trip(body: object, attrs: dict[str, object] | None) -> None:
    enc = _codec.encode(body, attrs)  # type: ignore[arg-type]
    sent_at, got, got_attrs = _codec.decode(b"1795000000000" + enc)
    assert (sent_at, got, got_attrs) == (1795000000000, body, attrs or {})


def test_size_counts_body_and_attributes() -> None:
    assert _codec.size_of(_codec.encode("abc")) == 3
    assert _codec.size_of(_codec.encode("abc", {"k": "v"})) == 3 + len(b'{"k":"v"}')


def test_keys_share_one_hash_tag_with_the_dlq() -> None:
    k = QueueKeys.for_queue("rq", "orders")
    d = k.dlq()
    keys = [*k.own(), *d.own(), k.seq]
    assert {key.split("{")[1].split("}")[0] for key in keys} == {"orders"}
    assert d.seq == k.seq
    assert QueueKeys.for_queue("rq", "orders:dlq") == d
    assert d.source() == k


def test_a_dead_letter_queue_buries_into_unused_keys_of_its_own_slot() -> None:
    k = QueueKeys.for_queue("rq", "orders")
    assert k.dead_letter_target() == k.dlq()
    d = k.dlq().dead_letter_target()
    assert (d.name, d.vis, d.is_dlq) == ("orders:dlq:dlq", "rq:{orders}:dlq:dlq:vis", True)


def test_scan_patterns_cover_the_keys_they_name() -> None:
    t = TopicKeys.for_topic("rq", "events")
    assert (prefix_pattern("rq"), reply_pattern("rq")) == ("rq:*", "rq:*:reply:*")
    assert QueueKeys.for_queue("rq", "orders").pattern == "rq:{orders}:*"
    assert t.subscriptions_pattern == "rq:{topic:events}:sub:*"
    assert t.subscription("s").pattern == "rq:{topic:events}:sub:s:*"


def test_a_wake_key_is_told_from_a_reply_key() -> None:
    k = QueueKeys.for_queue("rq", "orders")
    assert is_wake_key(k.wake) and is_wake_key(k.dlq().wake)
    assert not is_wake_key(k.reply("12")) and not is_wake_key(k.meta)


@pytest.mark.parametrize("receipt", ["", "1", "1.", ".1", "a.b", "1.2.3", "1.2 ", None, 12])
def test_bad_receipts(receipt: object) -> None:
    with pytest.raises(rqueue.InvalidParameter, match="receipt must be"):
        _core.split_receipt(receipt)


def test_seconds_are_whole_milliseconds() -> None:
    assert _core.seconds_ms("x", 1.25, 0, 10) == 1250
    assert _core.seconds_ms("x", 0.0004, 0, 10) == 0
    assert _core.seconds_ms("x", 10, 0, 10) == 10_000


@pytest.mark.parametrize("bad_prefix", ["", "a{b", "a}b", "a b", None])
def test_bad_prefix(bad_prefix: object) -> None:
    with pytest.raises(rqueue.InvalidParameter, match="prefix"):
        rqueue.connect("redis://127.0.0.1:1/0", prefix=bad_prefix)  # type: ignore[arg-type]


def test_make_message_equals_the_dataclass_constructor() -> None:
    from dataclasses import FrozenInstanceError

    from rqueue._protocol.models import DeadLetter, Message, make_message

    args = ("1", {"b": 1}, {"a": "x"}, "1.2", 3, 4, 5, "q", DeadLetter("rejected", "why", 6, "src"))
    fast, slow = make_message(*args), Message(*args)
    assert fast == slow and repr(fast) == repr(slow) and hash(fast.id) == hash(slow.id)
    with pytest.raises(FrozenInstanceError):
        fast.id = "2"  # type: ignore[misc]
