"""Watchers: a model applied to a key of every (matching) document, kept up to date.

A watcher row in ``<coll>._watchers``::

    {name: '<model>/<key>', model, key, filter (extended JSON), features, active}

Watchers form a DAG: a watcher whose ``features`` read ``_outputs.<x>.<m>``
depends on the watcher ``<m>/<x>``. Cycles are refused at creation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import json_util

from ..errors import CycleError, InUseError, ModelError, QueryError

OUTPUTS = "_outputs"


def watcher_name(model: str, key: str) -> str:
    return f"{model}/{key}"


def dump_filter(filter: Mapping | None) -> str:
    return json_util.dumps(dict(filter or {}))


def load_filter(text: str | None) -> dict:
    return json_util.loads(text) if text else {}


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


class WatcherService:
    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.metadata = collection._metadata

    def create(self, model: str, key: str, *, filter: Mapping | None = None, features: Mapping | None = None,
               active: bool = True, name: str | None = None) -> dict:
        model_row = self.metadata.get("models", model, hint="Register it with create_model(name, object) first.")
        if active and model_row.get("kind") == "sklearn":  # an unfitted estimator would fail in every job
            from ..models.sklearn_adapter import check_fitted

            check_fitted(self.collection._models.load(model).object, model)
        if not isinstance(key, str) or not key or key.startswith("$") or key.startswith(OUTPUTS):
            raise ModelError(f"key must be a field name (or '_base' for the whole document), not {key!r}.")
        if filter is not None and not isinstance(filter, Mapping):
            raise QueryError(f"filter must be a dict (a MongoDB query), not {filter!r}.", argument="filter")
        features = dict(features or {})
        for fkey, fmodel in features.items():
            self.metadata.get("models", fmodel, hint=f"features={{{fkey!r}: {fmodel!r}}} names an unknown model.")
        row = {"name": name or watcher_name(model, key), "model": model, "key": key,
               "filter": dump_filter(filter), "features": features, "active": bool(active)}
        topological([*self.metadata.list("watchers"), row])  # refuse cycles before storing anything
        return self.metadata.insert("watchers", row)

    def delete(self, name: str, force: bool = False) -> None:
        row = self.metadata.get("watchers", name)
        users = [f"watcher {r['name']!r}" for r in self.metadata.list("watchers") if name in upstream_of(r)]
        users += [f"semantic index {s['name']!r}" for s in self.metadata.list("semantic_indexes")
                  if name in s.get("watchers", [])]
        if users and not force:
            raise InUseError("watcher", name, users)
        path = f"{OUTPUTS}.{row['key']}.{row['model']}"
        if not force and self.collection.raw.count_documents({path: {"$exists": True}}, limit=1):
            raise InUseError("watcher", name, [f"its outputs at {path} (force=True removes them)"])
        self.collection.raw.update_many({path: {"$exists": True}}, {"$unset": {path: ""}})
        self.metadata.delete("watchers", name)

    def active(self) -> list[dict]:
        return topological(self.metadata.list("watchers", {"active": True}))
