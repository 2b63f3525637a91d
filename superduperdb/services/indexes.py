"""Semantic indexes and neighbourhoods (client side).

A semantic-index row in ``<coll>._semantic_indexes``::

    {name, uid, models: [...], keys: [...], measure, watcher, filter_fields: [...]}

``measure`` is a built-in name or a measure registered with ``create_measure``.
``filter_fields``: scalar fields each shard keeps beside the vectors, so that
filters on them are answered in the master (:mod:`superduperdb.master.filters`).

The first model/key's outputs are indexed (by the master); the other
models encode ``like`` documents from other keys (e.g. a text encoder
querying an image index). A neighbourhood row in ``<coll>._neighbourhoods``::

    {name, n, semantic_index}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from ..errors import AlreadyRegisteredError, InUseError, SemanticIndexError, unknown_name
from ..index.measures import MEASURES
from ..jobs.handles import JobGroup
from ..master.handle import MasterHandle
from ..store.bulk import unset_everywhere
from ..store.layout import neighbourhood_path
from ..store.semantic_indexes import DEFAULT_KEY, forget
from ..store.watchers import watcher_name
from ..tasks.reconcile import master_handle

if TYPE_CHECKING:
    from ..jobs.service import JobService
    from .scope import Scope



class IndexService:
    def __init__(self, scope: Scope, jobs: JobService, ensure_model: Callable[[str], dict]) -> None:
        self.scope = scope
        self.metadata = scope.metadata
        self.jobs = jobs
        self.ensure_model = ensure_model  # a model's row ('parent.attr' of a registered parent registered now)
        self._master: MasterHandle | None = None
        self._watching = False

    # -- the master ---------------------------------------------------------------------
    @property
    def master(self) -> MasterHandle:
        """The cluster's master (in this process when jobs run inline)."""
        if self._master is None:
            cluster = self.scope.cluster
            self._master = master_handle(None if cluster.inline else cluster.client, self.scope.config)
        return self._master

    def watch_collection(self) -> None:
        """Have the master's reconciler sweep this collection (once per service; when it has watchers)."""
        if not self._watching and self.metadata.exists_any("watchers"):
            self.master.watch(self.scope.target)
            self._watching = True

    # -- semantic indexes ----------------------------------------------------------------
    def check_new(self, name: str, models: list[str], keys: list[str], measure: str) -> tuple[list[str], list[str]]:
        """Validate a new index (nothing is changed); return ``(models, keys)`` as lists."""
        if isinstance(models, str):
            models = [models]
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(name, str) or not name or "." in name or name.startswith("$"):
            raise SemanticIndexError(f"Semantic index names must be non-empty strings without '.' or a leading "
                                     f"'$', not {name!r}.", argument="name")
        if not isinstance(models, (list, tuple)) or not isinstance(keys, (list, tuple)):
            raise SemanticIndexError(f"models and keys must be lists of names, not models={models!r}, keys={keys!r}.")
        models, keys = list(models), list(keys)
        bad = [v for v in (*models, *keys) if not isinstance(v, str) or not v or v.startswith("$")]
        if bad:
            raise SemanticIndexError(f"models and keys must hold non-empty names (str), not {bad[0]!r}.")
        if not models or len(models) != len(keys):
            raise SemanticIndexError(
                f"models and keys must be non-empty lists of the same length (one key per model), got "
                f"models={models!r}, keys={keys!r}.")
        if not isinstance(measure, str) or (measure not in MEASURES and not self.metadata.exists("measures", measure)):
            valid = sorted(set(MEASURES) | set(self.metadata.names("measures")))
            raise SemanticIndexError(unknown_name("measure", measure, valid, "Register a custom one with "
                                                  "create_measure(name, callable) first."), measure=measure, valid=valid)
        if self.metadata.exists("semantic_indexes", name):
            raise AlreadyRegisteredError("semantic index", name)
        self.check_keys_present(keys[:1])  # the indexed key (the others only encode queries)
        for model in models:
            self.ensure_model(model)
        return models, keys

    @staticmethod
    def check_filter_fields(filter_fields: Any) -> list[str]:
        """``filter_fields`` as a list of field names, checked (nothing is changed)."""
        if filter_fields is None:
            return []
        if isinstance(filter_fields, str) or not isinstance(filter_fields, (list, tuple)):
            raise SemanticIndexError(f"filter_fields must be a list of field names such as ['lang', 'year'], not "
                                     f"{filter_fields!r}.", argument="filter_fields")
        fields = list(filter_fields)
        for f in fields:
            if not isinstance(f, str) or not f or f.startswith(("$", "_")) or "" in f.split("."):
                raise SemanticIndexError(
                    f"filter_fields must hold field names (dotted for nested fields) that start with neither '$' "
                    f"nor '_', not {f!r} (filters on _id are answered in the index anyway).",
                    argument="filter_fields")
        if len(set(fields)) != len(fields):
            raise SemanticIndexError(f"filter_fields names a field twice: {fields}.", argument="filter_fields")
        return fields

    def check_keys_present(self, keys: list[str]) -> None:
        """Refuse keys that no document has, when there are documents (a typo would give an empty
        index whose queries return nothing); an empty collection may get its documents later."""
        raw = self.scope.raw
        if not raw.count_documents({}, limit=1):
            return
        for key in keys:
            if not isinstance(key, str) or key == "_base" or raw.count_documents({key: {"$exists": True}}, limit=1):
                continue
            sample = raw.find({}, limit=200)
            fields = sorted({field for doc in sample for field in doc if not field.startswith("_")})
            raise SemanticIndexError(
                unknown_name("key", key, fields, f"No document of {raw.name!r} has {key!r}, so the index would "
                             "stay empty and every query would return nothing. Index a field the documents have.",
                             where="to index", plural="fields found in the documents"),
                key=key, valid=fields)

    def create(self, name: str, models: list[str], keys: list[str], measure: str, after: JobGroup,
               filter_fields: list[str] | None = None) -> JobGroup:
        """Register the index (validated by :meth:`check_new`); it loads after the ``after`` jobs."""
        row = {"name": name, "uid": str(ObjectId()), "models": models, "keys": keys, "measure": measure,
               "watcher": watcher_name(models[0], keys[0]), "filter_fields": list(filter_fields or [])}
        self.metadata.insert("semantic_indexes", row)
        meta = self.metadata.table("meta")
        setting = meta.find_one({"name": DEFAULT_KEY})
        try:
            if setting is None or setting.get("value") is None:
                self.metadata.set_setting(DEFAULT_KEY, name)
            # "registering": should this first load fail, the job unregisters the index.
            return JobGroup([self.jobs.submit("index", {"index": name, "ids": None, "registering": True},
                                              depends_on=list(after), record={"index": name})])
        except BaseException:  # register nothing
            self.metadata.delete("semantic_indexes", name)
            if setting is None:
                meta.delete_one({"name": DEFAULT_KEY})
            else:
                meta.replace_one({"_id": setting["_id"]}, setting)
            raise

    def get(self, name: str | None) -> dict:
        if name is None:
            name = self.metadata.get_setting(DEFAULT_KEY)
            if name is None:
                raise SemanticIndexError(
                    f"{self.scope.full_name} has no semantic index. Create one with "
                    "create_semantic_index(name, models=[...], keys=[...]).")
        return self.metadata.get("semantic_indexes", name)

    def delete(self, name: str, force: bool = False) -> None:
        row = self.metadata.get("semantic_indexes", name)
        users = [f"neighbourhood {r['name']!r}" for r in self.metadata.list("neighbourhoods", {"semantic_index": name})]
        if users and not force:
            raise InUseError("semantic index", name, users)
        for r in self.metadata.list("neighbourhoods", {"semantic_index": name}):
            self.delete_neighbourhood(r["name"], force=True)
        self.master.drop(self.scope.target, row, forget=True)
        forget(self.metadata, name)

    def set_default(self, name: str) -> None:
        self.metadata.get("semantic_indexes", name)
        self.metadata.set_setting(DEFAULT_KEY, name)

    # -- neighbourhoods ------------------------------------------------------------------
    def create_neighbourhood(self, name: str, n: int = 10, semantic_index: str | None = None,
                             after: JobGroup | None = None) -> JobGroup:
        """Register a neighbourhood; its first computation runs after the ``after`` jobs (an index's load)."""
        if not isinstance(name, str) or not name or "." in name or name.startswith("$"):
            raise SemanticIndexError(f"Neighbourhood names must be non-empty strings without '.' or a leading '$', "
                                     f"not {name!r}.", argument="name")
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise SemanticIndexError(f"n must be a positive integer, not {n!r}.")
        index = self.get(semantic_index)
        if self.metadata.exists("neighbourhoods", name):
            raise AlreadyRegisteredError("neighbourhood", name)
        self.metadata.insert("neighbourhoods", {"name": name, "n": n, "semantic_index": index["name"]})
        try:
            return JobGroup([self.jobs.submit("neighbourhood", {"neighbourhood": name, "ids": None},
                                              depends_on=list(after or []), record={"neighbourhood": name})])
        except BaseException:  # register nothing
            self.metadata.delete("neighbourhoods", name)
            raise

    def delete_neighbourhood(self, name: str, force: bool = False) -> None:
        self.metadata.get("neighbourhoods", name)
        path = neighbourhood_path(name)
        raw = self.scope.raw
        if not force and raw.count_documents({path: {"$exists": True}}, limit=1):
            raise InUseError("neighbourhood", name, [f"its neighbour lists at {path} (force=True removes them)"])
        unset_everywhere(raw, [path])  # and an empty _like
        self.metadata.delete("neighbourhoods", name)
