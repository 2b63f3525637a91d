"""Turns writes into jobs (client side).

For the ids a write touched, every active watcher concerned gets a ``model``
job; a watcher that reads another's outputs gets a job that depends on that
watcher's job (the DAG), and fields holding URLs get a ``download`` job that
the model jobs wait for. Jobs are submitted to the cluster at once and the
write returns; the jobs' filters are applied on the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..store import records
from ..store.layout import DERIVED, find_urls
from ..store.watchers import active_watchers, downstream, upstream_of
from ..tasks.runner import run_job
from .handles import Job, JobGroup

if TYPE_CHECKING:
    from ..services.scope import Scope

logger = logging.getLogger(__name__)


@dataclass
class UpdatePlan:
    ids: list
    watchers: set[str] = field(default_factory=set)


def changed_keys(update: Any) -> set[str] | None:
    """Top-level fields an update changes (None: unknown, e.g. a pipeline or a replacement)."""
    if not isinstance(update, Mapping):
        return None
    keys: set[str] = set()
    for fields in update.values():
        if not isinstance(fields, Mapping):
            return None
        keys.update(str(k).split(".")[0] for k in fields)
    return keys


def _reads(row: Mapping) -> set[str]:
    key = row["key"]
    return {"*"} if key == "_base" else {key.split(".")[0]}


class JobService:
    """Submits the jobs a write implies (none while no watcher exists)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.metadata = scope.metadata

    @property
    def cluster(self):
        return self.scope.cluster

    @property
    def table(self):
        return self.metadata.table("jobs")

    def job(self, job_id: str, future: Any = None) -> Job:
        """A handle on job ``job_id`` (with its Dask future when submitted from here)."""
        return Job(job_id, self.table, future, default_timeout=self.scope.config.jobs.wait_timeout)

    def group(self, ids: Iterable[str] = ()) -> JobGroup:
        return JobGroup([self.job(i) for i in ids])

    # -- submitting -------------------------------------------------------------------
    def submit(self, kind: str, params: dict, *, depends_on: Iterable[Job] = (), record: dict | None = None) -> Job:
        """Create a job record and submit the job (or run it now, inline)."""
        depends_on = list(depends_on)
        job_id = records.create(self.table, kind, depends_on=[j.id for j in depends_on], **(record or {}))
        target = self.scope.target
        if self.cluster.inline:
            failed = [j for j in depends_on if j.status != "success"]
            if failed:
                records.finish(self.table, job_id, "failed", error=f"did not run: upstream job {failed[0].id} failed")
            else:
                run_job(target, job_id, kind, params)
            return self.job(job_id)
        futures = [j._future for j in depends_on if j._future is not None]
        future = self.cluster.submit(run_job, target, job_id, kind, params, key=f"superduperdb-{kind}-{job_id}",
                                     dependencies=futures)
        return self.job(job_id, future)

    def submit_watchers(self, ids: list | None, names: set[str] | None = None, *, download: bool = False,
                        after: Iterable[Job] = ()) -> JobGroup:
        """Jobs for the active watchers (``names`` only, if given) over ``ids`` (None: all).

        Each watcher's job waits for the jobs of the watchers it reads from; the
        first ones wait for the download (if any) and for ``after``. The index
        and neighbourhood updates that follow the outputs are included.
        """
        rows = active_watchers(self.metadata)
        if names is not None:
            rows = [r for r in rows if r["name"] in names]
        if not rows and not download:
            return JobGroup()
        jobs: list[Job] = []
        first: list[Job] = list(after)
        if download:
            first = [self.submit("download", {"ids": ids}, depends_on=first, record={"ids": ids})]
            jobs += first
        by_watcher: dict[str, Job] = {}
        for row in rows:  # topological order: upstream jobs exist before their dependents
            deps = [by_watcher[u] for u in upstream_of(row) if u in by_watcher] or first
            params = {"watcher": row["name"], "ids": ids, "chunk_size": self.scope.config.jobs.chunk_size}
            job = self.submit("model", params, depends_on=deps,
                              record={"model": row["model"], "watcher": row["name"], "ids": ids})
            by_watcher[row["name"]] = job
            jobs.append(job)
        jobs += self.index_jobs(ids, by_watcher)
        return JobGroup(jobs)

    def index_jobs(self, ids: list | None, by_watcher: dict[str, Job]) -> list[Job]:
        """Index updates after the indexing watchers' jobs, then neighbourhood updates."""
        jobs: list[Job] = []
        rows = [r for r in self.metadata.list("semantic_indexes") if r["watcher"] in by_watcher]
        for row in rows:
            index_job = self.submit("index", {"index": row["name"], "ids": ids},
                                    depends_on=[by_watcher[row["watcher"]]], record={"index": row["name"]})
            jobs.append(index_job)
            jobs += self.neighbourhood_jobs(row["name"], ids, [index_job])
        return jobs

    def neighbourhood_jobs(self, index: str, ids: list | None, depends_on: list[Job]) -> list[Job]:
        """Neighbour-list updates of the neighbourhoods of ``index``."""
        return [self.submit("neighbourhood", {"neighbourhood": hood["name"], "ids": ids}, depends_on=depends_on,
                            record={"neighbourhood": hood["name"]})
                for hood in self.metadata.list("neighbourhoods", {"semantic_index": index})]

    # -- write hooks (called by the Collection) --------------------------------------------
    def on_insert(self, ids: list, documents: list | None = None) -> JobGroup:
        download = any(find_urls(d) for d in documents or [])
        return self.submit_watchers(ids, download=download)

    def before_update(self, filter: dict, update: Any, many: bool) -> UpdatePlan | None:
        rows = active_watchers(self.metadata)
        if not rows:
            return None
        keys = changed_keys(update)
        if keys is not None:
            keys = {k for k in keys if k not in DERIVED}
            if not keys:
                return None  # only derived fields change: never trigger jobs
            hit = {r["name"] for r in rows if "*" in _reads(r) or _reads(r) & keys}
        else:
            hit = {r["name"] for r in rows}
        if not hit:
            return None
        cursor = self.scope.raw.find(filter, {"_id": 1})
        if not many:
            cursor = cursor.limit(1)
        return UpdatePlan([d["_id"] for d in cursor], downstream(rows, hit))

    def after_update(self, plan: UpdatePlan | None, upserted_id: Any) -> JobGroup | None:
        if plan is None:
            return None
        ids = plan.ids + ([upserted_id] if upserted_id is not None else [])
        if not ids:
            return JobGroup()
        return self.submit_watchers(ids, plan.watchers)

    def before_delete(self, filter: dict, many: bool) -> list | None:
        """The ids a delete will remove, when an index must forget them (else None)."""
        if not self.metadata.exists_any("semantic_indexes"):
            return None
        cursor = self.scope.raw.find(filter, {"_id": 1})
        return [d["_id"] for d in (cursor if many else cursor.limit(1))]

    def after_delete(self, ids: list | None) -> JobGroup | None:
        if not ids:
            return None
        return JobGroup([self.submit("index", {"index": r["name"], "ids": ids}, record={"index": r["name"]})
                         for r in self.metadata.list("semantic_indexes")])

    def before_bulk(self, ops: list) -> list:
        from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany

        plans: list = []
        for op in ops:
            if isinstance(op, InsertOne):
                plans.append(("insert", op._doc))
            elif isinstance(op, (DeleteOne, DeleteMany)):
                plans.append(("delete", self.before_delete(op._filter, isinstance(op, DeleteMany))))
            else:
                update = None if isinstance(op, ReplaceOne) else op._doc
                plans.append(("update", self.before_update(op._filter, update, isinstance(op, UpdateMany))))
        return plans

    def after_bulk(self, plans: list, bulk_api: dict) -> JobGroup:
        """Jobs for every document the bulk write inserted, upserted, changed or deleted."""
        inserted = [doc for kind, doc in plans if kind == "insert"]
        group = self.on_insert([d["_id"] for d in inserted], inserted) if inserted else JobGroup()
        upserted = [u["_id"] for u in bulk_api.get("upserted", [])]
        if upserted:
            group += self.on_insert(upserted)
        updates = [p for kind, p in plans if kind == "update" and p is not None]
        if updates:
            ids = list({i: None for p in updates for i in p.ids})
            group += self.submit_watchers(ids, set().union(*(p.watchers for p in updates)))
        for kind, plan in plans:
            if kind == "delete":
                group += self.after_delete(plan) or JobGroup()
        return group
