"""Registrations kept in collections beside the data collection.

For a data collection ``docs`` the metadata of kind ``types`` lives in
``docs._types``, models in ``docs._models`` and so on, as in the original
SuperDuperDB. Each row has a unique ``name`` (models and watchers add their
own fields). Nothing here is cached: MongoDB is the source of truth, and
every process sees the same registrations.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pymongo

from ..errors import AlreadyRegisteredError, NotRegisteredError

KINDS = (
    "types", "models", "watchers", "semantic_indexes", "jobs", "metrics", "losses",
    "splitters", "validation_sets", "neighbourhoods", "meta",
    "preprocessors", "forwards", "postprocessors", "learning_tasks", "measures", "errors",
)

SINGULAR = {
    "types": "type", "models": "model", "watchers": "watcher", "semantic_indexes": "semantic index",
    "jobs": "job", "metrics": "metric", "losses": "loss", "splitters": "splitter",
    "validation_sets": "validation set", "neighbourhoods": "neighbourhood", "meta": "setting",
    "preprocessors": "preprocessor", "forwards": "forward", "postprocessors": "postprocessor",
    "learning_tasks": "learning task",
    "measures": "measure",
    "errors": "failed document",
}


_GENERATION = [0]
_GENERATION_LOCK = threading.Lock()


def generation() -> int:
    """A number that changes whenever this process writes any metadata row (caches compare it)."""
    return _GENERATION[0]


def _changed() -> None:
    with _GENERATION_LOCK:
        _GENERATION[0] += 1


def metadata_changed() -> None:
    """Say that metadata may have changed elsewhere (a job this process waited for), so caches re-read it."""
    _changed()


def utcnow() -> datetime.datetime:
    # BSON stores milliseconds; truncate so values compare equal after a round trip.
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class MetadataStore:
    """CRUD over ``<collection>._<kind>`` metadata collections.

    Parameters
    ----------
    database : pymongo or mongomock Database
    collection : str
        Name of the data collection.
    """

    def __init__(self, database: Any, collection: str) -> None:
        self.database = database
        self.collection = collection

    def table(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"Unknown metadata kind {kind!r}; valid: {', '.join(KINDS)}")
        return self.database[f"{self.collection}._{kind}"]

    def names(self, kind: str, filter: Mapping | None = None) -> list[str]:
        return sorted(r["name"] for r in self.table(kind).find(dict(filter or {}), {"name": 1}))

    def list(self, kind: str, filter: Mapping | None = None) -> list[dict]:
        rows = self.table(kind).find(dict(filter or {}), {"_id": 0}).sort("name", pymongo.ASCENDING)
        return list(rows)

    def find_one(self, kind: str, name: str) -> dict | None:
        return self.table(kind).find_one({"name": name}, {"_id": 0})

    def get(self, kind: str, name: str, hint: str | None = None) -> dict:
        """Row ``name`` of ``kind``, else :class:`NotRegisteredError` listing the registered names and
        saying how to register one (``hint``: a more specific hint)."""
        row = self.find_one(kind, name)
        if row is None:
            raise NotRegisteredError(SINGULAR[kind], name, self.names(kind), hint=hint)
        return row

    def check_registered(self, kind: str, names: Iterable[str], builtin: Callable[[str], bool] | None = None) -> None:
        """:class:`NotRegisteredError` for the first of ``names`` that is neither registered as ``kind``
        nor built in (``builtin(name)``): the one check that metrics, losses, validation sets ... exist."""
        for name in names:
            if builtin is None or not builtin(name):
                self.get(kind, name)

    def exists(self, kind: str, name: str) -> bool:
        return self.table(kind).count_documents({"name": name}, limit=1) > 0

    def exists_any(self, kind: str) -> bool:
        return self.table(kind).count_documents({}, limit=1) > 0

    def insert(self, kind: str, row: Mapping) -> dict:
        if self.exists(kind, row["name"]):
            raise AlreadyRegisteredError(SINGULAR[kind], row["name"])
        row = {"created_at": utcnow(), **row}
        self.table(kind).insert_one(dict(row))
        _changed()
        row.pop("_id", None)
        return row

    def update(self, kind: str, name: str, update: Mapping) -> None:
        self.table(kind).update_one({"name": name}, dict(update))
        _changed()

    def delete(self, kind: str, name: str) -> bool:
        deleted = self.table(kind).delete_one({"name": name}).deleted_count > 0
        _changed()
        return deleted

    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self.table("meta").find_one({"name": key})
        return default if row is None else row.get("value", default)

    def set_setting(self, key: str, value: Any) -> None:
        self.table("meta").update_one({"name": key}, {"$set": {"value": value}}, upsert=True)
        _changed()
