"""Watcher rows as plain data: names, stored filters, and the DAG they form.

A watcher row in ``<coll>._watchers``::

    {name: '<model>/<key>', model, key, filter (extended JSON), features, active}

Watchers form a DAG: a watcher whose ``features`` read ``_outputs.<x>.<m>``
depends on the watcher ``<m>/<x>``. Cycles are refused at creation
(:func:`topological`). Both the client (planning jobs) and the workers
(running them) read watchers through these helpers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import json_util

from ..errors import CycleError
from .layout import output_path


def watcher_name(model: str, key: str) -> str:
    return f"{model}/{key}"


def watcher_output(row: Mapping) -> str:
    """Where a watcher's outputs are stored: ``_outputs.<key>.<model>``."""
    return output_path(row["key"], row["model"])


def dump_filter(filter: Mapping | None) -> str:
    """A filter as stored in a row (extended JSON keeps ObjectIds, dates ... exact)."""
    return json_util.dumps(dict(filter or {}))


def load_filter(text: str | None) -> dict:
    return json_util.loads(text) if text else {}


def and_(*queries: Mapping) -> dict:
    """The conjunction of the non-empty ``queries`` (``{}`` if none)."""
    parts = [dict(q) for q in queries if q]
    if not parts:
        return {}
    return parts[0] if len(parts) == 1 else {"$and": parts}


def upstream_of(row: Mapping) -> list[str]:
    """Names of the watchers whose outputs ``row`` reads."""
    return [watcher_name(model, key) for key, model in (row.get("features") or {}).items()]


def topological(rows: list[dict]) -> list[dict]:
    """Order watchers so that each comes after those it reads from.

    Raises
    ------
    CycleError
        If the watchers read from each other in a cycle.
    """
    by_name = {r["name"]: r for r in rows}
    order: list[dict] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise CycleError(f"Watchers would form a cycle: {' -> '.join(cycle)}. A model cannot depend on its own outputs.",
                             cycle=cycle)
        state[name] = 1
        for up in upstream_of(by_name[name]):
            if up in by_name:
                visit(up, [*path, name])
        state[name] = 2
        order.append(by_name[name])

    for name in by_name:
        visit(name, [])
    return order


def downstream(rows: list[dict], names: set[str]) -> set[str]:
    """``names`` plus every watcher that (transitively) reads their outputs."""
    result = set(names)
    changed = True
    while changed:
        changed = False
        for r in rows:
            if r["name"] not in result and any(u in result for u in upstream_of(r)):
                result.add(r["name"])
                changed = True
    return result


def active_watchers(metadata: Any) -> list[dict]:
    """The active watchers of a collection, upstream first."""
    return topological(metadata.list("watchers", {"active": True}))
