"""The scheduler's view of superduperdb: gauges on its ``/metrics``, a dashboard page, ``status``'s report.

Also a Dask preload of its own, for schedulers that need only this (a local
cluster's)::

    dask scheduler --preload superduperdb.cluster.observe

(``superduperdb.cluster.preload`` calls :func:`install` for a scheduler.)

What the scheduler knows:

* **the master's report**, sent with the heartbeats of the master's worker
  (:mod:`superduperdb.master.monitor`): jobs by kind and status, the lag of
  each watcher, the latest errors, the indexes, the queries;
* **its own queue**: the tasks of superduperdb jobs (keys
  ``superduperdb-<kind>-<job id>``) not yet finished, counted from Dask's
  task prefixes (no scan of the tasks).

:func:`cluster_report` puts both together (``superduperdb status`` runs it on
the scheduler); :func:`samples` turns it into the gauges of
:mod:`superduperdb.metrics.definitions` served by the scheduler, evaluated at
each scrape; :mod:`.dashboard` draws it at ``/superduperdb``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import metrics
from ..master.monitor import HEARTBEAT_KEY
from ..metrics import Sample
from ..store import records

logger = logging.getLogger(__name__)

KEY_PREFIX = "superduperdb-"
NOT_FINISHED = ("waiting", "queued", "no-worker", "processing")
STATUSES = (records.PENDING, records.RUNNING, records.SUCCESS, records.FAILED, records.CANCELLED)
NOT_JOBS = ("master", "sweep")  # task prefixes that are not job kinds


def master_report(scheduler: Any) -> dict | None:
    """The newest report a master sent with its worker's heartbeats (None: no master reports)."""
    newest = None
    for ws in list(scheduler.workers.values()):
        report = (ws.metrics or {}).get(HEARTBEAT_KEY)
        if report and (newest is None or report.get("at", 0) > newest.get("at", 0)):
            newest = {**report, "worker": ws.address}
    return newest


def queue_depth(scheduler: Any) -> dict[str, int]:
    """``{kind: tasks not finished}`` of superduperdb jobs on this scheduler."""
    out: dict[str, int] = {}
    for name, prefix in list(scheduler.task_prefixes.items()):
        if name.startswith(KEY_PREFIX):
            kind = name[len(KEY_PREFIX):]
            if kind not in NOT_JOBS and "-" not in kind:
                out[kind] = sum(prefix.states.get(state, 0) for state in NOT_FINISHED)
    return out


def cluster_report(dask_scheduler: Any = None) -> dict:
    """The master's report, the queue and the workers, as the scheduler sees them now.

    Runs on the scheduler (``client.run_on_scheduler(cluster_report)``).
    """
    if dask_scheduler is None:
        raise ValueError("cluster_report runs on the scheduler: client.run_on_scheduler(cluster_report)")
    return {"at": time.time(), "master": master_report(dask_scheduler), "queue": queue_depth(dask_scheduler),
            "workers": len(dask_scheduler.workers)}


def samples(report: dict) -> list[Sample]:
    """The scheduler's gauges (see :mod:`superduperdb.metrics.definitions`) from a :func:`cluster_report`."""
    out = [Sample("superduperdb_queue_depth", {"kind": kind}, n) for kind, n in sorted(report["queue"].items())]
    master = report.get("master")
    if not master:
        return out
    now = report["at"]
    if master.get("generation") is not None:
        out.append(Sample("superduperdb_master_generation", {}, master["generation"]))
    for c in master.get("collections") or []:
        where = {"database": c["database"], "collection": c["collection"]}
        for kind, by_status in sorted((c.get("jobs") or {}).items()):
            for status in sorted(set(STATUSES) | set(by_status)):
                out.append(Sample("superduperdb_jobs", {**where, "kind": kind, "status": status},
                                  by_status.get(status, 0)))
        for w in c.get("watchers") or []:
            labels = {**where, "watcher": w["watcher"]}
            out.append(Sample("superduperdb_outputs_lag_documents", labels, w["lag_documents"]))
            out.append(Sample("superduperdb_outputs_lag_seconds", labels, w["lag_seconds"]))
        sweep = c.get("reconciler") or {}
        if "at" in sweep:
            out.append(Sample("superduperdb_reconcile_pass_age_seconds", where,
                              max(now - sweep["at"] - sweep.get("seconds", 0.0), 0.0)))
            for kind, n in sorted((sweep.get("report") or {}).items()):
                out.append(Sample("superduperdb_reconcile_last_pass_repairs", {**where, "kind": kind}, n))
    for i in master.get("indexes") or []:
        where = {"database": i["database"], "collection": i["collection"], "index": i["index"]}
        out.append(Sample("superduperdb_index_vectors", {**where, "shard": "0"}, i["vectors"]))
        out.append(Sample("superduperdb_index_tail_vectors", {**where, "shard": "0"}, i["tail"]))
        for name, key in (("superduperdb_index_snapshot_age_seconds", "snapshot_age_s"),
                          ("superduperdb_index_catch_up_rows", "catch_up_rows"),
                          ("superduperdb_index_catch_up_seconds", "catch_up_s"),
                          ("superduperdb_index_load_seconds", "load_s")):
            if i.get(key) is not None:
                out.append(Sample(name, where, i[key]))
    return out


def install(scheduler: Any) -> None:
    """Serve the gauges on this scheduler's ``/metrics`` and add the dashboard page (with bokeh)."""
    def source() -> list[Sample]:
        if getattr(scheduler.status, "name", "") in ("closing", "closed"):
            return []
        return samples(cluster_report(scheduler))

    if not metrics.register_source("scheduler", source):
        logger.info("prometheus_client is not installed: no superduperdb metrics on the scheduler's /metrics")
    from .dashboard import add_page

    add_page(scheduler, cluster_report)


def dask_setup(scheduler: Any) -> None:
    """Dask preload hook (``--preload superduperdb.cluster.observe``, schedulers only)."""
    if type(scheduler).__name__ == "Scheduler":
        install(scheduler)
