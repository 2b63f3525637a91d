"""The scheduler's view of superduperdb: gauges on its ``/metrics``, a dashboard page, ``status``'s report.

Also a Dask preload of its own, for schedulers that need only this (a local
cluster's)::

    dask scheduler --preload superduperdb.cluster.observe

(``superduperdb.cluster.preload`` calls :func:`install` for a scheduler.)

What the scheduler knows:

* **the master's report**, sent with the heartbeats of the master's worker
  (:mod:`superduperdb.master.monitor`): jobs by kind and status, the lag of
  each watcher, the latest errors, the indexes, the queries (each shard
  actor's indexes: :func:`superduperdb.tasks.report.master_report` puts the
  shards' reports together);
* **its own queue**: the tasks of superduperdb jobs (keys
  ``superduperdb-<kind>-<job id>``) not yet finished, counted from Dask's
  task prefixes (no scan of the tasks).

:func:`superduperdb.tasks.report.cluster_report` puts both together
(``superduperdb status`` runs it on the scheduler, so it lives with the other
code that runs on the cluster); :func:`samples` turns it into the gauges of
:mod:`superduperdb.metrics.definitions` served by the scheduler, evaluated at
each scrape; :mod:`.dashboard` draws it at ``/superduperdb``.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from .. import metrics
from ..metrics import Sample
from ..store import records
from ..tasks.report import cluster_report, index_totals

logger = logging.getLogger(__name__)

STATUSES = (records.PENDING, records.RUNNING, records.SUCCESS, records.FAILED, records.CANCELLED)
SAMPLE_MS = 1000  # the history's sampling period
HISTORY = 600  # samples kept per line: ten minutes


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
        # one sample per index per shard: the shard's part (sum over shard for the index's total)
        where = {"database": i["database"], "collection": i["collection"], "index": i["index"],
                 "shard": str(i.get("shard") or 0)}
        out.append(Sample("superduperdb_index_vectors", where, i["vectors"]))
        out.append(Sample("superduperdb_index_tail_vectors", where, i["tail"]))
        for name, key in (("superduperdb_index_snapshot_age_seconds", "snapshot_age_s"),
                          ("superduperdb_index_catch_up_rows", "catch_up_rows"),
                          ("superduperdb_index_catch_up_seconds", "catch_up_s"),
                          ("superduperdb_index_load_seconds", "load_s")):
            if i.get(key) is not None:
                out.append(Sample(name, where, i[key]))
    return out


class History:
    """The last ``size`` samples (one a second) of each watcher's lag and each index's query latency.

    Kept by the scheduler, so that the page shows the last minutes as soon as it opens.
    ``lag`` and ``latency`` map a label (``"db.coll watcher"``, ``"db.coll index"``) to
    ``(times in ms since the epoch, values)``; latency is the mean (ms) of the queries answered
    since the previous sample (none: no point), over an index's shards as
    :func:`~superduperdb.tasks.report.index_totals` counts them (the slowest shard's).
    """

    def __init__(self, size: int = HISTORY) -> None:
        self.size = size
        self.lag: dict[str, tuple[deque, deque]] = {}
        self.latency: dict[str, tuple[deque, deque]] = {}
        self._queries: dict[str, tuple[int, float]] = {}

    def _point(self, series: dict, label: str, at: float, value: float) -> None:
        xs, ys = series.setdefault(label, (deque(maxlen=self.size), deque(maxlen=self.size)))
        xs.append(at * 1000)
        ys.append(value)

    def record(self, report: dict) -> None:
        master = report.get("master") or {}
        now = report["at"]
        for c in master.get("collections") or []:
            for w in c.get("watchers") or []:
                self._point(self.lag, f"{c['database']}.{c['collection']} {w['watcher']}", now, w["lag_documents"])
        for i in index_totals(master.get("indexes") or []):  # one line per index, whatever its shards
            label = f"{i['database']}.{i['collection']} {i['index']}"
            count = sum(int(v[0]) for v in i["queries"].values())
            seconds = sum(float(v[1]) for v in i["queries"].values())
            before = self._queries.get(label)
            if before is not None and count > before[0]:
                self._point(self.latency, label, now, 1000 * (seconds - before[1]) / (count - before[0]))
            self._queries[label] = (count, seconds)


def install(scheduler: Any) -> History:
    """Serve the gauges on this scheduler's ``/metrics``, keep the :class:`History` (sampled every
    second on the scheduler's event loop: in-memory only) and add the dashboard page (with bokeh).
    Call it on the scheduler's event loop (a preload's ``dask_setup`` is)."""
    from tornado.ioloop import PeriodicCallback

    from .dashboard import add_page

    def source() -> list[Sample]:
        if getattr(scheduler.status, "name", "") in ("closing", "closed"):
            return []
        return samples(cluster_report(scheduler))

    if not metrics.register_source("scheduler", source):
        logger.info("prometheus_client is not installed: no superduperdb metrics on the scheduler's /metrics")
    history = History()

    def sample() -> None:
        try:
            history.record(cluster_report(scheduler))
        except Exception:  # noqa: BLE001 - a bad report must not stop the sampling
            logger.exception("could not sample the superduperdb history")

    callback = PeriodicCallback(sample, SAMPLE_MS)
    scheduler.periodic_callbacks["superduperdb-history"] = callback  # stopped with the scheduler
    callback.start()
    add_page(scheduler, cluster_report, history)
    return history


def dask_setup(scheduler: Any) -> None:
    """Dask preload hook (``--preload superduperdb.cluster.observe``, schedulers only)."""
    if type(scheduler).__name__ == "Scheduler":
        install(scheduler)
