"""What every benchmark script shares: the ~240-byte JSON body of
../shared/bench-limit/minimal_lua.py (copied so the scripts stand alone)."""

from __future__ import annotations

from typing import Any


def payload(i: int) -> dict[str, Any]:
    """Body number ``i``: the same dict as ``minimal_lua.payload(i)``."""
    return {
        "id": i,
        "user": f"user-{i:08d}",
        "email": f"user{i:08d}@example.com",
        "action": "signup",
        "ts": 1795305600 + i,
        "tags": ["alpha", "beta", "gamma"],
        "meta": {"source": "bench", "attempt": 0, "region": "eu-west-1"},
        "pad": "x" * 40,
    }
