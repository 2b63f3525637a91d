"""Semantic indexes and neighbourhoods (client side).

A semantic-index row in ``<coll>._semantic_indexes``::

    {name, uid, models: [...], keys: [...], measure, watcher}

The first model/key's outputs are indexed (by the master); the other
models encode ``like`` documents from other keys (e.g. a text encoder
querying an image index). A neighbourhood row in ``<coll>._neighbourhoods``::

    {name, n, semantic_index}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bson import ObjectId

from ..errors import AlreadyRegisteredError, InUseError, SemanticIndexError
from ..index.measures import MEASURES
from ..jobs.handles import JobGroup
from ..master.handle import MasterHandle
from ..store.layout import neighbourhood_path
from ..store.watchers import watcher_name
from ..tasks.reconcile import sweep

if TYPE_CHECKING:
    from ..jobs.service import JobService
    from .scope import Scope

DEFAULT_KEY = "semantic_index"


class IndexService:
    def __init__(self, scope: Scope, jobs: JobService) -> None:
        self.scope = scope
        self.metadata = scope.metadata
        self.jobs = jobs
        self._master: MasterHandle | None = None
        self._watching = False

    # -- the master ---------------------------------------------------------------------
    @property
    def master(self) -> MasterHandle:
        """The cluster's master (in this process when jobs run inline)."""
        if self._master is None:
            cluster = self.scope.cluster
            self._master = MasterHandle.from_config(None if cluster.inline else cluster.client, self.scope.config,
                                                    sweep=sweep)
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
        models, keys = list(models), list(keys)
        if not models or len(models) != len(keys):
            raise SemanticIndexError(
                f"models and keys must be non-empty lists of the same length (one key per model), got "
                f"models={models!r}, keys={keys!r}.")
        if measure not in MEASURES:
            raise SemanticIndexError(f"Unknown measure {measure!r}; use one of {', '.join(MEASURES)}.")
        for model in models:
            self.metadata.get("models", model, hint="Register it with create_model first.")
        if self.metadata.exists("semantic_indexes", name):
            raise AlreadyRegisteredError("semantic index", name)
        return models, keys

    def create(self, name: str, models: list[str], keys: list[str], measure: str, after: JobGroup) -> JobGroup:
        """Register the index (validated by :meth:`check_new`); it loads after the ``after`` jobs."""
        row = {"name": name, "uid": str(ObjectId()), "models": models, "keys": keys, "measure": measure,
               "watcher": watcher_name(models[0], keys[0])}
        self.metadata.insert("semantic_indexes", row)
        if self.metadata.get_setting(DEFAULT_KEY) is None:
            self.metadata.set_setting(DEFAULT_KEY, name)
        return JobGroup([self.jobs.submit("index", {"index": name, "ids": None}, depends_on=list(after),
                                          record={"index": name})])

    def get(self, name: str | None) -> dict:
        if name is None:
            name = self.metadata.get_setting(DEFAULT_KEY)
            if name is None:
                raise SemanticIndexError(
                    f"{self.scope.full_name} has no semantic index. Create one with "
                    "create_semantic_index(name, models=[...], keys=[...]).")
        return self.metadata.get("semantic_indexes", name, hint="Create it with create_semantic_index.")

    def delete(self, name: str, force: bool = False) -> None:
        row = self.metadata.get("semantic_indexes", name)
        users = [f"neighbourhood {r['name']!r}" for r in self.metadata.list("neighbourhoods", {"semantic_index": name})]
        if users and not force:
            raise InUseError("semantic index", name, users)
        for r in self.metadata.list("neighbourhoods", {"semantic_index": name}):
            self.delete_neighbourhood(r["name"], force=True)
        self.master.drop(self.scope.target, row, forget=True)
        self.metadata.delete("semantic_indexes", name)
        if self.metadata.get_setting(DEFAULT_KEY) == name:
            remaining = self.metadata.names("semantic_indexes")
            self.metadata.set_setting(DEFAULT_KEY, remaining[0] if remaining else None)

    def set_default(self, name: str) -> None:
        self.metadata.get("semantic_indexes", name)
        self.metadata.set_setting(DEFAULT_KEY, name)

    # -- neighbourhoods ------------------------------------------------------------------
    def create_neighbourhood(self, name: str, n: int = 10, semantic_index: str | None = None) -> JobGroup:
        if not isinstance(n, int) or n <= 0:
            raise SemanticIndexError(f"n must be a positive integer, not {n!r}.")
        index = self.get(semantic_index)
        self.metadata.insert("neighbourhoods", {"name": name, "n": n, "semantic_index": index["name"]})
        return JobGroup([self.jobs.submit("neighbourhood", {"neighbourhood": name, "ids": None},
                                          record={"neighbourhood": name})])

    def delete_neighbourhood(self, name: str, force: bool = False) -> None:
        self.metadata.get("neighbourhoods", name)
        path = neighbourhood_path(name)
        raw = self.scope.raw
        if not force and raw.count_documents({path: {"$exists": True}}, limit=1):
            raise InUseError("neighbourhood", name, [f"its neighbour lists at {path} (force=True removes them)"])
        raw.update_many({path: {"$exists": True}}, {"$unset": {path: ""}})
        self.metadata.delete("neighbourhoods", name)
