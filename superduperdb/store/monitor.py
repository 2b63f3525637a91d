"""What the job records and watcher rows of one collection say about its work: jobs, lag, errors.

Read by the master for its report (every ``metrics.interval`` seconds while
the scheduler asks, :mod:`superduperdb.master.monitor`) and by
``superduperdb status`` when no master runs. Reads only ``<coll>._jobs`` and
``<coll>._watchers``, never the documents, except :func:`watcher_counts`
(two counts per watcher: the status command only).

**The lag** of a watcher is what its queued and running ``model`` jobs have
yet to do: each such record covers ``documents`` documents and has done a
fraction ``progress`` of them, so the lag is ``sum(documents * (1 - progress))``;
in seconds it is the age of the oldest such job. Every write through the
library (inserts, updates, replacements, upserts) makes such a job, so the
lag counts what those writes left to compute. Documents that other programs
wrote are not in it: the reconciler finds them (its pass computes them and
reports ``outputs_computed``). A failed job leaves the lag (its documents
are in ``superduperdb_jobs{status="failed"}`` and the latest errors).

Examples
--------
>>> remaining({"documents": 100, "progress": 0.25})
75.0
>>> remaining({"documents": None, "progress": 0.5}, whole=40)
20.0
"""

from __future__ import annotations

import datetime
from typing import Any

from . import records
from .layout import input_projection
from .metadata import MetadataStore, utcnow
from .watchers import and_, load_filter, watcher_output

LATEST_ERRORS = 5
UNFINISHED = [records.PENDING, records.RUNNING]


def _epoch(value: Any) -> float | None:
    """A record's naive-UTC datetime as seconds since the epoch (None if absent)."""
    if not isinstance(value, datetime.datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


def remaining(record: dict, whole: int | None = None) -> float:
    """Documents a model job has yet to process (``whole``: its scope when the record says "all")."""
    documents = record.get("documents")
    if documents is None:
        documents = whole or 0
    progress = min(max(float(record.get("progress") or 0.0), 0.0), 1.0)
    return float(documents) * (1.0 - progress)


def job_counts(jobs: Any) -> dict[str, dict[str, int]]:
    """``{kind: {status: count}}`` of every record in the ``_jobs`` table ``jobs``."""
    out: dict[str, dict[str, int]] = {}
    for row in jobs.aggregate([{"$group": {"_id": {"kind": "$kind", "status": "$status"}, "n": {"$sum": 1}}}]):
        key = row["_id"] or {}
        out.setdefault(str(key.get("kind")), {})[str(key.get("status"))] = int(row["n"])
    return out


def latest_errors(jobs: Any, limit: int = LATEST_ERRORS) -> list[dict]:
    """The ``limit`` most recently failed jobs: id, kind, what they worked on, when, and the error line."""
    fields = {"kind": 1, "error": 1, "finished_at": 1, "watcher": 1, "index": 1, "neighbourhood": 1, "model": 1}
    out = []
    for r in jobs.find({"status": records.FAILED}, fields).sort("finished_at", -1).limit(limit):
        out.append({"job_id": str(r["_id"]), "kind": r.get("kind"),
                    "on": r.get("watcher") or r.get("index") or r.get("neighbourhood") or r.get("model"),
                    "at": _epoch(r.get("finished_at")), "error": str(r.get("error") or "")[:500]})
    return out


def watcher_lag(database: Any, name: str, jobs: Any, watchers: list[dict], now: datetime.datetime) -> list[dict]:
    """Each watcher's lag (documents, seconds) and its pending/running model jobs (see the module docstring)."""
    lag = {w["name"]: {"watcher": w["name"], "model": w.get("model"), "key": w.get("key"),
                       "active": w.get("active", True) is not False, "lag_documents": 0.0, "lag_seconds": 0.0,
                       "pending": 0, "running": 0} for w in watchers}
    fields = {"watcher": 1, "documents": 1, "progress": 1, "created_at": 1, "status": 1}
    whole: dict[str, int] = {}
    for r in jobs.find({"kind": "model", "status": {"$in": UNFINISHED}}, fields):
        entry = lag.get(r.get("watcher"))
        if entry is None:  # a job of a watcher deleted since: nothing to compute for it any more
            continue
        if r.get("documents") is None and entry["watcher"] not in whole:  # a backfill not started yet
            row = next(w for w in watchers if w["name"] == entry["watcher"])
            whole[entry["watcher"]] = database[name].count_documents(load_filter(row.get("filter")))
        entry["lag_documents"] += remaining(r, whole.get(entry["watcher"]))
        entry[r.get("status")] = entry.get(r.get("status"), 0) + 1
        created = r.get("created_at")
        if isinstance(created, datetime.datetime):
            entry["lag_seconds"] = max(entry["lag_seconds"], (now - created.replace(tzinfo=None)).total_seconds())
    return list(lag.values())


def collection_report(database: Any, name: str, *, errors: int = LATEST_ERRORS) -> dict:
    """Jobs by kind and status, each watcher's lag, and the latest errors of collection ``name``."""
    metadata = MetadataStore(database, name)
    jobs = metadata.table("jobs")
    watchers = list(metadata.table("watchers").find({}, {"_id": 0, "name": 1, "model": 1, "key": 1, "filter": 1,
                                                          "active": 1}))
    return {"database": database.name, "collection": name, "jobs": job_counts(jobs),
            "watchers": watcher_lag(database, name, jobs, watchers, utcnow()), "errors": latest_errors(jobs, errors)}


def watcher_counts(collection: Any, row: dict) -> dict[str, int]:
    """``documents``: those the watcher covers (its filter, with the watched input);
    ``outputs``: those holding its output. Two counts over the documents: for ``superduperdb status``."""
    fields = input_projection(row["key"], row.get("features") or {})
    scope = and_(load_filter(row.get("filter")), {fields[0]: {"$exists": True}} if fields else {})
    return {"documents": collection.count_documents(scope),
            "outputs": collection.count_documents({watcher_output(row): {"$exists": True}})}
