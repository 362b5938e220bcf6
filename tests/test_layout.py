"""The codebase's shape: no import circle among sparsecbm's modules (counting imports
inside functions and under TYPE_CHECKING: a circle there is still two modules that
cannot be read, changed or tested apart), and no test or benchmark reaching for a
private name of the package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sparsecbm"
OURS = ("sparsecbm", "tests", "benchmarks")  # whose private names stay private


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The sparsecbm modules that ``path`` imports anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sparsecbm"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif node.module and node.module.startswith("sparsecbm"):
                target = node.module
            else:
                continue
            for alias in node.names:  # 'from . import explanations' names a module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    # The package root re-exports the public API; a submodule reaching back to it
    # for __version__ is not a dependency on the modules it re-exports.
    return {name: _imports(path, name, modules) - {"sparsecbm"} for name, path in modules.items()}


def test_no_import_circle():
    cycles = _cycles(import_graph())
    assert not cycles, "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checker_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _private_names(path: Path) -> list[str]:
    """'module.name' for each private name of sparsecbm, the tests or the benchmarks that ``path`` imports or reads,
    and each private attribute it reads of an object other than its own."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases, out = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in OURS):
            module = "." * node.level + (node.module or "")  # a relative import is always ours
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{module}.{a.name}")
                aliases[a.asname or a.name] = f"{module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in OURS:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if isinstance(node.value, ast.Name) and node.value.id in aliases:  # module._name
                out.append(f"{aliases[node.value.id]}.{node.attr}")
            elif not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                out.append(f"line {node.lineno}: .{node.attr}")  # an object's private state
    return out


def test_the_private_name_rule_sees_relative_imports(tmp_path):
    path = tmp_path / "t.py"
    private = "_" + "helper"  # spelled apart: the sample names a private helper, this file imports none
    path.write_text(f"from .conftest import {private}\nfrom . import support\nfrom sparsecbm.model import {private}\n")
    assert _private_names(path) == [f".conftest.{private}", f"sparsecbm.model.{private}"]


def test_tests_and_benchmarks_use_only_public_names():
    files = sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    found = {str(p.relative_to(ROOT)): names for p in files if (names := _private_names(p))}
    assert not found, f"private names of sparsecbm used outside it: {found}"
