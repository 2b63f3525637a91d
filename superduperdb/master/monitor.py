"""The master's report on the cluster's work, sent to the scheduler with its worker's heartbeats.

The master knows what no other process does: the collections its reconciler
watches (every collection with watchers that a client wrote to), the indexes
it holds, and the queries it answers. Its report, plain data::

    {"at", "generation", "started_at",
     "collections": [{database, collection, jobs: {kind: {status: n}},
                      watchers: [{watcher, lag_documents, lag_seconds, pending, running ...}],
                      errors: [latest failed jobs], reconciler: {its last pass}}],
     "indexes": [{database, collection, index, shard, shards, vectors, tail, graph, snapshot_age_s,
                  catch_up_rows, catch_up_s, load_s, queries: {plan: [count, seconds]}}],
     "shard", "shards", ...}  (the actor's ``info()``)

**Shards.** With ``master.shards = N`` each shard actor has its own Monitor:
its report's indexes are that shard's part of each index (``shard`` says which,
``shards`` of how many). Only shard 0, which runs the reconciler's sweeps,
reads the collections' job records (the other shards' ``collections`` are
empty: the same figures N times over would be N times the queries). Every
shard actor on a worker adds its Monitor to that worker's heartbeat entry
(:func:`attach_to_worker`), which sends ``{"reports": [one per shard actor]}``;
the scheduler puts the reports of every worker together
(:func:`superduperdb.tasks.report.master_report`).

**When it is read.** Dask calls :meth:`Monitor.payload` on every heartbeat of
the master's worker (``Worker.metrics``; about once a second) on the
worker's event loop: it returns the last report at once and, when that is
older than ``metrics.interval`` seconds, refreshes it in a thread of its own
(one at a time). A refresh reads each watched collection's job records
(:func:`superduperdb.store.monitor.collection_report`: one aggregation, one
query of the unfinished model jobs, one of the latest failures) and the
master's in-memory stats; never the documents. The scheduler serves it as
Prometheus gauges and the dashboard page (:mod:`superduperdb.cluster.observe`);
``superduperdb status`` reads it from the scheduler's view of the workers.
Collections whose config says ``metrics.enabled: false`` are left out.

**Queries.** :meth:`Monitor.query` counts each answered query by index and
plan (a few additions under a lock) and observes it on the worker's
``superduperdb_query_duration_seconds`` histogram.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

from .. import metrics
from ..store.context import Context, Target
from ..store.monitor import collection_report

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
HEARTBEAT_KEY = "superduperdb"  # Worker.metrics[...]: what the scheduler finds in WorkerState.metrics


def plan_of(index: Any, candidates: list | None) -> str:
    """Which plan the index follows for a query (as ``VectorIndex.search`` decides it):
    ``exact``/``graph`` without a filter, ``filtered-exact``/``filtered-graph`` with candidate ids."""
    stats = index.stats()
    graph = stats["graph_size"] > 0 and index.graph_enabled and stats["size"] > index.exact_threshold
    if candidates is None:
        return "graph" if graph else "exact"
    return "filtered-graph" if graph and len(candidates) > index.exact_threshold else "filtered-exact"


class Monitor:
    """Builds and caches the master's report (see the module docstring).

    Parameters
    ----------
    targets : callable
        ``targets() -> list[Target]``: the collections to report on.
    indexes : callable
        ``indexes() -> list[dict]``: the stats of the loaded indexes (``Master.stats``).
    reconciler : callable
        ``reconciler() -> {"db.coll": last pass}`` (``Master.reconciler``).
    info : callable
        ``info() -> {"generation", "started_at"}``.
    held : callable, optional
        ``held() -> {target.key: Context}``: the contexts the master already holds (one per loaded
        index), used instead of opening another for the same collection.
    """

    def __init__(self, targets: Any, indexes: Any, reconciler: Any, info: Any, held: Any = None) -> None:
        self._targets, self._indexes, self._reconciler, self._info = targets, indexes, reconciler, info
        self._held = held if held is not None else dict
        self._report: dict = {}
        self._refreshed = float("-inf")
        self._interval = DEFAULT_INTERVAL  # of the last refresh: payload() must not look at the targets
        self._refreshing = threading.Lock()
        self._queries: dict[tuple[str, str, str], list[float]] = {}  # (db.coll, index, plan) -> [count, s]
        self._queries_lock = threading.Lock()
        self._enabled: dict[str, tuple[bool, float]] = {}  # per target.key: (metrics.enabled, metrics.interval)
        self._contexts: dict[str, Context] = {}  # per target.key: its stores, opened once (config resolved once)

    # -- queries --------------------------------------------------------------------------------
    def query(self, target: Target, index: str, plan: str, seconds: float, count: int = 1) -> None:
        """Count ``count`` queries of ``index`` answered in ``seconds`` by ``plan``."""
        enabled, _ = self._config(target)
        if not enabled:
            return
        key = (f"{target.database}.{target.collection}", index, plan)
        with self._queries_lock:
            entry = self._queries.setdefault(key, [0, 0.0])
            entry[0] += count
            entry[1] += seconds
        metrics.observe_query(target.database, target.collection, index, plan, seconds, count)

    def _config(self, target: Target) -> tuple[bool, float]:
        key = target.key
        found = self._enabled.get(key)
        if found is None:
            cfg = self._context(target).config.metrics
            found = self._enabled[key] = (bool(cfg.enabled), float(cfg.interval))
        return found

    def _context(self, target: Target) -> Context:
        """The collection's stores: the master's own Context of an index of it, else one opened here, once."""
        key = target.key
        if key not in self._contexts:
            self._contexts[key] = self._held().get(key) or Context(target)
        return self._contexts[key]

    # -- the report -------------------------------------------------------------------------------
    def interval(self) -> float:
        """The shortest ``metrics.interval`` of the reported collections (the default without any)."""
        intervals = [i for on, i in (self._config(t) for t in self._targets()) if on]
        return min(intervals, default=DEFAULT_INTERVAL)

    def payload(self, worker: Any = None) -> dict:
        """The latest report, at once; a refresh starts in a thread when it is older than the interval.

        Runs on the worker's event loop: it takes no lock that a load of an index may hold.
        """
        if time.monotonic() - self._refreshed >= self._interval and self._refreshing.acquire(blocking=False):
            self._refreshed = time.monotonic()
            threading.Thread(target=self._refresh_once, name="superduperdb-monitor", daemon=True).start()
        return self._report

    def report(self) -> dict:
        """A fresh report (blocks while it is read: ``superduperdb status`` without a scheduler's view)."""
        with self._refreshing:
            self._refreshed = time.monotonic()
            self._refresh()
        return self._report

    def _refresh_once(self) -> None:
        try:
            self._refresh()
        except Exception:  # noqa: BLE001 - the next heartbeat tries again
            logger.exception("could not refresh the master's report")
        finally:
            self._refreshing.release()

    def _refresh(self) -> None:
        start = time.perf_counter()
        info = self._info()
        sweeps = self._reconciler()
        collections = []
        seen: set[str] = set()
        lead = int(info.get("shard") or 0) == 0  # shard 0 reports the collections (see the module docstring)
        for target in self._targets() if lead else []:
            if target.key in seen or not self._config(target)[0]:
                continue
            seen.add(target.key)
            name = f"{target.database}.{target.collection}"
            try:
                entry = collection_report(self._context(target).db, target.collection)
            except Exception as exc:  # noqa: BLE001 - the database away: say so, report the rest
                entry = {"database": target.database, "collection": target.collection,
                         "error": f"{type(exc).__name__}: {exc}"}
            entry["reconciler"] = sweeps.get(name)
            collections.append(entry)
        now = time.time()
        with self._queries_lock:
            queries = {k: list(v) for k, v in self._queries.items()}
        indexes = [self._index(s, queries, now) for s in self._indexes()]
        self._report = {"at": now, **info, "collections": collections, "indexes": indexes,
                        "refresh_s": time.perf_counter() - start, "interval_s": self._interval}
        self._interval = self.interval()

    @staticmethod
    def _index(stats: dict, queries: dict, now: float) -> dict:
        database, _, collection = str(stats.get("collection")).partition(".")
        catch_up = stats.get("catch_up") or {}
        taken = stats.get("snapshot_taken_at")
        return {
            "database": database, "collection": collection, "index": stats.get("index"),
            "vectors": stats.get("size", 0), "tail": stats.get("tail", 0), "graph": stats.get("graph_size", 0),
            "deleted": stats.get("deleted", 0), "building": bool(stats.get("building")),
            "shard": int(stats.get("shard") or 0), "shards": int(stats.get("shards") or 1),
            "source": stats.get("source"), "load_s": stats.get("load_seconds"),
            "snapshot_age_s": None if taken is None else max(now - taken, 0.0),
            "catch_up_rows": (catch_up.get("upserted", 0) + catch_up.get("removed", 0)) if catch_up else None,
            "catch_up_s": catch_up.get("seconds") if catch_up else None,
            "last_error": stats.get("last_error"),
            "queries": {plan: v for (coll, index, plan), v in queries.items()
                        if coll == stats.get("collection") and index == stats.get("index")},
        }


class WorkerReports:
    """A worker's heartbeat entry: the reports of every shard actor (:class:`Monitor`) on that worker.

    Two shard actors on one worker (``master.shards`` above the master workers) each add their
    Monitor here instead of replacing the other's entry; a Monitor leaves when its actor is gone.
    """

    def __init__(self) -> None:
        self._monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()

    def add(self, monitor: Monitor) -> None:
        self._monitors.add(monitor)

    def __call__(self, worker: Any = None) -> dict:
        """``{"reports": [the latest report of each shard actor here that has one]}`` (runs on the event loop)."""
        reports = [m.payload() for m in list(self._monitors)]
        return {"reports": [r for r in reports if r]}


def attach_to_worker(monitor: Monitor) -> bool:
    """Send ``monitor``'s report with the heartbeats of the worker this runs on, beside those of the other
    shard actors there (:class:`WorkerReports`). False: not on a worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return False
    entry = worker.metrics.get(HEARTBEAT_KEY)
    if not isinstance(entry, WorkerReports):
        entry = worker.metrics[HEARTBEAT_KEY] = WorkerReports()
    entry.add(monitor)
    return True
