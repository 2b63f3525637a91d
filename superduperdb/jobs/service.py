"""Turns writes into jobs (client side).

For the ids a write touched, every active watcher concerned gets a ``model``
job; a watcher that reads another's outputs gets a job that depends on that
watcher's job (the DAG), and fields holding URLs get a ``download`` job that
the model jobs wait for. Jobs are submitted to the cluster at once and the
write returns; the jobs' filters are applied on the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..store import records
from ..store.layout import find_urls
from ..store.watchers import active_watchers, downstream, upstream_of
from ..tasks.runner import run_job
from .handles import Job, JobGroup
from .planner import WritePlan, concerned, indexes_touched

if TYPE_CHECKING:
    from ..services.scope import Scope

logger = logging.getLogger(__name__)


def task_key(kind: str, job_id: str) -> str:
    """The Dask key of a job's task (in its record too, so the reconciler can ask the scheduler about it)."""
    return f"superduperdb-{kind}-{job_id}"


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
        return Job(job_id, self.table, future, default_timeout=self.scope.config.jobs.wait_timeout,
                   task_known=self.task_known)

    def task_known(self, record: dict) -> bool | None:
        """Whether the scheduler that runs job ``record`` still knows its task (None: cannot tell here,
        e.g. the job was submitted to another cluster, or this client is not connected to one)."""
        cluster = self.cluster
        if cluster.inline or not cluster.connected or record.get("scheduler") != cluster.scheduler_address:
            return None
        from ..store.dispatch import run_on_scheduler
        from ..tasks.reconcile import known_keys

        try:
            return bool(run_on_scheduler(cluster.client, known_keys, keys=[record["key"]]))
        except Exception:  # noqa: BLE001 - the scheduler is away: cannot tell (the wait goes on)
            return None

    # -- submitting -------------------------------------------------------------------
    def submit(self, kind: str, params: dict, *, depends_on: Iterable[Job] = (), record: dict | None = None,
               resources: dict | None = None) -> Job:
        """Create a job record and submit the job (or run it now, inline) to a worker offering ``resources``
        (default: ``cluster.job_resource`` where some worker offers it; ``{'GPU': 1}`` for a model on a GPU)."""
        depends_on = list(depends_on)
        job_id = records.new_job_id()
        key = None if self.cluster.inline else task_key(kind, job_id)
        where = {} if key is None else {"scheduler": self.cluster.scheduler_address}  # who to ask about the task
        records.create(self.table, kind, _id=job_id, key=key, depends_on=[j.id for j in depends_on], **where,
                       **(record or {}))
        target = self.scope.target
        if key is None:
            failed = [j for j in depends_on if j.status != "success"]
            if failed:
                records.finish(self.table, job_id, "failed", error=f"did not run: upstream job {failed[0].id} failed")
            else:
                run_job(target, job_id, kind, params, inline=True)
            return self.job(job_id)
        futures = [j._future for j in depends_on if j._future is not None]
        future = self.cluster.submit(run_job, target, job_id, kind, params, key=key, dependencies=futures,
                                     resources=resources)
        return self.job(job_id, future)

    def submit_watchers(self, ids: list | None, names: set[str] | None = None, *, download: bool = False,
                        after: Iterable[Job] = (), settle: bool = False) -> JobGroup:
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
            first = [self.submit("download", {"ids": ids}, depends_on=first, record=records.scope(ids))]
            jobs += first
        by_watcher: dict[str, Job] = {}
        for row in rows:  # topological order: upstream jobs exist before their dependents
            deps = [by_watcher[u] for u in upstream_of(row) if u in by_watcher] or first
            chunk_size = row.get("chunk_size") or self.scope.config.jobs.chunk_size  # create_model(max_chunk_size=)
            params = {"watcher": row["name"], "ids": ids, "chunk_size": chunk_size,
                      "settle": settle}
            job = self.submit("model", params, depends_on=deps, resources=row.get("resources"),
                              record={"model": row["model"], "watcher": row["name"], **records.scope(ids)})
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

    # -- what writes imply (planned and submitted by the write door's jobs rule) -------------
    def plan_update(self, filter: dict, update: Any, *, many: bool, sort: Any = None) -> WritePlan | None:
        """What an update (``update``: operators, a pipeline, or a replacement document) will need.

        None when it needs nothing: no watcher reads what it changes, and it writes no URL.
        """
        rows = active_watchers(self.metadata)
        hit = concerned(rows, update) if rows else set()
        download = bool(find_urls(update))
        indexes = indexes_touched(self.metadata.list("semantic_indexes"), update) \
            if self.metadata.exists_any("semantic_indexes") else set()
        if not hit and not download and not indexes:
            return None
        return WritePlan(self._ids(filter, many, sort), downstream(rows, hit), download, indexes)

    def before_delete(self, filter: dict, many: bool, sort: Any = None) -> list | None:
        """The ids a delete will remove, when an index must forget them (else None)."""
        if not self.metadata.exists_any("semantic_indexes"):
            return None
        return self._ids(filter, many, sort)

    def _ids(self, filter: dict, many: bool, sort: Any) -> list:
        """The ids a write with ``filter`` concerns (the first one ``sort`` picks, unless ``many``)."""
        cursor = self.scope.raw.find(filter, {"_id": 1})
        if sort is not None:
            cursor = cursor.sort(sort)
        if not many:
            cursor = cursor.limit(1)
        return [d["_id"] for d in cursor]

    def for_write(self, new: list, *, download: bool = False, plans: Iterable[WritePlan] = (),
                  changed: Iterable[Any] = (), deleted: Iterable[Any] = ()) -> JobGroup:
        """The jobs of one write, in this order.

        ``new``: ids of the documents it inserted or upserted (every active
        watcher's jobs; ``download``: some of them hold URLs). ``plans``: the
        planned updates (:meth:`plan_update`), whose ids, with ``changed`` (ids the
        store named), get their watchers' jobs, which settle each document.
        ``deleted``: ids the indexes and neighbour lists must forget.
        """
        jobs: list[Job] = []
        if new:
            jobs += self.submit_watchers(list(dict.fromkeys(new)), download=download)
        plans = list(plans)
        if plans:
            ids = list(dict.fromkeys([*(i for p in plans for i in p.ids), *changed]))
            if ids:
                jobs += self.submit_watchers(ids, set().union(*(p.watchers for p in plans)),
                                             download=any(p.download for p in plans), settle=True)
                jobs += self.filter_field_jobs(plans, ids)
        if deleted:
            jobs += self.after_delete(list(dict.fromkeys(deleted)))
        return JobGroup(jobs)

    def filter_field_jobs(self, plans: Iterable[WritePlan], ids: list) -> JobGroup:
        """Index jobs re-reading ``ids`` for the indexes whose filter fields the planned updates change (those
        whose watcher has a job already get their index job after it: not again)."""
        names = set().union(*(p.indexes for p in plans))
        watched = set().union(*(p.watchers for p in plans))
        rows = [r for r in self.metadata.list("semantic_indexes") if r["name"] in names and r["watcher"] not in watched]
        return JobGroup([self.submit("index", {"index": r["name"], "ids": ids}, record={"index": r["name"]})
                         for r in rows])

    def after_delete(self, ids: list) -> JobGroup:
        """Index updates that forget the deleted ``ids``, then neighbour lists that named them."""
        jobs: list[Job] = []
        for row in self.metadata.list("semantic_indexes"):
            index_job = self.submit("index", {"index": row["name"], "ids": ids}, record={"index": row["name"]})
            jobs.append(index_job)
            jobs += [self.submit("neighbourhood", {"neighbourhood": hood["name"], "ids": [], "removed": ids},
                                 depends_on=[index_job], record={"neighbourhood": hood["name"]})
                     for hood in self.metadata.list("neighbourhoods", {"semantic_index": row["name"]})]
        return JobGroup(jobs)
