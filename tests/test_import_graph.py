"""jconv has no import cycle: every import between its modules, at module level or inside a
function, read from the source (docs/design.md's layers promise it)."""

from __future__ import annotations

import ast
from pathlib import Path

import jconv

ROOT = Path(jconv.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = ("jconv",) + path.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            prefix = (".".join(base + [node.module] if node.module else base) if node.level
                      else str(node.module))
            targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        else:
            continue
        # Importing a module runs its parent packages first: that is no cycle of its own.
        found.update(t for t in targets if t in mods and t != name
                     and not name.startswith(t + "."))
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_the_walker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_jconv_has_no_import_cycle():
    mods = _modules()
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert not any(m.startswith("jconv._registry") for m in graph["jconv._auto"]
                   | graph["jconv._auto_cache"] | graph["jconv._auto_dispatch"])
    assert graph["jconv._registry"] >= {"jconv._auto", "jconv._auto_dispatch"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
