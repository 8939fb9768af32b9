"""The Lua scripts: read once from ``lua/*.lua``, called by EVALSHA.

A NOSCRIPT reply (server restarted, failed over, or SCRIPT FLUSH) loads the
script and retries, so callers never notice. ``lua/_prelude.lua`` (the
argument checks every script shares) is prepended to each.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its name (the operation), source and SHA1."""

    name: str
    source: bytes
    sha: str


def _read(name: str) -> bytes:
    packaged = resources.files("rqueue").joinpath("lua", f"{name}.lua")
    if packaged.is_file():
        return packaged.read_bytes()
    # Source checkout or editable install: lua/ sits beside the package.
    return (Path(__file__).resolve().parents[2] / "lua" / f"{name}.lua").read_bytes()


@cache
def script(name: str) -> Script:
    """The script serving operation ``name`` (``lua/<name>.lua`` after the prelude)."""
    source = _read("_prelude") + _read(name)
    return Script(name, source, hashlib.sha1(source).hexdigest())
