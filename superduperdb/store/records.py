"""Job records in ``<collection>._jobs``: created by the client, updated by the worker.

The record is the job's truth; its statuses are :data:`PENDING`, :data:`RUNNING` and the
final ones (:data:`FINAL`).

A record::

    {_id, kind, model, watcher, documents, id_range, status, created_at, started_at,
     finished_at, progress, logs: [...], error, traceback, result, depends_on,
     key, scheduler}

``key`` is the Dask key of the job's task and ``scheduler`` the address of the
scheduler it was submitted to (both None when jobs run inline): a wait asks that
scheduler whether the task still exists.

A record never holds the ids a job works on (they travel with the task): a
list of 20k ids made each progress update rewrite 20k ids, and near 700k ids a
record would pass MongoDB's 16 MiB limit. It holds their number
(``documents``, None for "all") and, where the ids compare, their smallest and
largest (``id_range``), which is enough to find again what a job touched.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from .metadata import utcnow

PENDING, RUNNING, SUCCESS, FAILED, CANCELLED = "pending", "running", "success", "failed", "cancelled"
FINAL = (SUCCESS, FAILED, CANCELLED)
MAX_LOG_LINES = 1000


def new_job_id() -> str:
    return str(ObjectId())


def oid(job_id: str) -> ObjectId:
    """The record's ``_id`` (an ObjectId: some MongoDB-wire servers accept no other ``_id``)."""
    return ObjectId(job_id)


def scope(ids: list | None) -> dict:
    """What a record says about the documents of a job over ``ids`` (None: all).

    >>> scope([3, 1, 2])
    {'documents': 3, 'id_range': [1, 3]}
    >>> scope(None)
    {'documents': None, 'id_range': None}
    """
    if ids is None:
        return {"documents": None, "id_range": None}
    try:
        bounds = [min(ids), max(ids)] if ids and not any(isinstance(i, (bool, dict, list)) for i in ids) else None
    except TypeError:  # ids of types that do not compare (a string and an ObjectId ...)
        bounds = None
    return {"documents": len(ids), "id_range": bounds}


def create(table: Any, kind: str, **fields: Any) -> str:
    """Insert a ``pending`` record; return its id."""
    job_id = fields.pop("_id", None) or new_job_id()
    table.insert_one(
        {"_id": oid(job_id), "kind": kind, "status": PENDING, "created_at": utcnow(), "progress": 0.0,
         "logs": [], **fields}
    )
    return job_id


def start(table: Any, job_id: str, worker: str | None = None, attempt: int = 1) -> None:
    table.update_one(
        {"_id": oid(job_id), "status": {"$nin": list(FINAL)}},
        {"$set": {"status": RUNNING, "started_at": utcnow(), "worker": worker, "attempts": attempt}},
    )


def progress(table: Any, job_id: str, fraction: float) -> None:
    table.update_one({"_id": oid(job_id)}, {"$set": {"progress": float(fraction)}})


def describe(table: Any, job_id: str, **fields: Any) -> None:
    """Add what a job learnt about its work to its record (e.g. ``documents`` of a job over "all")."""
    table.update_one({"_id": oid(job_id)}, {"$set": fields})


def log(table: Any, job_id: str, lines: list[str]) -> None:
    if lines:
        table.update_one({"_id": oid(job_id)}, {"$push": {"logs": {"$each": lines[-MAX_LOG_LINES:]}}})


def finish(table: Any, job_id: str, status: str, *, only_if_unfinished: bool = True, **fields: Any) -> None:
    """Set a final status (unless the record already has one)."""
    query: dict = {"_id": oid(job_id)}
    if only_if_unfinished:
        query["status"] = {"$nin": list(FINAL)}
    update = {"status": status, "finished_at": utcnow(), **fields}
    if status == SUCCESS:
        update["progress"] = 1.0
    table.update_one(query, {"$set": update})


def is_cancelled(table: Any, job_id: str) -> bool:
    """Whether the record says ``cancelled`` (checked between steps of long jobs)."""
    record = table.find_one({"_id": oid(job_id)}, {"status": 1})
    return record is not None and record.get("status") == CANCELLED
