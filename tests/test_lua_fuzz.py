"""Every Lua script called directly (EVALSHA) with hostile ARGV.

A populated world (a queue with visible, in-flight, tracked, maxed-out and
expired messages and dead letters; a topic with a live and an expired
subscription) is restored before each call; the call gets the KEYS the client
would pass and ARGV mutated by hypothesis: arguments missing, extra, empty,
non-numeric, negative, huge, fractional, NaN/inf, hex, separators of the
storage format, long and binary. The property, per call:

- an error is one of the scripts' own (``RQ_<CODE>``, mapped by
  ``from_lua``) and nothing changed: no key, no TTL, no published event;
- a success reply parses as the client parses it, and every stored key still
  has the shape the scripts and the client rely on;
- ARGV outside the script's contract (an argument missing, a number that is
  not a canonical integer in range, an unknown mode or flag, a malformed
  message, ARGV that disagree with KEYS) is refused with ``RQ_BADARG``;
  ARGV inside it is never refused so.

A Lua runtime error (``user_script:...``, "attempt to ...", a command's own
error) fails the test, as does any partial write.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rqueue
from rqueue._protocol import codec as _codec
from rqueue._protocol import operations as _core
from rqueue._protocol import peek as _peek
from rqueue._protocol import topic_operations as _topics
from rqueue._protocol.errors import InvalidParameter, RQueueError, from_lua
from rqueue._protocol.keys import QueueKeys, TopicKeys, prefix_pattern
from rqueue._protocol.operations import Call

from .conftest import raw_client

LUA = Path(__file__).resolve().parent.parent / "lua"

MS_12H = 43_200_000
MS_14D = 1_209_600_000
MS_30D = 2_592_000_000
MS_1D = 86_400_000
MAX_SIZE = 16 * 1024 * 1024
QUEUE_MAX_SIZE = 1024
#: Examples per script case; raise it (RQUEUE_FUZZ_EXAMPLES=2000) for a deeper run.
EXAMPLES = int(os.environ.get("RQUEUE_FUZZ_EXAMPLES", "100"))

Argv = list[bytes]
Snapshot = dict[str, tuple[str, Any, bool]]


# ------------------------------------------------------------------ the contract of each script's ARGV

_CANON = re.compile(rb"0|[1-9][0-9]{0,14}")
_NAME = re.compile(rb"[A-Za-z0-9_-]{1,80}")
_JOINED = re.compile(rb"[0-9]+\.[0-9]+(?: [0-9]+\.[0-9]+)*")


def _int(v: bytes, lo: int, hi: int) -> bool:
    return bool(_CANON.fullmatch(v)) and lo <= int(v) <= hi


def message_ok(m: bytes) -> bool:
    """A message as send/publish take it: kind byte, then for S/B/J '<attributes length>:'."""
    if m[:1] in (b"s", b"b", b"j"):
        return True
    head = re.match(rb"[SBJ]([0-9]{1,9}):", m)
    return bool(head) and int(head.group(1)) <= len(m) - head.end()  # type: ignore[union-attr]


_RATE = re.compile(rb"[0-9]+\.?[0-9]*")


def _attributes(argv: Argv) -> list[str]:
    """create_queue's and subscribe's ARGV[1..11]: the 10 attributes (ATTR_FIELDS), the DLQ's retention."""
    vt, delay, ret, size, mrc, dw, fifo, cbd, rl, mif, dret = argv[:11]
    bad = []
    if not _int(vt, 0, MS_12H):
        bad.append("visibility_timeout")
    if not _int(ret, 60_000, MS_14D):
        bad.append("retention")
    if not _int(delay, 0, MS_14D) or (_int(ret, 60_000, MS_14D) and int(delay) > int(ret)):
        bad.append("delay")
    if not _int(size, 1, MAX_SIZE):
        bad.append("max_message_size")
    if mrc != b"" and not _int(mrc, 1, 1000):
        bad.append("max_receive_count")
    bad += _new_attributes(dw, fifo, cbd, rl, mif)
    if not _int(dret, 60_000, MS_14D):
        bad.append("dlq retention")
    return bad


def _new_attributes(dw: bytes, fifo: bytes, cbd: bytes, rl: bytes, mif: bytes) -> list[str]:
    bad = []
    if not _int(dw, 1000, 7 * 86_400_000):
        bad.append("deduplication_window")
    if fifo not in (b"", b"1"):
        bad.append("fifo")
    if cbd not in (b"", b"1"):
        bad.append("content_based_deduplication")
    if rl != b"" and not (len(rl) <= 24 and _RATE.fullmatch(rl) and 0 < float(rl) <= 1_000_000):
        bad.append("rate_limit")
    if mif != b"" and not _int(mif, 1, 1_000_000_000):
        bad.append("max_in_flight")
    return bad


def v_create_queue(argv: Argv, keys: Sequence[str]) -> list[str]:
    return ["arity"] if len(argv) < 11 else _attributes(argv)


_FIELDS = (b"vt", b"delay", b"retention", b"max_size", b"mrc", b"dw", b"fifo", b"cbd", b"rl", b"mif")


def v_set_attributes(argv: Argv, keys: Sequence[str]) -> list[str]:
    """Pairs of field and value, merged into the stored attributes of queue 'q' (see _populate)."""
    if not argv or len(argv) % 2:
        return ["arity"]
    merged = dict(
        zip(
            _FIELDS,
            [b"3600000", b"0", b"3600000", b"%d" % QUEUE_MAX_SIZE, b"2", b"300000", b"", b"", b"", b""],
            strict=True,
        )
    )
    for f, v in zip(argv[::2], argv[1::2], strict=True):
        if f not in merged:
            return ["field"]
        if f == b"fifo" and v != merged[f]:
            return ["fifo"]
        merged[f] = v
    return _attributes([*merged.values(), b"60000"])


def v_send(argv: Argv, keys: Sequence[str]) -> list[str]:
    if len(argv) < 3:
        return ["arity"]
    bad = []
    if argv[1] not in (b"", b"?", b"!"):
        bad.append("flag")
    if argv[0] == b"g":  # a FIFO queue: group, message pairs
        pairs = argv[2:]
        if len(pairs) % 2:
            return ["arity"]
        bad += [f"group {i}" for i, g in enumerate(pairs[::2]) if not 1 <= len(g) <= 512]
        bad += [f"message {i}" for i, m in enumerate(pairs[1::2]) if not message_ok(m)]
        return bad
    if argv[0] != b"" and not _int(argv[0], 0, MS_14D):
        bad.append("delay")
    bad += [f"message {i}" for i, m in enumerate(argv[2:]) if not message_ok(m)]
    return bad


def v_receive(argv: Argv, keys: Sequence[str]) -> list[str]:
    if len(argv) < 3:
        return ["arity"]
    bad = []
    if not _int(argv[0], 1, 1000):
        bad.append("max_messages")
    if argv[1] != b"" and not _int(argv[1], 0, MS_12H):
        bad.append("visibility_timeout")
    return bad


def v_change_visibility(argv: Argv, keys: Sequence[str]) -> list[str]:
    if len(argv) < 3 or (len(argv) - 1) % 2:
        return ["arity"]
    return [] if _int(argv[0], 0, MS_12H) else ["seconds"]


def v_unreceive(argv: Argv, keys: Sequence[str]) -> list[str]:
    return [] if len(argv) >= 2 and len(argv) % 2 == 0 else ["arity"]


def v_delete(argv: Argv, keys: Sequence[str]) -> list[str]:
    if len(argv) < 4:
        return ["arity"]
    mode = argv[2]
    if mode == b"j":
        return [] if _JOINED.fullmatch(argv[3]) else ["receipts"]
    if mode == b"":
        return [] if len(argv) >= 5 and (len(argv) - 3) % 2 == 0 else ["arity"]
    if mode != b"1":
        return ["mode"]
    if len(argv) < 6 or (len(argv) - 3) % 3:
        return ["arity"]
    bad = [] if _int(argv[1], 1, MS_1D) else ["reply ttl"]
    tracked = argv[5::3]
    if any(x[:1] not in (b"r", b"e") for x in tracked if x):
        bad.append("tracked")
    elif sum(x[:1] == b"r" for x in tracked) != len(keys) - 8:
        bad.append("reply keys")
    return bad


def v_notify(argv: Argv, keys: Sequence[str]) -> list[str]:
    if len(argv) != len(keys) + 1:
        return ["arity"]
    bad = [] if _int(argv[0], 1, MS_1D) else ["reply ttl"]
    return bad + (["payload"] if any(p[:1] != b"d" for p in argv[1:]) else [])


def v_count(argv: Argv, keys: Sequence[str]) -> list[str]:
    """peek and redrive: ARGV[1] is a count from 1 to 1000."""
    return [] if argv and _int(argv[0], 1, 1000) else ["count"]


def v_redrive(argv: Argv, keys: Sequence[str]) -> list[str]:
    """ARGV[1] a count from 1 to 1000, ARGV[2] a FIFO source's cursor: absent, '' or an id."""
    bad = v_count(argv, keys)
    if len(argv) > 1 and argv[1] != b"" and not re.fullmatch(rb"[0-9]{1,20}", argv[1]):
        bad.append("cursor")
    return bad


def v_publish(argv: Argv, keys: Sequence[str]) -> list[str]:
    if len(argv) < 2 or not _int(argv[1], 0, 10**6):
        return ["subscriptions"]
    m = int(argv[1])
    if len(keys) != 3 + 4 * m:
        return ["subscriptions"]
    if len(argv) < m + 3:
        return ["arity"]
    return [f"message {i}" for i, msg in enumerate(argv[m + 2 :]) if not message_ok(msg)]


def v_reject(argv: Argv, keys: Sequence[str]) -> list[str]:
    if len(argv) < 6 or (len(argv) - 3) % 3:
        return ["arity"]
    bad = [] if _int(argv[2], 1, MS_1D) else ["reply ttl"]
    tracked = argv[5::3]
    if any(x not in (b"", b"r", b"e") for x in tracked):
        bad.append("tracked")
    elif tracked.count(b"r") != len(keys) - 13:
        bad.append("reply keys")
    return bad


def v_subscribe(argv: Argv, keys: Sequence[str]) -> list[str]:
    if len(argv) < 14 or len(keys) != 5 + 12 * (len(argv) - 14):
        return ["arity"]
    bad = _attributes(argv)
    if argv[6] != b"":
        bad.append("fifo")
    if not _int(argv[11], 50, MS_30D):
        bad.append("ttl")
    if not _NAME.fullmatch(argv[12]):
        bad.append("name")
    if argv[13] not in (b"", b"r"):
        bad.append("mode")
    return bad


def v_unsubscribe(argv: Argv, keys: Sequence[str]) -> list[str]:
    if not argv or len(keys) != 2 + 12 * (len(argv) - 1):
        return ["arity"]
    return [] if argv[0] in (b"expired", b"all") else ["mode"]


def v_withdraw(argv: Argv, keys: Sequence[str]) -> list[str]:
    return [] if argv and re.fullmatch(rb"[0-9]{1,20}", argv[0]) else ["message_id"]


def v_upgrade(argv: Argv, keys: Sequence[str]) -> list[str]:
    if len(argv) < 3:
        return ["arity"]
    return [] if all(c == b"-" or re.fullmatch(rb"[0-9]{1,19}", c) for c in argv[:3]) else ["cursor"]


def v_pause(argv: Argv, keys: Sequence[str]) -> list[str]:
    return [] if argv and argv[0] in (b"1", b"0") else ["paused"]


def v_none(argv: Argv, keys: Sequence[str]) -> list[str]:
    """Scripts without ARGV: extra arguments are ignored."""
    return []


CONTRACT: dict[str, Callable[[Argv, Sequence[str]], list[str]]] = {
    "create_queue": v_create_queue,
    "send": v_send,
    "receive": v_receive,
    "change_visibility": v_change_visibility,
    "unreceive": v_unreceive,
    "delete": v_delete,
    "notify": v_notify,
    "peek": v_count,
    "redrive": v_redrive,
    "publish": v_publish,
    "reject": v_reject,
    "subscribe": v_subscribe,
    "unsubscribe": v_unsubscribe,
    "withdraw": v_withdraw,
    "purge": v_none,
    "stats": v_none,
    "delete_queue": v_none,
    "topic_read": v_none,
    "topic_depths": v_none,
    "upgrade": v_upgrade,
    "pause": v_pause,
    "set_attributes": v_set_attributes,
}


def receipts_in(script: str, argv: Argv) -> int | None:
    """How many per-receipt results an in-contract call replies with."""
    if script == "delete":
        if argv[2] == b"j":
            return len(argv[3].split(b" "))
        return (len(argv) - 3) // (3 if argv[2] == b"1" else 2)
    if script == "change_visibility":
        return (len(argv) - 1) // 2
    if script == "reject":
        return (len(argv) - 3) // 3
    if script == "unreceive":
        return len(argv) // 2
    return None


# ------------------------------------------------------------------ stored shapes the scripts rely on

_ID = re.compile(r"[1-9][0-9]{0,19}")
#: A stored message's head: a receive's header or a delay's, then sent_at and the flag.
_STORED = re.compile(rb"(?:R[0-9]+:[0-9]+:[0-9]+(?::[0-9]+)?\||D[0-9]+\|)?[0-9]{13}[?!]?", re.S)
_STATE = re.compile(rb"[0-9]+:[0-9]+:[0-9]+(?::[0-9]+)?x?")
_WHY = re.compile(rb"[0-9]+(?:~[0-9]{1,3}:.+)?\|(expired|max_receives|rejected)\|.*", re.S)
_COUNTERS = {b"sent_total", b"received_total", b"deleted_total", b"dead_lettered_total", b"expired_total"}


def _check_meta(key: str, h: dict[bytes, bytes]) -> None:
    def num(f: bytes, lo: int, hi: int) -> int:
        assert f in h and _int(h[f], lo, hi), f"{key} field {f!r} = {h.get(f)!r}, not an integer in {lo}..{hi}"
        return int(h[f])

    num(b"vt", 0, MS_12H)
    ret = num(b"retention", 60_000, MS_14D)
    num(b"delay", 0, ret)
    num(b"max_size", 1, MAX_SIZE)
    num(b"created_at", 0, 10**14)
    for f in h:
        if f == b"mrc":
            num(f, 1, 1000)
        elif f == b"ttl":
            num(f, 50, MS_30D)
        elif f == b"dlq":
            assert h[f] == b"1", f"{key} dlq = {h[f]!r}"
        elif f in _COUNTERS:
            num(f, 0, 10**15)
        elif f == b"paused":  # pause.lua: present only while paused
            assert h[f] == b"1", f"{key} paused = {h[f]!r}"
        elif f == b"v":  # the storage layout
            assert h[f] == b"2", f"{key} v = {h[f]!r}"
        elif f == b"fdl":  # a FIFO queue: when its last delayed message is due (send.lua)
            num(f, 0, 10**14)
        elif f == b"tok":  # receipt tokens: from the clock in microseconds at creation, up
            assert re.fullmatch(rb"[1-9][0-9]{0,17}", h[f]), f"{key} tok = {h[f]!r}"
        elif f in (b"dw", b"fifo", b"cbd", b"rl", b"mif"):  # attributes of SPEC 10, absent when off
            value = {b"dw": b"300000", b"fifo": b"", b"cbd": b"", b"rl": b"", b"mif": b""}
            assert _new_attributes(*({**value, f: h[f]}).values()) == [], f"{key} {f!r} = {h[f]!r}"
            assert f == b"dw" or h[f] != b"", f"{key} {f!r} stored empty"
        else:
            assert f in (b"vt", b"retention", b"delay", b"max_size", b"created_at"), f"{key} field {f!r}"


_FIFO_HEAD = re.compile(rb"(?:R[0-9]+:[0-9]+:[0-9]+(?::[0-9]+)?|D[0-9]+|G)~([0-9]{1,3}):")


def fifo_split(v: bytes) -> tuple[bytes, bytes] | None:
    """A FIFO queue's stored message as (group, the rest behind the header), or None."""
    m = _FIFO_HEAD.match(v)
    if not m:
        return None
    end = m.end() + int(m.group(1))
    if v[end : end + 1] != b"|" or not 1 <= int(m.group(1)) <= 512:
        return None
    return v[m.end() : end], v[end + 1 :]


def _check_msgs(key: str, value: Any) -> None:
    for f, v in value.items():
        assert _ID.fullmatch(f.decode("latin-1")), f"{key} field {f!r}"
        fifo = fifo_split(v)
        if fifo:
            v = fifo[1]
        head = _STORED.match(v)
        assert head and message_ok(v[head.end() :]), f"{key}[{f!r}] = {v[:60]!r} is not a stored message"


def _check_scores(key: str, value: Any, part: str) -> None:
    now = time.time() * 1000
    for member, score in value:
        if part == "vis":
            assert _ID.fullmatch(member.decode("latin-1")), f"{key} member {member!r}"
        else:
            assert _NAME.fullmatch(member), f"{key} member {member!r}"
        # whole ms, or for a received message of a queue half a ms before (receive.lua)
        whole = score == int(score) or (part == "vis" and score * 2 == int(score * 2))
        assert math.isfinite(score) and whole and score >= 0, f"{key}[{member!r}] = {score}"
        if part == "vis":
            assert score <= now + MS_14D + MS_12H + 60_000, f"{key}[{member!r}] = {score}, too far ahead"


def _check_waiting(key: str, value: Any) -> None:
    """A FIFO queue's gm: '<len>:<group><id>' at score 0."""
    for member, score in value:
        m = re.match(rb"([0-9]{1,3}):", member)
        assert m and score == 0, f"{key}[{member!r}] = {score}"
        rest = member[m.end() + int(m.group(1)) :]
        assert _ID.fullmatch(rest.decode("latin-1")), f"{key} member {member!r}"


def _check_fields(key: str, value: Any, pattern: re.Pattern[bytes]) -> None:
    for f, v in value.items():
        assert pattern.fullmatch(v), f"{key}[{f!r}] = {v!r}"


def _check_reply(key: str, value: Any, has_ttl: bool) -> None:
    assert has_ttl, f"{key} has no TTL"
    assert all(x[:1] in (b"p", b"d") for x in value), f"{key} = {value!r}"


#: Each kind of key: its Redis type, and the check of its value (key, value, has_ttl).
_PARTS: dict[str, tuple[str, Any]] = {
    "meta": ("hash", lambda k, v, t: _check_meta(k, v)),
    "msgs": ("hash", lambda k, v, t: _check_msgs(k, v)),
    "state": ("hash", lambda k, v, t: _check_fields(k, v, _STATE)),
    "why": ("hash", lambda k, v, t: _check_fields(k, v, _WHY)),
    "vis": ("zset", lambda k, v, t: _check_scores(k, v, "vis")),
    "gm": ("zset", lambda k, v, t: k.endswith(":dlq:gm") or _check_waiting(k, v)),
    "gr": ("zset", lambda k, v, t: _expect(all(s == int(s) and s >= 1 for _, s in v), f"{k} = {v!r}")),
    "gf": ("hash", lambda k, v, t: _check_fields(k, v, re.compile(rb"[1-9][0-9]{0,5}"))),
    "subs": ("zset", lambda k, v, t: _check_scores(k, v, "subs")),
    "wake": ("list", lambda k, v, t: _expect(v in ([], [b"1"]), f"{k} = {v!r}")),
    "reply": ("list", _check_reply),
    "seq": ("string", lambda k, v, t: _expect(re.fullmatch(rb"0|[1-9][0-9]{0,19}", v), f"{k} = {v!r}")),
    "ver": ("string", lambda k, v, t: _expect(re.fullmatch(rb"0|[1-9][0-9]{0,19}", v), f"{k} = {v!r}")),
    "gd": ("hash", lambda k, v, t: _check_fields(k, v, re.compile(rb"[1-9][0-9]{12}"))),
}


def _expect(ok: object, why: str) -> None:
    assert ok, why


def _check_groups(base: str, parts: dict[str, Any], waiting: dict[bytes, bytes]) -> None:
    """FIFO invariants (fifo_settle in lua/_prelude.lua): a group is ready iff nothing of it
    is in flight and a message of it waits, scored by its first waiting message's number;
    gf counts the group's received messages in vis."""
    msgs = parts.get("msgs", {})
    busy: dict[bytes, int] = {}
    for mid, _ in parts.get("vis", []):
        split = fifo_split(msgs[mid])
        assert split, f"{base}: {mid!r} in vis has no group"
        if msgs[mid][:1] == b"R":
            busy[split[0]] = busy.get(split[0], 0) + 1
    for mid, group in waiting.items():
        split = fifo_split(msgs[mid])
        assert split and split[0] == group, f"{base}: {mid!r} waits in group {group!r} but says {split!r}"
    gf = {g: int(n) for g, n in parts.get("gf", {}).items()}
    assert gf == busy, f"{base}: gf {gf} but in flight {busy}"
    heads: dict[bytes, int] = {}
    for mid, group in waiting.items():
        number = int(mid[1:] if mid[:1] != b"9" else mid[2:])
        heads[group] = min(heads.get(group, number), number)
    ready = {g: int(s) for g, s in parts.get("gr", [])}
    expect = {g: n for g, n in heads.items() if g not in gf}
    assert ready == expect, f"{base}: ready groups {ready} but expected {expect}"


def check_stored(snap: Snapshot, prefix: str) -> None:
    """Every key still has the shape the scripts and the client rely on."""
    groups: dict[str, dict[str, Any]] = {}
    for key, (kind, value, has_ttl) in snap.items():
        rest = key[len(prefix) + 1 :]
        m = re.fullmatch(r"(.+):(meta|msgs|vis|state|wake|why|seq|subs|ver|gm|gr|gf|gd|reply:(.+))", rest, re.S)
        assert m, f"unexpected key {key!r}"
        part = m.group(2) if not m.group(3) else "reply"
        groups.setdefault(m.group(1), {})[part] = value
        expected_type, check = _PARTS[part]
        assert kind == expected_type, f"{key} is a {kind}"
        check(key, value, has_ttl)
    for base, parts in groups.items():
        msgs = set(parts.get("msgs", {}))
        vis = {m for m, _ in parts.get("vis", [])}
        waiting = {}  # a FIFO queue's gm: id -> group
        if base.endswith(":dlq"):  # a dead-letter queue's gm: its FIFO source's index of its dead letters
            index = parts.pop("gm", [])
            assert all(_ID.fullmatch(m.decode("latin-1")) and sc == 0 for m, sc in index), f"{base}:gm = {index}"
        for member, _ in parts.get("gm", []):
            m = re.match(rb"([0-9]{1,3}):", member)
            assert m
            end = m.end() + int(m.group(1))
            waiting[member[end:]] = member[m.end() : end]
        assert not vis & set(waiting), f"{base}: in both vis and gm: {sorted(vis & set(waiting))}"
        assert msgs == vis | set(waiting), f"{base}: messages {sorted(msgs)} but index {sorted(vis | set(waiting))}"
        if "gm" in parts or "gr" in parts or "gf" in parts:
            _check_groups(base, parts, waiting)
        for part in ("state", "why"):
            assert set(parts.get(part, {})) <= msgs, f"{base}:{part} names messages that are not stored"


# ------------------------------------------------------------------ the world


@dataclass
class Case:
    name: str
    call: Call[Any]

    @property
    def script(self) -> str:
        return self.call.script.name

    @property
    def argv(self) -> Argv:
        return [a if isinstance(a, bytes) else str(a).encode() for a in self.call.args]


@dataclass
class World:
    url: str
    prefix: str
    raw: Any
    cases: dict[str, Case] = field(default_factory=dict)
    dump: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    known: list[str] = field(default_factory=list)
    plausible: list[bytes] = field(default_factory=list)
    listeners: dict[str, tuple[redis.Redis, Any]] = field(default_factory=dict)

    @classmethod
    def build(cls, url: str) -> World:
        prefix = "fz" + uuid.uuid4().hex[:8]
        w = cls(url, prefix, raw_client(url))
        client = rqueue.connect(url, prefix=prefix)
        try:
            w._populate(client)
        finally:
            client.close()
        for s in {c.call.script for c in w.cases.values()}:
            w.raw.script_load(s.source)
        return w

    def _populate(self, client: rqueue.Client) -> None:
        run = client.run
        qk = QueueKeys.for_queue(self.prefix, "q")
        dk = qk.dlq()
        enc = _codec.encode
        run(
            _core.create_queue(
                qk,
                {
                    "visibility_timeout": 3600,
                    "delay": 0,
                    "retention": 3600,
                    "max_message_size": QUEUE_MAX_SIZE,
                    "max_receive_count": 2,
                },
            )
        )
        (evt_id,) = run(_core.send(qk, [enc("tracked")], None, _codec.EVENTS))
        (req_id,) = run(_core.send(qk, [enc({"request": 1})], None, _codec.REQUEST))
        run(_core.send(qk, [enc("p1"), enc(b"p2"), enc("p3", {"a": 1})], None))
        got = run(_core.receive(qk, 5, None)).messages
        receipts = {m.id: m.receipt for m in got}
        r_evt, r_req = receipts.pop(evt_id), receipts.pop(req_id)
        r_plain, r_plain2, r_dead = receipts.values()
        assert r_evt.endswith("e") and r_req.endswith("r")
        run(_core.reject(qk, [r_dead], "dead|for\na reason"))
        # A message received max_receive_count times and visible again.
        run(_core.send(qk, [enc("maxed")], None))
        for _ in range(2):
            run(_core.receive(qk, 1, 0))
        # A tracked message past its retention (sent and visible long ago).
        (old_id,) = run(_core.send(qk, [enc("old")], None, _codec.EVENTS))
        stored = self.raw.hget(qk.msgs, old_id)
        self.raw.hset(qk.msgs, old_id, b"0000000000001" + stored[13:])
        self.raw.zadd(qk.vis, {old_id: 1})
        run(_core.send(qk, [enc("v1", {"k": "v"}), enc([1, 2])], None))
        stale = r_plain.split(".")[0] + ".1"

        tk = TopicKeys.for_topic(self.prefix, "t")
        client.drive(
            _topics.subscribe_flow(
                tk,
                "s1",
                86400,
                **{
                    "visibility_timeout": 30,
                    "delay": 0,
                    "retention": 3600,
                    "max_message_size": QUEUE_MAX_SIZE,
                    "max_receive_count": None,
                },
            )
        )
        client.drive(_topics.publish_flow(tk, _topics.MemberCache(), ["a", "b"]))
        client.drive(
            _topics.subscribe_flow(
                tk,
                "s2",
                0.05,
                **{
                    "visibility_timeout": 30,
                    "delay": 0,
                    "retention": 3600,
                    "max_message_size": QUEUE_MAX_SIZE,
                    "max_receive_count": 3,
                },
            )
        )
        deadline = time.monotonic() + 10
        while not run(_topics.read(tk)).expired():
            assert time.monotonic() < deadline, "subscription s2 never expired"
            time.sleep(0.01)

        def pending(flow: Any) -> Call[Any]:
            """The first write a flow makes, after its read, without running it."""
            first = next(flow)
            call = flow.send(run(first))
            assert isinstance(call, Call)
            return call

        # A queue of the layout before 0.2: per-message state in a 'state' hash.
        lk = QueueKeys.for_queue(self.prefix, "legacy")
        run(
            _core.create_queue(
                lk,
                {
                    "visibility_timeout": 30,
                    "delay": 0,
                    "retention": 3600,
                    "max_message_size": QUEUE_MAX_SIZE,
                    "max_receive_count": None,
                },
            )
        )
        legacy_ids = run(_core.send(lk, [enc("l1"), enc("l2")], None, _codec.REQUEST))
        self.raw.hset(lk.state, mapping={legacy_ids[0]: b"1764000000000001:1:1796000000000", legacy_ids[1]: b"7:2:5x"})
        self.raw.hdel(lk.meta, "v")  # made by 0.1
        # A FIFO queue: group A with a1 in flight, a2 dead (rejected), a3 waiting; group
        # 'B|x~1:' (a group holding the header's own characters) with b1 in flight, b2
        # waiting; a request waiting alone in group C.
        fk = QueueKeys.for_queue(self.prefix, "fq")
        run(
            _core.create_queue(
                fk, {"fifo": True, "max_receive_count": 2, "retention": 3600, "max_message_size": QUEUE_MAX_SIZE}
            )
        )
        run(_core.send(fk, [enc("a1"), enc("a2"), enc("a3")], None, "", "A"))
        run(_core.send(fk, [enc("b1"), enc("b2", {"k": "v"})], None, "", "B|x~1:"))
        (fifo_req,) = run(_core.send(fk, [enc("c1")], None, _codec.REQUEST, "C"))
        a1, a2 = run(_core.receive(fk, 2, None)).messages
        (b1,) = run(_core.receive(fk, 1, None)).messages
        assert (a1.group, a2.group, b1.group) == ("A", "A", "B|x~1:")
        run(_core.reject(fk, [a2.receipt], "bad"))
        fifo_stale = a1.receipt.split(".")[0] + ".1"
        fifo_cases = [
            Case("send:fifo", _core.send(fk, [enc("x"), enc("y")], None, "", ["A", "Z"])),
            Case("receive:fifo", _core.receive(fk, 10, None)),
            Case("delete:fifo", _core.delete(fk, [a1.receipt, b1.receipt, fifo_stale])),
            Case("change_visibility:fifo", _core.change_visibility(fk, [a1.receipt, b1.receipt], 0)),
            Case("unreceive:fifo", _core.unreceive(fk, [a1.receipt, b1.receipt, fifo_stale])),
            Case("reject:fifo", _core.reject(fk, [b1.receipt, fifo_stale], "no")),
            Case("redrive:fifo", _core.redrive(fk)),
            Case("withdraw:fifo", _core.withdraw(fk, fifo_req, 1.0)),
            Case("stats:fifo", _core.stats(fk)),
            Case("purge:fifo", _core.purge(fk)),
        ]
        fresh = QueueKeys.for_queue(self.prefix, "fresh")
        s1 = tk.subscription("s1")
        manual_pairs = ["", "", ""] + [p for r in (r_plain, r_plain2, stale) for p in _core.split_receipt(r)]
        cases = [
            Case(
                "create_queue:new",
                _core.create_queue(
                    fresh,
                    {
                        "visibility_timeout": 30,
                        "delay": 0,
                        "retention": 3600,
                        "max_message_size": QUEUE_MAX_SIZE,
                        "max_receive_count": None,
                    },
                ),
            ),
            Case(
                "create_queue:existing",
                _core.create_queue(
                    qk,
                    {
                        "visibility_timeout": 3600,
                        "delay": 0,
                        "retention": 3600,
                        "max_message_size": QUEUE_MAX_SIZE,
                        "max_receive_count": 2,
                    },
                ),
            ),
            Case("send", _core.send(qk, [enc("x"), enc("y", {"k": "v"})], 5, "")),
            Case("receive", _core.receive(qk, 10, None)),
            Case("receive:dlq", _core.receive(dk, 10, 60)),
            Case("notify", _core.notify_dead(qk, [req_id.encode(), b"max_receives|2"])),
            Case("delete:joined", _core.delete(qk, [r_plain, r_plain2, stale])),
            Case(
                "delete:pairs",
                Call(
                    _core.script("delete"),
                    [qk.meta, qk.msgs, qk.vis, qk.why],
                    manual_pairs,
                    _core._flags,
                    qk.name,
                ),
            ),
            Case("delete:tracked", _core.delete(qk, [r_req, r_evt, r_plain], replies=["ok", {"a": 1}, None])),
            Case("change_visibility", _core.change_visibility(qk, [r_plain, r_evt, stale], 10)),
            Case("reject", _core.reject(qk, [r_req, r_evt, r_plain], "bad|input\nline 2")),
            Case("purge", _core.purge(qk)),
            Case("pause", _core.set_paused(qk, True)),
            Case("set_attributes", _core.set_attributes(qk, {"rate_limit": 2.5, "max_in_flight": 7})),
            *fifo_cases,
            Case("stats", _core.stats(qk)),
            Case("peek", _peek.peek(dk, 10)),
            Case("redrive", _core.redrive(qk)),
            Case("delete_queue", _core.delete_queue(qk)),
            Case("withdraw", _core.withdraw(qk, req_id, 1.0)),
            Case("topic_read", _topics.read(tk)),
            Case("topic_depths", Call(_core.script("topic_depths"), [s1.msgs], [], lambda r: [int(x) for x in r], "t")),
            Case("publish", pending(_topics.publish_flow(tk, _topics.MemberCache(), ["hello", b"bytes"]))),
            Case(
                "subscribe",
                pending(
                    _topics.subscribe_flow(
                        tk,
                        "s1",
                        86400,
                        **{
                            "visibility_timeout": 30,
                            "delay": 0,
                            "retention": 3600,
                            "max_message_size": QUEUE_MAX_SIZE,
                            "max_receive_count": None,
                        },
                    )
                ),
            ),
            Case("unsubscribe", _topics.unsubscribe(tk, ["s1", "s2"], only_expired=True)),
            Case(
                "upgrade",
                Call(
                    _core.script("upgrade"),
                    [lk.meta, lk.msgs, lk.state, lk.vis, lk.dlq().meta, lk.dlq().msgs, lk.dlq().state, lk.dlq().vis],
                    ["0", "0", "0"],
                    list,
                    "x",
                ),
            ),
        ]
        self.cases = {c.name: c for c in cases}
        keys = {k.decode() for k in self.raw.scan_iter(match=prefix_pattern(self.prefix), count=1000)}
        for c in cases:
            keys.update(c.call.keys)
        self.known = sorted(keys)
        for k in self.known:
            dumped = self.raw.dump(k)
            if dumped is not None:
                self.dump[k] = (dumped, max(0, self.raw.pttl(k)))
        self.plausible = sorted(
            {a for c in cases for a in c.argv if len(a) < 200}
            | {r.encode() for r in (r_evt, r_req, r_plain, r_plain2, stale)}
            | {p.encode() for r in (r_evt, r_req, r_plain) for p in r.split(".")}
            | {evt_id.encode(), req_id.encode(), old_id.encode(), qk.events.encode(), b"s1", b"s2"}
        )

    def restore(self) -> None:
        pipe = self.raw.pipeline(transaction=False)
        for k in self.known:
            pipe.unlink(k)
        for k, (dumped, ttl) in self.dump.items():
            pipe.restore(k, ttl, dumped, replace=True)
        pipe.execute()

    def snapshot(self) -> Snapshot:
        pipe = self.raw.pipeline(transaction=False)
        for k in self.known:
            pipe.type(k)
            pipe.pttl(k)
        raw = pipe.execute()
        kinds = {k: (t.decode(), ttl >= 0) for k, t, ttl in zip(self.known, raw[::2], raw[1::2], strict=True)}
        present = [k for k, (t, _) in kinds.items() if t != "none"]
        read = {
            "string": lambda p, k: p.get(k),
            "hash": lambda p, k: p.hgetall(k),
            "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
            "list": lambda p, k: p.lrange(k, 0, -1),
            "set": lambda p, k: p.smembers(k),
        }
        pipe = self.raw.pipeline(transaction=False)
        for k in present:
            read[kinds[k][0]](pipe, k)
        return {k: (kinds[k][0], v, kinds[k][1]) for k, v in zip(present, pipe.execute(), strict=True)}

    def listener(self, key: str) -> tuple[redis.Redis, Any]:
        """A connection to the node holding ``key``, subscribed there to the test's channels."""
        if isinstance(self.raw, redis.Redis):
            host, port = "", 0
        else:
            n = self.raw.get_node_from_key(key)
            host, port = n.host, n.port
        address = f"{host}:{port}"
        if address not in self.listeners:
            node = redis.Redis(connection_pool=self.raw.connection_pool) if not port else redis.Redis(host, port)
            ps = node.pubsub(ignore_subscribe_messages=True)
            ps.psubscribe(f"{self.prefix}:*")
            self.listeners[address] = (node, ps)
        return self.listeners[address]

    def published(self, key: str) -> list[bytes]:
        """What scripts published on channels of ``key``'s hash tag since the last look.

        Scripts publish on the node that holds their keys, straight to its own
        subscribers: a barrier published there after the call comes after them.
        """
        node, ps = self.listener(key)
        tag = key[: key.index("}") + 1].encode()
        barrier = f"{self.prefix}:barrier:{uuid.uuid4().hex}".encode()
        node.publish(barrier, b"end")
        out: list[bytes] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = ps.get_message(timeout=1.0)
            if msg is None:
                continue
            if msg["channel"] == barrier:
                return out
            if msg["channel"].startswith(tag):
                out.append(msg["data"])
        raise AssertionError("the barrier message never arrived")

    def close(self) -> None:
        for node, ps in self.listeners.values():
            ps.close()
            node.close()
        for k in self.raw.scan_iter(match=prefix_pattern(self.prefix), count=1000):
            self.raw.unlink(k)
        self.raw.close()


# ------------------------------------------------------------------ one call, checked


def clip(v: object) -> str:
    r = repr(v)
    return r if len(r) < 300 else r[:300] + f"...({len(r)} chars)"


def attempt(world: World, case: Case, argv: Argv) -> None:
    """Call the script with ``argv`` on the restored world and check the property."""
    world.restore()
    keys = list(case.call.keys)
    world.published(keys[0])
    before = world.snapshot()
    violations = CONTRACT[case.script](argv, keys)
    what = f"{case.name} ARGV={clip(argv)}"
    try:
        reply = world.raw.evalsha(case.call.script.sha, len(keys), *keys, *argv)
    except redis.ResponseError as e:
        msg = str(e)
        after = world.snapshot()
        changed = sorted(
            k.removeprefix(world.prefix) for k in set(before) | set(after) if before.get(k) != after.get(k)
        )
        published = world.published(keys[0])
        partial = f" after writing {changed}" * bool(changed) + f" after publishing {published}" * bool(published)
        assert msg.startswith("RQ_"), f"{what}: Lua runtime error: {msg}{partial}"
        mapped = from_lua(msg, "q")  # raises if an RQ_ reply cannot be read
        assert mapped is not None, f"{what}: unknown error code {msg}"
        assert not partial, f"{what}: {msg}{partial}"
        if msg.startswith("RQ_BADARG"):
            assert violations, f"{what}: refused ({msg}) though within the contract"
            assert isinstance(mapped, InvalidParameter)
        return
    assert not violations, f"{what}: accepted though {violations} is outside the contract; replied {clip(reply)}"
    check_stored(world.snapshot(), world.prefix)
    with contextlib.suppress(RQueueError):  # withdraw replies with an outcome the client raises
        case.call.parse(reply)
    n = receipts_in(case.script, argv)
    if n is not None:
        if case.script == "delete":  # one character per receipt
            assert isinstance(reply, bytes) and len(reply) == n and set(reply) <= set(b"01"), f"{what}: {reply!r}"
        else:
            assert isinstance(reply, list) and len(reply) == n and set(reply) <= {0, 1}, f"{what}: replied {reply!r}"


# ------------------------------------------------------------------ hostile values

SPECIAL: list[bytes] = [
    b"",
    b"nan",
    b"-nan",
    b"NaN",
    b"inf",
    b"-inf",
    b"1e309",
    b"-1e309",
    b"-0",
    b"0x10",
    b"0X1F",
    b"1e3",
    b" 5",
    b"5 ",
    b"5\n",
    b"1.5",
    b"5.",
    b".5",
    b"-1",
    b"0",
    b"1",
    b"2",
    b"007",
    b"1001",
    b"43200001",
    b"9007199254740993",
    b"99999999999999999999999",
    b"9" * 400,
    b"|",
    b":",
    b".",
    b" ",
    b"\n",
    b"a|b|c",
    b"1:2:3",
    b"1:2:3x",
    b"1.2",
    b"1.2.3",
    b"1.2 3.4",
    b"1.2  3.4",
    b"1.2 ",
    b"r",
    b"e",
    b"x",
    b"j",
    b"?",
    b"!",
    b"rok",
    b"pjunk",
    b"expired",
    b"all",
    b"\x00",
    b"\xff\xfe\x00",
    b"s",
    b"S",
    b"S:",
    b"S5",
    b"Sx:{}",
    b"S99:{}",
    b"S2:{}body",
    b"?sbody",
    b"Z",
    b"x" * 70_000,
]


def values(world: World) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(SPECIAL),
        st.sampled_from(world.plausible),
        st.integers(-(2**64), 2**64).map(lambda i: str(i).encode()),
        st.floats().map(lambda f: repr(f).encode()),
        st.binary(max_size=24),
        st.text(max_size=12).map(str.encode),
    )


@st.composite
def mutated(draw: st.DrawFn, base: Argv, vals: st.SearchStrategy[bytes]) -> Argv:
    argv = list(base)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "truncate", "insert", "remove", "append"]))
        if op == "set" and argv:
            argv[draw(st.integers(0, len(argv) - 1))] = draw(vals)
        elif op == "truncate":
            argv = argv[: draw(st.integers(0, len(argv)))]
        elif op == "insert":
            argv.insert(draw(st.integers(0, len(argv))), draw(vals))
        elif op == "remove" and argv:
            del argv[draw(st.integers(0, len(argv) - 1))]
        else:
            argv.append(draw(vals))
    return argv


# ------------------------------------------------------------------ tests

CASES = [
    "create_queue:new",
    "create_queue:existing",
    "send",
    "receive",
    "receive:dlq",
    "notify",
    "delete:joined",
    "delete:pairs",
    "delete:tracked",
    "change_visibility",
    "reject",
    "purge",
    "stats",
    "peek",
    "redrive",
    "delete_queue",
    "withdraw",
    "topic_read",
    "topic_depths",
    "publish",
    "subscribe",
    "unsubscribe",
    "upgrade",
    "pause",
    "set_attributes",
    "send:fifo",
    "receive:fifo",
    "delete:fifo",
    "change_visibility:fifo",
    "unreceive:fifo",
    "reject:fifo",
    "redrive:fifo",
    "withdraw:fifo",
    "stats:fifo",
    "purge:fifo",
]


def _set(i: int, v: bytes) -> Callable[[Argv], Argv]:
    return lambda a: [*a[:i], v, *a[i + 1 :]]


#: Defects the fuzz found, one ARGV edit each (applied to the case's base ARGV).
DEFECTS: list[tuple[str, str, Callable[[Argv], Argv]]] = [
    ("create_queue:new", "dlq-retention-missing-partial-write", lambda a: a[:10]),
    ("create_queue:new", "vt-not-a-number-stored", _set(0, b"abc")),
    ("send", "delay-nan-partial-write", _set(0, b"nan")),
    ("send", "flag-garbage-corrupts-message", _set(1, b"abc")),
    ("send", "empty-message-runtime-error", _set(2, b"")),
    ("send", "no-message-runtime-error", lambda a: a[:2]),
    ("receive", "vt-nan-partial-write", _set(1, b"nan")),
    ("receive", "vt-inf-hides-forever", _set(1, b"inf")),
    ("receive", "max-missing-runtime-error", lambda a: []),
    ("change_visibility", "timeout-inf-hides-forever", _set(0, b"inf")),
    ("change_visibility", "timeout-nan-runtime-error", _set(0, b"nan")),
    ("change_visibility", "half-receipt-dropped", lambda a: a[:-1]),
    ("delete:tracked", "reply-ttl-not-a-number-partial-write", _set(1, b"abc")),
    ("delete:tracked", "reply-key-missing-partial-write", _set(11, b"rsok")),
    ("delete:joined", "garbage-receipt-skipped", lambda a: [*a[:3], a[3] + b" x.y"]),
    ("delete:pairs", "half-receipt-dropped", lambda a: a[:-1]),
    ("notify", "reply-ttl-not-a-number-partial-write", _set(0, b"abc")),
    ("notify", "payload-missing-runtime-error", lambda a: a[:1]),
    ("peek", "count-0-returns-everything", _set(0, b"0")),
    ("redrive", "count-negative-moves-everything", _set(0, b"-1")),
    ("publish", "count-over-names-rewinds-ids", _set(1, b"5")),
    ("publish", "empty-message-runtime-error", lambda a: [*a[:-1], b""]),
    ("reject", "reply-ttl-not-a-number-partial-write", _set(2, b"abc")),
    ("reject", "reply-key-missing-partial-write", lambda a: [*a[:3], *a[9:11], b"r", *a[3:9]]),
    ("subscribe", "ttl-not-a-number-partial-write", _set(6, b"abc")),
    ("subscribe", "exists-error-after-reaping", _set(0, b"60000")),
    ("subscribe", "name-with-separator-stored", _set(7, b"a|b")),
    ("unsubscribe", "mode-typo-removes-live", _set(0, b"Expired")),
    ("unsubscribe", "name-without-keys", lambda a: [*a, b"s3"]),
    ("unsubscribe", "names-shifted-partial-write", lambda a: [b"", *a]),
    ("withdraw", "id-missing-runtime-error", lambda a: []),
    ("upgrade", "cursor-past-64-bits-command-error", _set(0, b"99999999999999999999")),
]


@pytest.fixture(scope="module")
def worlds() -> Iterator[dict[str, World]]:
    built: dict[str, World] = {}
    yield built
    for w in built.values():
        w.close()


@pytest.fixture(params=["standalone", pytest.param("cluster", marks=pytest.mark.cluster)])
def world(request: pytest.FixtureRequest, worlds: dict[str, World]) -> World:
    """The populated world on standalone or on the Cluster (built once per module)."""
    if request.param not in worlds:
        url = request.getfixturevalue("server_url" if request.param == "standalone" else "cluster_url")
        worlds[request.param] = World.build(url)
    return worlds[request.param]


def test_every_script_is_fuzzed() -> None:
    assert set(CONTRACT) == {p.stem for p in LUA.glob("*.lua") if not p.stem.startswith("_")}
    assert {c.split(":")[0] for c in CASES} == set(CONTRACT)


@pytest.mark.parametrize("name", CASES)
def test_base_call_is_accepted(world: World, name: str) -> None:
    """The ARGV the client builds are inside the contract and succeed."""
    case = world.cases[name]
    assert CONTRACT[case.script](case.argv, case.call.keys) == []
    attempt(world, case, case.argv)


@pytest.mark.parametrize("name", CASES)
def test_hostile_argv(world: World, name: str) -> None:
    case = world.cases[name]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(argv=mutated(case.argv, values(world)))
    def run(argv: Argv) -> None:
        attempt(world, case, argv)

    run()


@pytest.mark.parametrize(("name", "edit"), [pytest.param(n, e, id=f"{n}-{d}") for n, d, e in DEFECTS])
def test_defect(world: World, name: str, edit: Callable[[Argv], Argv]) -> None:
    """Each defect the fuzz found, as a fixed example."""
    case = world.cases[name]
    attempt(world, case, edit(case.argv))


def test_refusal_reaches_the_client_as_invalid_parameter(lib: rqueue.Client, prefix: str) -> None:
    """A script's RQ_BADARG becomes InvalidParameter naming the argument and its range."""
    keys = QueueKeys.for_queue(prefix, "q")
    lib.create_queue("q")
    bad = Call(_core.script("peek"), _peek.peek(keys, 1).keys, [0], _core._flags, "q")
    with pytest.raises(InvalidParameter) as e:
        lib.run(bad)
    assert str(e.value) == "max_messages must be an integer from 1 to 1000; nothing was changed (queue 'q')"
