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


# -- what reaches the cluster: worker code is defined in tasks/ or master/ ----------------------------
# The checks above read imports by folder; a worker function defined in a client module (as the
# DataFrame partitions once were, in facade/) passes them. These look at what is actually handed to
# Dask: the library's one submission point refuses other code (store/dispatch.py), and a scheduler
# plugin records the function of every task a real cluster receives, nested tasks included.
WORKER_FLOORS = ("superduperdb.tasks", "superduperdb.master")


def _callables(node, depth: int = 0) -> list:
    """The callables of a Dask task spec (its ``func`` and those of tasks nested in its arguments)."""
    if depth > 20:
        return []
    found = []
    func = getattr(node, "func", None)
    if callable(func):
        found.append(func)
    children = []
    if isinstance(node, dict):
        children = list(node.values())
    elif isinstance(node, (list, tuple)):
        children = list(node)
    elif hasattr(node, "args") or hasattr(node, "kwargs"):
        children = [*(getattr(node, "args", ()) or ()), *((getattr(node, "kwargs", None) or {}).values())]
    for child in children:
        if isinstance(child, (dict, list, tuple)) or hasattr(child, "func"):
            found += _callables(child, depth + 1)
    return found


def _where(fn) -> str:
    fn = getattr(fn, "__func__", fn)
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def off_the_worker_floor(names) -> list[str]:
    """The library's callables among ``names`` (module.qualname) defined outside tasks/ and master/."""
    return sorted(n for n in names if n.startswith("superduperdb.")
                  and not any(n.startswith(floor + ".") for floor in WORKER_FLOORS))


def submitted_code(dask_client) -> set[str]:
    """module.qualname of every callable in the tasks the scheduler received since :func:`watch_submissions`."""
    return set(dask_client.run_on_scheduler(_recorded))


def _recorded(dask_scheduler) -> list:
    return sorted(dask_scheduler.plugins[_Recorder.name].seen)


class _Recorder:
    name = "superduperdb-tests-submitted-code"

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.scheduler = None

    async def start(self, scheduler) -> None:
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish in ("waiting", "processing", "queued", "no-worker", "memory", "erred"):
            task = self.scheduler.tasks.get(key) if self.scheduler is not None else None
            self.seen.update(_where(fn) for fn in _callables(getattr(task, "run_spec", None)))


def watch_submissions(dask_client) -> None:
    from distributed.diagnostics.plugin import SchedulerPlugin

    recorder = type("Recorder", (_Recorder, SchedulerPlugin), {})()
    dask_client.register_plugin(recorder, name=_Recorder.name)


@pytest.fixture
def cluster_client(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster="local",
                                  config={"master.warm_up": False, "reconcile.interval": 0.2})
    watch_submissions(client.cluster.client)
    yield client
    client.close()


def test_only_worker_floor_code_reaches_the_cluster(cluster_client, unique_name):
    """Every library function the cluster receives, for each kind of work the library hands it."""
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd
    import testmodels
    from waiting import poll

    from superduperdb.store.dispatch import run
    from superduperdb.tasks.reconcile import master_handle
    from superduperdb.tasks.report import process_report

    coll = cluster_client[unique_name].docs
    dask_client = cluster_client.cluster.client
    coll.insert_many([{"v": np.eye(4)[i % 4].astype("float32"), "x": i} for i in range(8)])
    coll.create_model("id", testmodels.identity, key="v").wait(60)
    coll.create_semantic_index("ix", ["id"], ["v"]).wait(60)
    coll.insert_one({"v": np.ones(4, dtype="float32"), "x": 9}).jobs.wait(60)
    assert len(coll.find({}, like={"v": np.ones(4, dtype="float32")}, n=3).to_list()) == 3
    coll.reconcile(wait=True, timeout=60)
    coll.apply_model("id", filter={}, key="x")
    coll.to_dask(partition_size=4).compute(scheduler=dask_client)
    coll.from_dask(dd.from_pandas(pd.DataFrame({"x": [20, 21]}), npartitions=2)).jobs.wait(60)
    run(dask_client, process_report)
    master = master_handle(dask_client, cluster_client.config)
    poll(lambda: master.reconciler().get(f"{unique_name}.docs", {}).get("report"), 60, "a periodic sweep")

    seen = submitted_code(dask_client)
    ours = {n for n in seen if n.startswith("superduperdb.")}
    expected = {"superduperdb.tasks.runner.run_job", "superduperdb.master.actor.Master",
                "superduperdb.tasks.frames.read_partition", "superduperdb.tasks.frames.insert_partition",
                "superduperdb.tasks.reconcile._sweep_task"}
    assert not off_the_worker_floor(ours), off_the_worker_floor(ours)
    assert expected <= ours, sorted(ours)  # the check saw each kind of work


def test_the_worker_floor_checks_can_fail(cluster_client):
    """Code from another floor is refused at the submission point, and seen by the cluster-side check
    when it is submitted around it (as facade/dataframe.py's partitions once were)."""
    from superduperdb.store import dispatch
    from superduperdb.store.frames import to_frame

    dask_client = cluster_client.cluster.client
    with pytest.raises(TypeError, match="superduperdb.store.frames.to_frame is handed to the Dask cluster"):
        dispatch.submit(dask_client, to_frame, [])
    with pytest.raises(TypeError, match="move it there"):
        dispatch.delayed(to_frame)
    assert not off_the_worker_floor(submitted_code(dask_client))
    dask_client.submit(to_frame, [], pure=False).result(timeout=60)  # around the submission point
    assert off_the_worker_floor(submitted_code(dask_client)) == ["superduperdb.store.frames.to_frame"]


# -- nothing outside the facade reaches into a Collection's private parts ------------------------------
FACADE = ("client", "collection", "cursor", "results", "facade")


def collection_private_names() -> set[str]:
    """The private attributes and methods of a Collection (``_services``, ``_metadata``, ``_query`` ...)."""
    from superduperdb.collection import Collection

    coll = superduperdb.connect("mongomock://layers-private", cluster=None).db.docs
    names = {n for klass in Collection.__mro__ if klass.__module__.startswith("superduperdb") for n in vars(klass)}
    names |= set(vars(coll))
    return {n for n in names if n.startswith("_") and not n.startswith("__") and n != "_repr_html_"}


def private_reaches(names: set[str]) -> list[str]:
    """``module:line attribute`` for every ``<not self>.<a Collection private name>`` outside the facade."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if top(module) in FACADE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls") or (
                isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "super")
            if node.attr in names and not own:
                found.append(f"{module}:{node.lineno} .{node.attr}")
    return found


def test_no_private_collection_reach_outside_the_facade():
    """The server, the CLI and the services use the Collection's public API (the facade delegates down,
    nothing reaches up into it): e.g. apply_model(..., registered_only=True), not coll._metadata."""
    assert not private_reaches(collection_private_names()), private_reaches(collection_private_names())


def test_the_private_reach_check_can_fail(tmp_path, monkeypatch):
    fake = tmp_path / "superduperdb"
    (fake / "server").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "server" / "__init__.py").write_text("")
    (fake / "server" / "app.py").write_text("def f(coll):\n    return coll._metadata.get('models', 'm')\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    assert private_reaches({"_metadata"}) == ["server.app:2 ._metadata"]


# -- every job kind is registered where kinds are looked up ---------------------------------------------
def declared_kinds() -> dict[str, str]:
    """``{kind: module}`` of every ``@job_kind("...")`` in the package."""
    kinds = {}
    for path in sorted((PACKAGE / "tasks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "job_kind":
                kinds[node.args[0].value] = module_name(path)
    return kinds


def test_every_job_kind_is_registered_by_the_runner():
    """A fresh worker process that imports the runner knows every kind (the 'learn' kind was registered
    only as a side effect of unpickling its parameters)."""
    import json
    import subprocess
    import sys

    code = ("import json, superduperdb.tasks.runner; from superduperdb.tasks.kinds import KINDS; "
            "print(json.dumps(sorted(KINDS)))")
    known = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                      timeout=120).stdout)
    assert sorted(declared_kinds()) == known
    assert {"model", "index", "learn", "train", "promote"} <= set(known)


def test_every_package_says_its_floor():
    """Each package's docstring says what its floor holds and what it may import (the map in the house)."""
    silent = [module_name(p) for p in sorted(PACKAGE.rglob("__init__.py")) if p.parent != PACKAGE
              and "Floor:" not in (ast.get_docstring(ast.parse(p.read_text())) or "")]
    assert not silent, f"packages whose docstring does not say their floor: {silent}"


def test_the_readme_layout_names_every_module():
    """The README's layout lists every room: each module of the package is named there."""
    layout = (PACKAGE.parent / "README.md").read_text().split("## Layout", 1)[1].split("\n## ", 1)[0]
    unnamed = [module_name(p) for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py"
               and p.stem not in layout and p.stem != "__main__"]
    assert not unnamed, f"modules the README's layout does not name: {unnamed}"
