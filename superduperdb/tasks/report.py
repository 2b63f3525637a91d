"""What a Dask process says about itself: a worker (run on every worker by ``superduperdb info``),
the scheduler (superduperdb's work as it sees it: run on the scheduler by ``superduperdb status``, and
read by its gauges and dashboard page, :mod:`superduperdb.cluster.observe`)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

KEY_PREFIX = "superduperdb-"
NOT_FINISHED = ("waiting", "queued", "no-worker", "processing")
NOT_JOBS = ("master", "sweep")  # task prefixes that are not job kinds


def process_report() -> dict[str, Any]:
    """superduperdb's version, whether the preload prepared this process, and its index environment.

    Imports nothing heavy, so that asking a bare worker does not change it.
    """
    from ..version import __version__

    preload = sys.modules.get("superduperdb.cluster.preload")
    setup = dict(getattr(preload, "SETUP", {}) or {})
    return {
        "superduperdb": __version__,
        "pid": os.getpid(),
        "preload": bool(setup),
        "role": setup.get("role"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR"),
        "numba imported": "numba" in sys.modules,
    }


# -- the scheduler ------------------------------------------------------------------------------------
def master_report(scheduler: Any) -> dict | None:
    """The master's report, put together from the reports its shard actors sent with their workers'
    heartbeats (None: no master reports). See :func:`combine`."""
    from ..master.monitor import HEARTBEAT_KEY

    return combine({ws.address: (ws.metrics or {}).get(HEARTBEAT_KEY) for ws in list(scheduler.workers.values())})


def combine(entries: dict[str, Any]) -> dict | None:
    """One master report from each worker's heartbeat entry (``{worker address: entry}``).

    An entry is ``{"reports": [one report per shard actor on that worker]}``
    (:class:`superduperdb.master.monitor.WorkerReports`; a lone report, as older
    workers send, counts as one). Per shard, the report of the newest actor (highest
    ``generation``, then newest ``at``) that has not retired is kept: a replaced shard's
    old actor may still report for a while.

    * ``indexes``: every kept shard's, one entry per index per shard (each with its
      ``shard`` and ``shards``, and the ``worker`` that sent it);
    * ``collections`` (jobs, lag, errors, reconciler), ``generation``, ``started_at``,
      ``at``, ``worker``: from **shard 0**'s report. Shard 0 runs the reconciler's
      sweeps and watches every collection with watchers, and it is the only shard that
      reads the job records (the others' figures would be the same, N times over, and
      the others know only their indexes' collections); taking the newest report instead
      would flip between shards' views from one heartbeat to the next. Without a report
      of shard 0 (lost, or being replaced), these come from the newest report, with
      ``collections`` None: unknown for now (``superduperdb status`` then reads the job
      records).
    * ``shards``: ``{"total": master.shards, "reporting": [{shard, worker, generation,
      started_at, at}]}``.

    Examples
    --------
    >>> r = lambda shard, at, n: {"at": at, "generation": 1, "shard": shard, "shards": 2, "collections": [],
    ...     "indexes": [{"database": "db", "collection": "c", "index": "i", "shard": shard, "vectors": n}]}
    >>> m = combine({"tcp://a:1": {"reports": [r(0, 10.0, 3), r(1, 11.0, 4)]}, "tcp://b:1": None})
    >>> [(i["shard"], i["vectors"]) for i in m["indexes"]], m["worker"], m["at"]
    ([(0, 3), (1, 4)], 'tcp://a:1', 10.0)
    """
    kept: dict[int, dict] = {}
    for address, entry in entries.items():
        if not entry:
            continue
        for report in entry.get("reports", [entry]) if isinstance(entry, dict) else []:
            if not report or report.get("retired"):
                continue
            shard = int(report.get("shard") or 0)
            if shard not in kept or _recency(report) > _recency(kept[shard]):
                kept[shard] = {**report, "worker": address}
    if not kept:
        return None
    base = kept.get(0) or max(kept.values(), key=lambda r: r.get("at", 0))
    indexes = [{**i, "worker": r["worker"]} for shard, r in sorted(kept.items()) for i in r.get("indexes") or []]
    out = {k: v for k, v in base.items() if k not in ("indexes", "leases", "key")}
    out.update(indexes=indexes, collections=base.get("collections") if 0 in kept else None, shards={
        "total": max(int(r.get("shards") or 1) for r in kept.values()),
        "reporting": [{k: r.get(k) for k in ("shard", "worker", "generation", "started_at", "at")}
                      for _, r in sorted(kept.items())]})
    out.pop("shard", None)
    return out


def _recency(report: dict) -> tuple:
    return (report.get("generation") or 0, report.get("at") or 0)


def index_totals(indexes: list[dict]) -> list[dict]:
    """One entry per index from the per-shard entries of :func:`combine`: ``vectors``, ``tail``, ``graph``
    and ``deleted`` summed, ``shards`` the total, ``reporting`` how many shards reported (fewer than
    ``shards``: some shard's part is missing), the largest ``snapshot_age_s``, ``load_s`` and
    ``catch_up_s`` and the summed ``catch_up_rows`` (None where no shard has one). ``queries``, per plan:
    the most queries any shard answered (a query reaches every shard) and the seconds of the slowest
    shard's mean (a query waits for its slowest shard).

    Examples
    --------
    >>> parts = [{"database": "db", "collection": "c", "index": "i", "shard": s, "shards": 2, "vectors": n,
    ...           "queries": {"exact": [1, 0.5]}} for s, n in ((0, 3), (1, 4))]
    >>> (t,) = index_totals(parts)
    >>> t["vectors"], t["shards"], t["reporting"], t["queries"]
    (7, 2, 2, {'exact': [1, 0.5]})
    """
    out: dict[tuple, dict] = {}
    for i in indexes:
        key = (i.get("database"), i.get("collection"), i.get("index"))
        total = out.get(key)
        if total is None:
            out[key] = total = {**i, "queries": {}, "reporting": 0}
            for field in ("vectors", "tail", "graph", "deleted"):
                total[field] = 0
            for field in ("snapshot_age_s", "load_s", "catch_up_s", "catch_up_rows"):
                total[field] = None
            total.pop("shard", None)
            total.pop("worker", None)
        total["reporting"] += 1
        total["shards"] = max(int(total.get("shards") or 1), int(i.get("shards") or 1))
        total["building"] = bool(total.get("building")) or bool(i.get("building"))
        for field in ("vectors", "tail", "graph", "deleted"):
            total[field] += i.get(field) or 0
        for field in ("snapshot_age_s", "load_s", "catch_up_s"):
            if i.get(field) is not None:
                total[field] = max(total[field] or 0.0, i[field])
        if i.get("catch_up_rows") is not None:
            total["catch_up_rows"] = (total["catch_up_rows"] or 0) + i["catch_up_rows"]
        for plan, (count, seconds) in (i.get("queries") or {}).items():
            before, seconds_before = total["queries"].get(plan, (0, 0.0))
            most = max(before, int(count))
            mean = max(seconds_before / before if before else 0.0, seconds / count if count else 0.0)
            total["queries"][plan] = [most, mean * most]
    return list(out.values())


def queue_depth(scheduler: Any) -> dict[str, int]:
    """``{kind: tasks not finished}`` of superduperdb jobs on this scheduler (keys
    ``superduperdb-<kind>-<job id>``, counted from Dask's task prefixes: no scan of the tasks)."""
    out: dict[str, int] = {}
    for name, prefix in list(scheduler.task_prefixes.items()):
        if name.startswith(KEY_PREFIX):
            kind = name[len(KEY_PREFIX):]
            if kind not in NOT_JOBS and "-" not in kind:
                out[kind] = sum(prefix.states.get(state, 0) for state in NOT_FINISHED)
    return out


def cluster_report(dask_scheduler: Any = None) -> dict:
    """The master's report, the queue and the workers, as the scheduler sees them now.

    Runs on the scheduler (``dispatch.run_on_scheduler(client, cluster_report)``).
    """
    if dask_scheduler is None:
        raise ValueError("cluster_report runs on the scheduler: dispatch.run_on_scheduler(client, cluster_report)")
    return {"at": time.time(), "master": master_report(dask_scheduler), "queue": queue_depth(dask_scheduler),
            "workers": len(dask_scheduler.workers)}
