"""The house rules of docs/architecture.md: socbi's modules import each other one way
(no import circle, counting imports inside functions too), and one atomic-write helper."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PKG = Path(__file__).resolve().parents[1] / "python" / "socbi"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(name: str, mods: Set[str]) -> str:
    """The socbi module ``name`` lives in (a name inside the package root maps to _core)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def import_graph() -> Dict[str, Set[str]]:
    """module -> socbi modules it imports anywhere in its body (package facades excluded)."""
    mods = _modules()
    names = set(mods)
    graph: Dict[str, Set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        out: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if not t.startswith("socbi"):
                    continue
                if t in ("socbi.SemiOrderedIndex", "socbi.MAX_CAPACITY", "socbi.__version__"):
                    t = "socbi._core"
                r = _resolve(t, names)
                if r and r != mod and mods[r].name != "__init__.py":
                    out.add(r)
        if not is_pkg:
            graph[mod] = out
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> List[str]:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


def test_no_import_circles():
    graph = import_graph()
    assert graph["socbi.session"] >= {"socbi.strategies", "socbi.scoring", "socbi.labelling"}
    cycle = find_cycle(graph)
    assert not cycle, " -> ".join(cycle)


def test_data_flows_one_way_through_the_layers():
    """features -> knn -> scoring -> index -> strategies -> session -> experiment / CLI:
    no module imports one of a later layer."""
    layers = [["socbi.knn"], ["socbi.scoring"], ["socbi.strategies", "socbi.ascmr"],
              ["socbi.labelling", "socbi.session"], ["socbi.experiment"], ["socbi.config", "socbi.cli"]]
    graph = import_graph()
    rank = {m: i for i, group in enumerate(layers) for m in group}
    for m, deps in graph.items():
        for d in deps:
            if m in rank and d in rank:
                assert rank[d] <= rank[m], f"{m} imports {d}, a later layer"


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_one_atomic_write_helper():
    """Only socbi/_files.py renames temporary files over targets (os.replace)."""
    users = sorted(_module_name(p) for p in PKG.rglob("*.py")
                   if "os.replace(" in p.read_text(encoding="utf-8"))
    assert users == ["socbi._files"], users
