"""The package's layers: imports run one way, and no module imports itself round a cycle.

application (cli) -> consumer -> clients (_async, _sync) -> transport -> protocol.
Every import counts, also one inside a function: a lazy import that dodges a
cycle is still a cycle. The public facades (``rqueue``, ``rqueue.asyncio``,
``rqueue.demo_handlers``, ``__main__``) sit on top and may import any layer;
only the application (cli) may import them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rqueue"

#: Layer of each subpackage, lowest first; a module may import its own layer or lower ones.
LAYERS = {"_protocol": 0, "_transport": 1, "_async": 2, "_sync": 2, "_consumer": 3, "cli": 4}
FACADES = {"rqueue", "rqueue.asyncio", "rqueue.__main__", "rqueue.demo_handlers"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The rqueue modules ``name`` imports, anywhere in it."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # ``from pkg import sub`` imports the module pkg.sub; ``from pkg import name``, pkg itself.
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = [t for t in subs if t in MODULES] or [base]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> tuple[str, int] | None:
    parts = name.split(".")
    if name in FACADES or len(parts) < 2:
        return None
    return parts[1], LAYERS[parts[1]]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n not in FACADES))
def test_imports_run_down_the_layers(name: str) -> None:
    mine = _layer(name)
    assert mine is not None, f"{name} is in no layer: add its folder to LAYERS"
    wrong = []
    for target in GRAPH[name]:
        theirs = _layer(target)
        if theirs is None:
            if mine[0] != "cli":  # the application may use the public API
                wrong.append(f"{target} (a facade)")
        elif theirs[1] > mine[1] or (theirs[1] == mine[1] and theirs[0] != mine[0]):
            wrong.append(f"{target} (layer {theirs[0]})")
    assert not wrong, f"{name} (layer {mine[0]}) imports upward or sideways: {sorted(wrong)}"


def test_no_import_cycles() -> None:
    cycles = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_layer_table_sees_every_module() -> None:
    """A guard on the guard: the import graph was read (a broken parser would pass everything)."""
    assert len(MODULES) > 30
    assert "rqueue._protocol.keys" in GRAPH["rqueue._protocol.operations"]
    assert "rqueue._protocol.errors" in GRAPH["rqueue._protocol.keys"]


def test_no_two_classes_share_a_name() -> None:
    """One name, one class: ``Tracker`` or ``Router`` meaning two things misleads every reader.

    The generated sync twin of an asyncio module (``_sync/x.py`` of ``_async/x.py``) may
    repeat a name the rewrite leaves alone: it is the same class, written once.
    """
    seen: dict[str, list[str]] = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(name.replace("rqueue._sync.", "rqueue._async."))
    shared = {cls: sorted(set(where)) for cls, where in seen.items() if len(set(where)) > 1}
    assert not shared, f"classes sharing a name: {shared}"
