"""The floor core_bench measures rqueue against: minimal_lua.py, the least a Lua queue can do.

It lives outside this repository, at ``../shared/bench-limit/minimal_lua.py`` beside it,
unless ``RQUEUE_MINIMAL_LUA`` names another path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The floor benchmark: ``RQUEUE_MINIMAL_LUA``, else ``shared/bench-limit/minimal_lua.py`` beside the repository.
MINIMAL_DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "bench-limit" / "minimal_lua.py"
MINIMAL = Path(os.environ.get("RQUEUE_MINIMAL_LUA") or MINIMAL_DEFAULT)


def minimal_available(skip: bool) -> bool:
    """Whether to measure the floor: not with --no-minimal; exit 2 when RQUEUE_MINIMAL_LUA names no
    file; without the default file, say so on stderr and measure rqueue alone (no ratios)."""
    if skip:
        return False
    if MINIMAL.is_file():
        return True
    if os.environ.get("RQUEUE_MINIMAL_LUA"):
        print(f"core_bench: error: RQUEUE_MINIMAL_LUA={str(MINIMAL)!r} is not a file", file=sys.stderr)
        sys.exit(2)
    print(
        f"core_bench: no floor benchmark at {MINIMAL} (../shared/bench-limit/minimal_lua.py beside the "
        "repository): measuring rqueue alone, without ratios. Set RQUEUE_MINIMAL_LUA to its path, "
        "or pass --no-minimal to skip it without this note.",
        file=sys.stderr,
    )
    return False


def load() -> Any:
    """minimal_lua.py as a module (its scripts and keys)."""
    spec = importlib.util.spec_from_file_location("minimal_lua", MINIMAL)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(url: str, total: int, batches: Sequence[int]) -> list[dict[str, float]]:
    """One throughput run of minimal_lua.py (a subprocess that FLUSHDBs ``url``): a row per batch size."""
    out = subprocess.run(
        [
            sys.executable,
            str(MINIMAL),
            "--url",
            url,
            "--json",
            "--total",
            str(total),
            "--batches",
            ",".join(map(str, batches)),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]
