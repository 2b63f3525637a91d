"""Watchers: a model applied to a key of every (matching) document, kept up to date.

The row format and the DAG helpers live in :mod:`superduperdb.store.watchers`
(the workers read them too); this service registers and deletes watchers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AlreadyRegisteredError, InUseError, ModelError, QueryError, unknown_name
from ..jobs.handles import JobGroup
from ..store import failures
from ..store.bulk import unset_everywhere
from ..store.layout import OUTPUTS, fingerprint_path
from ..store.models import load_model
from ..store.watchers import (
    dump_filter,
    topological,
    upstream_of,
    watcher_name,
    watcher_output,
)
from .checks import check_evaluable, check_operators

if TYPE_CHECKING:
    from ..jobs.service import JobService
    from .indexes import IndexService
    from .scope import Scope


# What a watcher's jobs do with a document the model raises on (create_model(..., on_error=...)).
ON_ERROR = ("record", "raise")


class WatcherService:
    def __init__(self, scope: Scope, jobs: JobService, indexes: IndexService,
                 ensure_model: Callable[[str], dict]) -> None:
        self.scope = scope
        self.metadata = scope.metadata
        self.jobs = jobs
        self.indexes = indexes
        self.ensure_model = ensure_model  # a model's row ('parent.attr' of a registered parent registered now)

    def check_new(self, model: str, key: str, *, filter: Mapping | None = None, features: Mapping | None = None,
                  active: bool = True, name: str | None = None, model_row: Mapping | None = None,
                  model_object: Any = None, chunk_size: int | None = None, on_error: str = "record") -> dict:
        """Validate a new watcher; return its row. Nothing is stored.

        ``model_row``/``model_object`` stand for a model being registered in the same
        call (``create_model(..., key=...)``), not stored yet. ``chunk_size``: documents
        per chunk of this watcher's jobs (default ``jobs.chunk_size``). ``on_error``:
        ``'record'`` sets aside the documents the model raises on (``list_errors()``),
        ``'raise'`` fails the whole job on the first one.
        """
        if on_error not in ON_ERROR:
            raise ModelError(unknown_name("on_error value", on_error, ON_ERROR,
                                          "'record' lists the documents the model fails on (list_errors()) and "
                                          "computes the rest; 'raise' fails the job on the first one."),
                             argument="on_error")
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                       or chunk_size < 1):
            raise ModelError(f"max_chunk_size must be a positive integer (documents per chunk), not {chunk_size!r}.",
                             argument="max_chunk_size")
        if model_row is None:
            model_row = self.ensure_model(model)  # 'parent.attr' of a registered parent is registered now
        if not isinstance(key, str) or not key or key.startswith("$") or key.startswith(OUTPUTS) or ".." in key \
                or key.startswith(".") or key.endswith("."):
            raise ModelError(f"key must be a field name (or '_base' for the whole document), not {key!r}.",
                             argument="key")
        if not isinstance(active, bool):
            raise ModelError(f"active must be True or False, not {active!r}.", argument="active")
        if name is not None and (not isinstance(name, str) or not name or name.startswith("$")):
            raise ModelError(f"A watcher name must be a non-empty string, not {name!r}.", argument="name")
        if active and model_row.get("kind") == "sklearn":  # an unfitted estimator would fail in every job
            from ..models.sklearn_adapter import check_fitted

            obj = model_object if model_object is not None else load_model(self.metadata, self.scope.artifacts, model).object
            check_fitted(obj, model)
        if filter is not None and not isinstance(filter, Mapping):
            raise QueryError(f"filter must be a dict (a MongoDB query), not {filter!r}.", argument="filter")
        stored_filter = self._check_filter(filter)
        if features is not None and (not isinstance(features, Mapping) or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in features.items())):
            raise QueryError(f"features must be a dict of field name to model name, such as {{'text': 'encoder'}}, "
                             f"not {features!r}.", argument="features")
        features = dict(features or {})
        for fkey, fmodel in features.items():
            if isinstance(fmodel, str) and "." in fmodel and self.metadata.exists("models", fmodel.split(".")[0]):
                self.ensure_model(fmodel)
            else:
                self.metadata.get("models", fmodel, hint=f"features={{{fkey!r}: {fmodel!r}}} names an unknown model.")
        row = {"name": name or watcher_name(model, key), "model": model, "key": key,
               "filter": stored_filter, "features": features, "active": active}
        if model_row.get("resources"):
            row["resources"] = model_row["resources"]  # what its jobs request (GPU=1 ...)
        if chunk_size is not None:
            row["chunk_size"] = chunk_size
        if on_error != "record":
            row["on_error"] = on_error
        if self.metadata.exists("watchers", row["name"]):
            raise AlreadyRegisteredError("watcher", row["name"])
        topological([*self.metadata.list("watchers"), row])  # refuse cycles before storing anything
        return row

    def _check_filter(self, filter: Mapping | None) -> str:
        """The filter as stored (extended JSON), checked: known operators, evaluable by the store."""
        if not filter:
            return dump_filter(None)
        check_operators(filter)
        encoded = self.scope.types.encode(dict(filter), "filter", mark=False)
        check_evaluable(self.scope.raw, encoded)
        try:
            return dump_filter(encoded)
        except (TypeError, ValueError) as exc:
            raise QueryError(f"The filter cannot be stored: {exc}.", argument="filter") from exc

    def create(self, model: str, key: str, *, filter: Mapping | None = None, features: Mapping | None = None,
               active: bool = True, name: str | None = None, chunk_size: int | None = None,
               backfill: bool = True, on_error: str = "record") -> JobGroup:
        """Register a watcher; return its backfill jobs (none while inactive, or without ``backfill``)."""
        row = self.check_new(model, key, filter=filter, features=features, active=active, name=name,
                             chunk_size=chunk_size, on_error=on_error)
        return self.register(row, backfill=backfill)

    def register(self, row: dict, backfill: bool = True) -> JobGroup:
        """Store a watcher row checked by :meth:`check_new` and start its backfill (unless not ``backfill``)."""
        self.metadata.insert("watchers", row)
        try:
            self.indexes.watch_collection()
            if not row["active"] or not backfill:
                return JobGroup()
            return self.jobs.submit_watchers(None, {row["name"]})
        except BaseException:  # e.g. the cluster cannot be reached: register nothing
            self.metadata.delete("watchers", row["name"])
            raise

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
        unset_everywhere(self.scope.raw, [path, fp_path])  # and the empty _outputs.<key> it leaves
        failures.remove(self.metadata.table("errors"), {"watcher": name})
        self.metadata.delete("watchers", name)
