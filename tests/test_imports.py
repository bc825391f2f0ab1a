"""The import graph of ``aod_ops``: no cycle, and the engine imports neither Ray nor Airflow.

Every module is parsed with ``ast``, and every import counts wherever it is written: at module
level, under ``TYPE_CHECKING``, or inside a function. A function-local import that only dodges a
cycle is still a cycle: the two modules still need each other. Importing ``aod_ops.a.b`` from
outside ``aod_ops.a`` also runs ``aod_ops/a/__init__.py``, so the importer needs that package
too (a real cycle when the package imports the importer back).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "aod_ops"

#: The adapters over the engine, and what sits on them, which may import Ray or Airflow (lazily, so
#: that the command line and the DAG start without them), with why each is one.
ADAPTERS = {
    "aod_ops.ray": "Ray: the synthesis stages, the actor pool and the Jobs API",
    "aod_ops.pipeline": "the steps the CLI, the DAG and the benchmarks call: synthesis runs on Ray",
    "aod_ops.airflow": "Airflow: the provider's hooks, operators and triggers",
    "aod_ops.cli": "the aod command: runs synthesis on Ray and submits Ray jobs",
}
#: Single functions of engine modules that may import Airflow, with why (each is named in
#: docs/architecture.md).
LAZY_EXCEPTIONS = {
    ("aod_ops.sql", "_airflow_url"): "a spec's reference conn that is not a URL is an Airflow connection id",
}
FOREIGN = ("ray", "airflow")


@dataclass(frozen=True)
class Import:
    """What one import statement names, in which function (``None``: at module level), on which line."""

    target: str
    function: str | None
    line: int


@dataclass(frozen=True)
class Package:
    """The modules of a package folder, by dotted name (a package by its ``__init__.py``), and
    the folder that holds it."""

    modules: dict[str, Path]
    root: Path

    @classmethod
    def read(cls, folder: Path) -> Package:
        modules = {}
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder.parent).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
        return cls(modules, folder.parent)

    def imports_of(self, module: str) -> list[Import]:
        """What ``module`` imports: relative imports resolved, ``from X import y`` as ``X.y`` when
        that is a module of the package, else as ``X``."""
        path = self.modules[module]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = []
        for node, function in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path)), None):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    anchor = parts[: len(parts) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in self.modules else base for a in node.names
                ]
            found.extend(Import(target, function, node.lineno) for target in targets)
        return found

    def internal(self, target: str) -> str | None:
        """The module of the package that ``target`` names (``None``: another distribution's)."""
        while target and target not in self.modules:
            target = target.rpartition(".")[0]
        return target or None

    def needs(self, importer: str, imp: Import) -> set[str]:
        """The package's modules that ``imp`` loads for ``importer``: its target, and each package
        on the way to it that ``importer`` is not inside (that package's ``__init__`` runs)."""
        target = self.internal(imp.target)
        if target is None or target == importer:
            return set()
        needed = {target}
        parent = target.rpartition(".")[0]
        while parent and not (importer == parent or importer.startswith(parent + ".")):
            if parent in self.modules:
                needed.add(parent)
            parent = parent.rpartition(".")[0]
        return needed

    def graph(self) -> dict[str, set[str]]:
        """Module -> the package's modules it needs loaded."""
        return {m: set().union(*(self.needs(m, imp) for imp in self.imports_of(m))) for m in self.modules}

    def where(self, importer: str, imported: str) -> str:
        """Where ``importer`` imports ``imported``: file:line, with the function of a local import."""
        found = sorted(
            {(i.line, i.function) for i in self.imports_of(importer) if imported in self.needs(importer, i)}
        )
        path = self.modules[importer].relative_to(self.root)
        return ", ".join(
            f"{path}:{line}" + (f" in {function}()" if function else "") for line, function in found
        )

    def cycles(self) -> list[str]:
        """Each group of modules that import each other, with one cycle through it spelled out."""
        edges = self.graph()
        report = []
        for component in strongly_connected(edges):
            cycle = shortest_cycle(component, edges)
            steps = [f"  {a} -> {b} ({self.where(a, b)})" for a, b in itertools.pairwise(cycle)]
            report.append(" <-> ".join(component) + ":\n" + "\n".join(steps))
        return report


def _import_nodes(
    node: ast.AST, function: str | None
) -> Iterator[tuple[ast.Import | ast.ImportFrom, str | None]]:
    """Every import statement under ``node``, with its innermost enclosing function."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, function
        inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
        yield from _import_nodes(child, inner)


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []
    for root in sorted(edges):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        work = [(root, iter(sorted(edges[root])))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                cut = stack.index(node)
                component, stack[cut:] = stack[cut:], []
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def shortest_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """The shortest cycle from the component's first module back to it, breadth first."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    for node in queue:
        for child in sorted(edges[node] & members):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    raise AssertionError(f"{component} is not strongly connected")


def is_adapter(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ADAPTERS)


AOD_OPS = Package.read(PACKAGE_DIR)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Module-level, function-local and relative imports, ``from package import module`` as the
    module, and the ``__init__`` of a package imported into: a cycle through them is found."""
    files = {
        "pkg/__init__.py": "from . import a\n",
        "pkg/a.py": "import os\nfrom .sub.b import f\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "def f():\n    from .. import a\n",
        "pkg/sub/c.py": "from pkg.sub import b\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    package = Package.read(tmp_path / "pkg")
    assert package.graph() == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub", "pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.a"},
        "pkg.sub.c": {"pkg.sub.b"},
    }
    (cycle,) = package.cycles()
    assert cycle.startswith("pkg.a <-> pkg.sub.b:") and "in f()" in cycle
    assert "aod_ops.fidelity" in AOD_OPS.graph()["aod_ops.score"]  # inside a function


def test_no_import_cycle() -> None:
    cycles = AOD_OPS.cycles()
    assert not cycles, "import cycles (each group, then one cycle in it):\n" + "\n".join(cycles)


def test_the_engine_imports_neither_ray_nor_airflow_nor_their_adapters() -> None:
    leaks = set()
    for module, path in AOD_OPS.modules.items():
        if is_adapter(module):
            continue
        for imp in AOD_OPS.imports_of(module):
            site = f"{path.relative_to(ROOT)}:{imp.line}"
            if imp.target.partition(".")[0] in FOREIGN and (module, imp.function) not in LAZY_EXCEPTIONS:
                leaks.add(f"{site} imports {imp.target}")
            internal = AOD_OPS.internal(imp.target)
            if internal is not None and is_adapter(internal):
                leaks.add(f"{site} imports the adapter {internal}")
    assert not leaks, "the engine imports Ray, Airflow or their adapters:\n" + "\n".join(sorted(leaks))


@pytest.mark.parametrize(("module", "function"), sorted(LAZY_EXCEPTIONS))
def test_each_exception_is_still_needed(module: str, function: str) -> None:
    """An exception whose import has gone is taken off the list."""
    imports = AOD_OPS.imports_of(module)
    assert any(i.function == function and i.target.partition(".")[0] in FOREIGN for i in imports)
