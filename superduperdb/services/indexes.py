"""Semantic indexes and neighbourhoods (client side).

A semantic-index row in ``<coll>._semantic_indexes``::

    {name, uid, models: [...], keys: [...], measure, watcher}

The first model/key's outputs are indexed (by the master); the other
models encode ``like`` documents from other keys (e.g. a text encoder
querying an image index). A neighbourhood row in ``<coll>._neighbourhoods``::

    {name, n, semantic_index}
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from ..errors import InUseError, SemanticIndexError
from ..index.measures import MEASURES
from ..jobs.handles import Job, JobGroup
from .watchers import watcher_name

DEFAULT_KEY = "semantic_index"


class IndexService:
    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.metadata = collection._metadata
        self._master = None

    # -- the master ---------------------------------------------------------------------
    @property
    def master(self):
        if self._master is None:
            from ..master.handle import MasterHandle

            client = self.collection.database.client
            cluster = client.cluster
            cfg = client.config
            self._master = MasterHandle(None if cluster.inline else cluster.client, resource=cfg.master.resource,
                                        timeout=float(cfg.cluster.timeout), warm_up=bool(cfg.master.warm_up))
        return self._master

    # -- semantic indexes ----------------------------------------------------------------
    def create(self, name: str, models: list[str], keys: list[str], measure: str = "cosine") -> JobGroup:
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
            from ..errors import AlreadyRegisteredError

            raise AlreadyRegisteredError("semantic index", name)
        jobs = JobGroup()
        watcher = watcher_name(models[0], keys[0])
        if not self.metadata.exists("watchers", watcher):
            jobs = self.collection.create_watcher(models[0], keys[0])
        row = {"name": name, "uid": str(ObjectId()), "models": models, "keys": keys, "measure": measure,
               "watcher": watcher}
        self.metadata.insert("semantic_indexes", row)
        if self.metadata.get_setting(DEFAULT_KEY) is None:
            self.metadata.set_setting(DEFAULT_KEY, name)
        return jobs + JobGroup([self.collection._jobs.submit("index", {"index": name, "ids": None},
                                                              depends_on=list(jobs), record={"index": name})])

    def get(self, name: str | None) -> dict:
        if name is None:
            name = self.metadata.get_setting(DEFAULT_KEY)
            if name is None:
                raise SemanticIndexError(
                    f"{self.collection.full_name} has no semantic index. Create one with "
                    "create_semantic_index(name, models=[...], keys=[...]).")
        return self.metadata.get("semantic_indexes", name, hint="Create it with create_semantic_index.")

    def delete(self, name: str, force: bool = False) -> None:
        row = self.metadata.get("semantic_indexes", name)
        users = [f"neighbourhood {r['name']!r}" for r in self.metadata.list("neighbourhoods", {"semantic_index": name})]
        if users and not force:
            raise InUseError("semantic index", name, users)
        for r in self.metadata.list("neighbourhoods", {"semantic_index": name}):
            self.delete_neighbourhood(r["name"], force=True)
        from ..tasks.context import Target

        self.master.call("drop", Target.of(self.collection), row)
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
        return JobGroup([self.collection._jobs.submit("neighbourhood", {"neighbourhood": name, "ids": None},
                                                      record={"neighbourhood": name})])

    def delete_neighbourhood(self, name: str, force: bool = False) -> None:
        self.metadata.get("neighbourhoods", name)
        path = f"_like.{name}"
        if not force and self.collection.raw.count_documents({path: {"$exists": True}}, limit=1):
            raise InUseError("neighbourhood", name, [f"its neighbour lists at {path} (force=True removes them)"])
        self.collection.raw.update_many({path: {"$exists": True}}, {"$unset": {path: ""}})
        self.metadata.delete("neighbourhoods", name)

    # -- hooks from the job service -----------------------------------------------------------
    def after_outputs(self, ids: list | None, by_watcher: dict[str, Job]) -> list[Job]:
        """Index updates after the indexing watchers' jobs, then neighbourhood updates."""
        jobs: list[Job] = []
        rows = [r for r in self.metadata.list("semantic_indexes") if r["watcher"] in by_watcher]
        for row in rows:
            index_job = self.collection._jobs.submit("index", {"index": row["name"], "ids": ids},
                                                     depends_on=[by_watcher[row["watcher"]]], record={"index": row["name"]})
            jobs.append(index_job)
            for hood in self.metadata.list("neighbourhoods", {"semantic_index": row["name"]}):
                jobs.append(self.collection._jobs.submit("neighbourhood", {"neighbourhood": hood["name"], "ids": ids},
                                                         depends_on=[index_job], record={"neighbourhood": hood["name"]}))
        return jobs

    def before_delete(self, filter: dict, many: bool) -> list | None:
        if not self.metadata.exists_any("semantic_indexes"):
            return None
        cursor = self.collection.raw.find(filter, {"_id": 1})
        return [d["_id"] for d in (cursor if many else cursor.limit(1))]

    def after_delete(self, ids: list | None) -> JobGroup | None:
        if not ids:
            return None
        return JobGroup([self.collection._jobs.submit("index", {"index": r["name"], "ids": ids}, record={"index": r["name"]})
                         for r in self.metadata.list("semantic_indexes")])
