"""The import graph of backend/, kernels/ and addon/: no import cycle between modules, and no import from
the runtime (trellis_backend, trellis_kernels, the add-on) into the lab (trellis_lab, trellis_bench).

Every import statement counts, at module level and inside functions alike (a lazy import is still a
dependency). ``from package import name`` is an edge to the submodule ``package.name`` when there is
one, else to the package itself. Modules outside these trees (torch, bpy, ...) are not followed.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]
# source root -> prefix of the module names found under it (the add-on is imported as a package of its own)
SOURCE_ROOTS = {REPO / "backend": "", REPO / "kernels": "", REPO / "addon": "addon"}
RUNTIME = ("trellis_backend", "trellis_kernels", "addon")
LAB = ("trellis_lab", "trellis_bench")


def module_name(path: Path, root: Path, prefix: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(([prefix] if prefix else []) + parts)


def collect_modules() -> Dict[str, Path]:
    modules = {}
    for root, prefix in SOURCE_ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                modules[module_name(path, root, prefix)] = path
    return modules


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def owner(name: str, modules: Dict[str, Path]):
    """The longest known module that `name` is or lies inside (None for third-party names)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: Dict[str, Path]) -> Set[str]:
    package = module if is_package(path) else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                base_parts = base_parts[:len(base_parts) - (node.level - 1)] if node.level > 1 else base_parts
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            dep = owner(target, modules)
            if dep is not None and dep != module:
                found.add(dep)
    return found


def import_graph() -> Dict[str, Set[str]]:
    modules = collect_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle (as a path a -> b -> ... -> a) per strongly connected component of more than one module."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def connect(v):  # Tarjan, iterative enough for a few hundred modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    found = []
    for component in components:
        start = min(component)
        path, seen = [start], {start}
        while True:  # walk inside the component until a module repeats
            nxt = min(w for w in graph[path[-1]] if w in component)
            if nxt in seen:
                found.append(path[path.index(nxt):] + [nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return found


def runtime_to_lab(graph: Dict[str, Set[str]]) -> List[str]:
    """Every edge ``module -> dependency`` from a runtime module into the lab."""
    return sorted(f"{m} -> {d}" for m, deps in graph.items() if m.split(".")[0] in RUNTIME
                  for d in deps if d.split(".")[0] in LAB)


def test_the_graph_covers_every_tree():
    graph = import_graph()
    for top in ("trellis_backend", "trellis_kernels", "trellis_lab", "trellis_bench", "addon"):
        assert any(m == top or m.startswith(top + ".") for m in graph), f"no module of {top} found"
    assert "trellis_backend.pipeline.sequence" in graph["trellis_backend.pipeline.pipeline"]
    assert "trellis_backend.edit" in graph["trellis_backend.cli.edit"]  # a function-level import counts


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in found)


def test_runtime_never_imports_the_lab():
    bad = runtime_to_lab(import_graph())
    assert not bad, "the runtime imports the lab:\n  " + "\n  ".join(bad)


def test_runtime_to_lab_finder():
    graph = {"trellis_backend.cli": {"trellis_lab.random_model"}, "trellis_lab.training": {"trellis_backend.models"},
             "addon.jobs": {"trellis_bench.harness", "addon.protocol"}}
    assert runtime_to_lab(graph) == ["addon.jobs -> trellis_bench.harness", "trellis_backend.cli -> trellis_lab.random_model"]


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
    ({"a": {"b"}, "b": set(), "c": {"b"}}, []),
])
def test_cycle_finder(graph, expected):
    assert cycles(graph) == expected
