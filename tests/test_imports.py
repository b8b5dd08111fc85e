"""The module graph: no import cycle, lazy (function-level) imports included; actors/ holds actors.

Imports under `if TYPE_CHECKING:` are left out: they never run.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "chain", "messages", "mining", "net", "ops", "runtime", "sim", "bench")


def _modules() -> dict[str, Path]:
    found = {p.stem: p for p in ROOT.glob("*.py")}
    for package in PACKAGES:
        for path in (ROOT / package).glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in `path` (top level or inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name in modules:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules_lazy_imports_included():
    graph = _graph()
    assert "node" in graph and "actors.base" in graph["actors.chain_keeper"]  # the graph is real
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph) or [])


def test_each_file_in_actors_defines_an_actor_class():
    for path in sorted((ROOT / "actors").glob("*.py")):
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text())
        bases = {
            (b.id if isinstance(b, ast.Name) else b.attr if isinstance(b, ast.Attribute) else "")
            for node in tree.body if isinstance(node, ast.ClassDef) for b in node.bases
        }
        assert bases & {"NodeActor", "ThreadingActor"}, f"{path.name} defines no actor class"


def _every_import(source: str) -> set[str]:
    """Every module named by an import in `source`, wherever it is: top level, in a function, under TYPE_CHECKING."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def _names_ops(module: str) -> bool:
    return module == "ops" or module.startswith("ops.")


def test_the_import_reader_sees_lazy_and_type_checking_imports():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from node import Node\n"
              "def f():\n    import ops.http_server as h\n")
    assert _every_import(source) == {"typing", "node", "ops.http_server"}


def test_node_imports_nothing_from_ops_and_only_the_demo_in_ops_imports_node():
    """ops reads a node through ops/view.py's protocols; run_node.py (and the demo, which starts nodes) wire them."""
    node_imports = _every_import((ROOT / "node.py").read_text())
    assert "supervisor" in node_imports  # the reader sees node.py's imports
    assert not {m for m in node_imports if _names_ops(m)}
    ops_imports = {path.relative_to(ROOT).as_posix(): _every_import(path.read_text())
                   for path in (ROOT / "ops").rglob("*.py")}
    assert "ops.view" in ops_imports["ops/http_server.py"]  # the scan covers ops/
    assert {path for path, modules in ops_imports.items() if "node" in modules} <= {"ops/demo.py"}
