"""The package's import graph, computed from the source: no cycles, one-way layers.

Every import counts, including those inside functions: a lazy import hides a cycle from
Python's loader but not from a reader, and the layering is for readers.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "killswitch"
VENUES = sorted(p.name for p in (PKG / "venues").iterdir() if (p / "__init__.py").exists())


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Modules of ours that ``path`` imports (a ``from pkg import name`` of a submodule
    counts as importing that submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    files = [p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_reports_a_cycle_it_is_given():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_package_import_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_venue_imports_another_venues_package():
    for module, deps in graph().items():
        parts = module.split(".")
        if parts[:2] != ["killswitch", "venues"] or len(parts) < 3 or parts[2] not in VENUES:
            continue
        others = {d for d in deps if d.split(".")[:2] == ["killswitch", "venues"]
                  and len(d.split(".")) > 2 and d.split(".")[2] in VENUES and d.split(".")[2] != parts[2]}
        assert not others, f"{module} imports another venue: {sorted(others)}"


def test_lower_layers_import_nothing_above_them():
    # schema and net sit below the rules, the venues and the config loader.
    above = ("killswitch.config", "killswitch.rules", "killswitch.engine", "killswitch.daemon",
             "killswitch.control", "killswitch.demo", "killswitch.venues")
    for module, deps in graph().items():
        if module.startswith(("killswitch.schema", "killswitch.net")):
            bad = {d for d in deps if d.startswith(above)}
            if module.startswith("killswitch.schema"):
                # the rule entry describes venue configs (dataclasses in venues.base)
                bad -= {"killswitch.venues.base", "killswitch.venues"}
            assert not bad, f"{module} imports a layer above it: {sorted(bad)}"


def test_every_venue_folder_has_the_same_shape():
    for venue in VENUES:
        folder = PKG / "venues" / venue
        assert (folder / "wire.py").is_file(), f"{venue}: wire.py (pure codecs and signing)"
        assert (folder / "session.py").is_file(), f"{venue}: session.py (the trio shell)"
        assert (folder / "sim" / "__init__.py").is_file(), f"{venue}: sim/ (the simulated exchange)"


def test_wire_modules_are_sans_io():
    for venue in VENUES:
        tree = ast.parse((PKG / "venues" / venue / "wire.py").read_text(encoding="utf-8"))
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        mods |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not mods & {"trio", "socket", "httpx", "trio_websocket", "asyncio", "ssl"}, venue
