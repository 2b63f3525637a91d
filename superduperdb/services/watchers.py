"""Watchers: a model applied to a key of every (matching) document, kept up to date.

The row format and the DAG helpers live in :mod:`superduperdb.store.watchers`
(the workers read them too); this service registers and deletes watchers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import InUseError, ModelError, QueryError
from ..jobs.handles import JobGroup
from ..store.layout import OUTPUTS, fingerprint_path
from ..store.models import load_model
from ..store.watchers import (
    dump_filter,
    topological,
    upstream_of,
    watcher_name,
    watcher_output,
)

if TYPE_CHECKING:
    from ..jobs.service import JobService
    from .indexes import IndexService
    from .scope import Scope


class WatcherService:
    def __init__(self, scope: Scope, jobs: JobService, indexes: IndexService) -> None:
        self.scope = scope
        self.metadata = scope.metadata
        self.jobs = jobs
        self.indexes = indexes

    def create(self, model: str, key: str, *, filter: Mapping | None = None, features: Mapping | None = None,
               active: bool = True, name: str | None = None) -> JobGroup:
        """Register a watcher; return its backfill jobs (none while inactive)."""
        model_row = self.metadata.get("models", model, hint="Register it with create_model(name, object) first.")
        if active and model_row.get("kind") == "sklearn":  # an unfitted estimator would fail in every job
            from ..models.sklearn_adapter import check_fitted

            check_fitted(load_model(self.metadata, self.scope.artifacts, model).object, model)
        if not isinstance(key, str) or not key or key.startswith("$") or key.startswith(OUTPUTS):
            raise ModelError(f"key must be a field name (or '_base' for the whole document), not {key!r}.")
        if filter is not None and not isinstance(filter, Mapping):
            raise QueryError(f"filter must be a dict (a MongoDB query), not {filter!r}.", argument="filter")
        features = dict(features or {})
        for fkey, fmodel in features.items():
            self.metadata.get("models", fmodel, hint=f"features={{{fkey!r}: {fmodel!r}}} names an unknown model.")
        row = {"name": name or watcher_name(model, key), "model": model, "key": key,
               "filter": dump_filter(filter), "features": features, "active": bool(active)}
        if model_row.get("resources"):
            row["resources"] = model_row["resources"]  # what its jobs request (GPU=1 ...)
        topological([*self.metadata.list("watchers"), row])  # refuse cycles before storing anything
        self.metadata.insert("watchers", row)
        self.indexes.watch_collection()
        if not active:
            return JobGroup()
        return self.jobs.submit_watchers(None, {row["name"]})

    def ensure(self, model: str, key: str) -> JobGroup:
        """The watcher ``<model>/<key>``: created (with its backfill) unless it exists."""
        if self.metadata.exists("watchers", watcher_name(model, key)):
            return JobGroup()
        return self.create(model, key)

    def delete(self, name: str, force: bool = False) -> None:
        """Delete a watcher. Refused while other watchers read its outputs, semantic indexes index
        them, or outputs exist; ``force=True`` deletes those watchers and indexes too, and the outputs."""
        row = self.metadata.get("watchers", name)
        readers = [r for r in self.metadata.list("watchers") if name in upstream_of(r)]
        indexes = [s for s in self.metadata.list("semantic_indexes") if s.get("watcher") == name]
        users = [f"watcher {r['name']!r}" for r in readers] + [f"semantic index {s['name']!r}" for s in indexes]
        if users and not force:
            raise InUseError("watcher", name, users)
        path, fp_path = watcher_output(row), fingerprint_path(row["key"], row["model"])
        if not force and self.scope.raw.count_documents({path: {"$exists": True}}, limit=1):
            raise InUseError("watcher", name, [f"its outputs at {path} (force=True removes them)"])
        for index in indexes:
            self.indexes.delete(index["name"], force=True)
        for reader in readers:
            if self.metadata.exists("watchers", reader["name"]):
                self.delete(reader["name"], force=True)
        self.scope.raw.update_many({"$or": [{path: {"$exists": True}}, {fp_path: {"$exists": True}}]},
                                   {"$unset": {path: "", fp_path: ""}})
        self.metadata.delete("watchers", name)
