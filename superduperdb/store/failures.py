"""Documents a model could not be applied to: one record each, in ``<collection>._errors``.

A model job (or the reconciler) that hits a document its model raises on
records the failure here and goes on with the other documents (see
:func:`superduperdb.models.batching.isolate`). One record per watcher and
document::

    {"document": <the document's _id>, "watcher": "length/text", "model": "length",
     "key": "text", "version": 1, "fingerprint": "<of the input and version>",
     "error": "TypeError", "message": "object of type 'int' has no len()",
     "traceback": "...", "job_id": "...", "at": datetime}

The invariants:

* a document whose input fingerprint (input and model version, see
  :func:`~superduperdb.store.layout.fingerprint`) equals its failure record's
  is not tried again, by model jobs or the reconciler: a failure is logged
  once, and a sweep does not redo what failed for the same reason;
* a changed input or a new model version changes the fingerprint: the
  document is tried again, and a success removes its record;
* the records are bookkeeping, never part of the documents: other
  applications reading the collection do not see them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from pymongo import UpdateOne

from .bulk import BATCH, bulk_write
from .metadata import utcnow

FIELDS = ("document", "watcher", "model", "key", "version", "error", "message", "traceback", "job_id", "at")


class Failure(NamedTuple):
    """A document the model raised on: its id, the raw input, its fingerprint, the error and a traceback excerpt."""

    id: Any
    input: Any
    fingerprint: str
    error: BaseException
    traceback: str


def record(table: Any, watcher: str, model: str, key: str, version: Any, failures: Iterable[Failure],
           job_id: str | None = None) -> int:
    """Upsert one record per failed document (keyed by watcher and document); return how many."""
    now = utcnow()
    ops = [UpdateOne({"watcher": watcher, "document": f.id},
                     {"$set": {"model": model, "key": key, "version": version, "fingerprint": f.fingerprint,
                               "error": type(f.error).__name__, "message": str(f.error)[:2000],
                               "traceback": f.traceback, "job_id": job_id, "at": now}},
                     upsert=True)
           for f in failures]
    for start in range(0, len(ops), BATCH):
        bulk_write(table, ops[start:start + BATCH], ordered=False)
    return len(ops)


def any_for(table: Any, watcher: str) -> bool:
    """Whether ``watcher`` has any failure record (one cheap read, before looking up documents)."""
    return table.count_documents({"watcher": watcher}, limit=1) > 0


def known(table: Any, watcher: str, ids: list | None = None) -> dict:
    """``{document id: fingerprint}`` of the failures recorded for ``watcher`` (only ``ids``, if given)."""
    query: dict = {"watcher": watcher}
    if ids is not None:
        query["document"] = {"$in": list(ids)}
    return {r["document"]: r.get("fingerprint") for r in table.find(query, {"document": 1, "fingerprint": 1})}


def clear(table: Any, watcher: str, ids: Iterable[Any]) -> int:
    """Remove the records of ``ids`` (their outputs were computed now); return how many."""
    ids = list(ids)
    if not ids:
        return 0
    return table.delete_many({"watcher": watcher, "document": {"$in": ids}}).deleted_count


def listing(table: Any, model: str | None = None, key: str | None = None) -> list[dict]:
    """The records (newest first), of ``model`` / ``key`` if given, without the database's own ``_id``."""
    query: dict[str, Any] = {}
    if model is not None:
        query["model"] = model
    if key is not None:
        query["key"] = key
    rows = table.find(query, {"_id": 0, "fingerprint": 0}).sort("at", -1)
    return [{k: row.get(k) for k in FIELDS if k in row} for row in rows]


def remove(table: Any, query: Mapping | None = None) -> int:
    """Delete the records matching ``query`` (all: None); return how many."""
    return table.delete_many(dict(query or {})).deleted_count
