"""The house keeps its floors: imports point down only, and no module imports itself back.

Layers, top to bottom (``superduperdb.<name>``; a module belongs to the first
prefix that matches). A module may import its own layer and the layers below;
``master`` may not import ``tasks`` (the master is called by jobs, not the
other way round). Imports inside ``if TYPE_CHECKING:`` are ignored; imports
inside functions count, since they run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import superduperdb

PACKAGE = Path(superduperdb.__file__).parent

LAYERS = [
    ("entry points", ["cli", "__main__", "__init__", "server"]),
    ("facade", ["client", "collection", "cursor", "results", "facade"]),
    ("services", ["services"]),
    ("client-side jobs", ["jobs", "cluster"]),
    ("cluster side", ["tasks", "master"]),
    ("store", ["store"]),
    ("pure compute", ["models", "types", "index", "training", "datasets"]),
    ("leaves", ["errors", "config", "version", "metrics"]),
]
FORBIDDEN = [("master", "tasks")]  # same floor, one direction only


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def top(name: str) -> str:
    return name.split(".")[0]


def rank(name: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if top(name) in prefixes:
            return len(LAYERS) - i
    raise AssertionError(f"superduperdb.{name} is in no layer: add it to LAYERS in {__file__}")


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> set[str]:
    """The superduperdb modules ``path`` imports (relative to the package)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    here = module_name(path).split(".")
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("superduperdb."):
                    found.add(alias.name.split(".", 1)[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("superduperdb"):
                    continue
                base = (node.module or "").split(".")[1:]
            else:
                package = here if is_package else here[:-1]
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            for alias in node.names:
                candidate = ".".join([*base, alias.name])
                found.add(candidate if _exists(candidate) else ".".join(base))
    return {f for f in found if f and f != "__init__"}


def _exists(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        edges[module_name(path)] = imports_of(path)
    return edges


def test_imports_point_down():
    wrong = []
    for module, imported in graph().items():
        for target in imported:
            if rank(target) > rank(module):
                wrong.append(f"{module} ({LAYERS[len(LAYERS) - rank(module)][0]}) imports {target} "
                             f"({LAYERS[len(LAYERS) - rank(target)][0]})")
            for low, high in FORBIDDEN:
                if top(module) == low and top(target) == high:
                    wrong.append(f"{module} imports {target}: {low} may not import {high}")
    assert not wrong, "Imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, "Import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", ["tasks", "master"])
def test_cluster_side_imports_no_client_code(module):
    client_side = {"services", "jobs", "facade", "collection", "client", "cursor", "results", "cli", "cluster"}
    bad = sorted(f"{m} imports {t}" for m, ts in graph().items() if top(m) == module for t in ts
                 if top(t) in client_side)
    assert not bad, bad


def test_the_layer_test_can_fail(tmp_path, monkeypatch):
    """A worker module importing the client side is caught (the checks above are not vacuous)."""
    fake = tmp_path / "superduperdb"
    (fake / "tasks").mkdir(parents=True)
    (fake / "services").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "tasks" / "__init__.py").write_text("")
    (fake / "services" / "__init__.py").write_text("")
    (fake / "tasks" / "bad.py").write_text("from ..services import scope\n")
    (fake / "services" / "scope.py").write_text("from ..tasks import bad\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    with pytest.raises(AssertionError, match="tasks.bad .* imports services"):
        test_imports_point_down()
    with pytest.raises(AssertionError, match="Import cycles"):
        test_no_import_cycles()
