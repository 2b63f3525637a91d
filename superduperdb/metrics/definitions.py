"""Every Prometheus metric of superduperdb: its name, type, help, labels and the process that serves it.

One table, used by the exporters (:mod:`.export`), the dashboard page, the
Grafana dashboard in ``deploy/`` and ``docs/operations.md`` (a test checks
that the docs list every name here). Names are prefixed ``superduperdb_``;
labels name the database, the collection and the watcher or index.

Where a metric is served:

* ``scheduler``: the Dask scheduler running the preload
  (``--preload superduperdb.cluster.preload``), or the scheduler of a local
  cluster. Cluster state: the job records, the lag, the indexes, as the
  master reports them in its worker's heartbeats, and the scheduler's own
  queue. Evaluated when scraped.
* ``job workers``: each Dask worker, for the jobs it ran (sum over workers).
* ``master``: the worker holding the master, for the queries it answered.
* ``model server``: ``superduperdb serve``, for the requests it answered.

Examples
--------
>>> BY_NAME["superduperdb_jobs"].labels
('database', 'collection', 'kind', 'status')
>>> BY_NAME["superduperdb_outputs_lag_documents"].type
'gauge'
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "superduperdb_"

# Histogram buckets (seconds).
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

COLLECTION = ("database", "collection")


@dataclass(frozen=True)
class Metric:
    """One metric: ``type`` is ``gauge``, ``counter`` or ``histogram``; ``served_by`` names the process."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    served_by: str
    buckets: tuple[float, ...] = ()


METRICS: tuple[Metric, ...] = (
    # -- scheduler: cluster state, evaluated when scraped ---------------------------------------
    Metric("superduperdb_jobs", "gauge",
           "Job records by kind and status (pending, running, success, failed, cancelled).",
           (*COLLECTION, "kind", "status"), "scheduler"),
    Metric("superduperdb_queue_depth", "gauge",
           "Tasks of superduperdb jobs the Dask scheduler holds that have not finished "
           "(waiting for upstream jobs, queued, or processing), by kind.",
           ("kind",), "scheduler"),
    Metric("superduperdb_outputs_lag_documents", "gauge",
           "Documents whose outputs a watcher has yet to compute: the documents of its pending and running "
           "model jobs not yet done (from the job records and their progress).",
           (*COLLECTION, "watcher"), "scheduler"),
    Metric("superduperdb_outputs_lag_seconds", "gauge",
           "Age of the watcher's oldest pending or running model job (0 when none).",
           (*COLLECTION, "watcher"), "scheduler"),
    Metric("superduperdb_index_vectors", "gauge",
           "Vectors of a semantic index held by one shard of the master (label shard; sum over shard for the index).",
           (*COLLECTION, "index", "shard"), "scheduler"),
    Metric("superduperdb_index_tail_vectors", "gauge",
           "Vectors of an index not yet in its graph (searched exactly until the next build).",
           (*COLLECTION, "index", "shard"), "scheduler"),
    Metric("superduperdb_index_snapshot_age_seconds", "gauge",
           "Seconds since the index's latest snapshot was taken (absent: none yet).",
           (*COLLECTION, "index", "shard"), "scheduler"),
    Metric("superduperdb_index_catch_up_rows", "gauge",
           "Vectors the master re-read when it loaded the index from its snapshot (upserted + removed).",
           (*COLLECTION, "index", "shard"), "scheduler"),
    Metric("superduperdb_index_catch_up_seconds", "gauge",
           "Seconds the master spent catching the index up with the documents after loading its snapshot.",
           (*COLLECTION, "index", "shard"), "scheduler"),
    Metric("superduperdb_index_load_seconds", "gauge",
           "Seconds the master took to load the index (from its snapshot or from the documents).",
           (*COLLECTION, "index", "shard"), "scheduler"),
    Metric("superduperdb_reconcile_pass_age_seconds", "gauge",
           "Seconds since the reconciler's last pass over the collection ended.",
           COLLECTION, "scheduler"),
    Metric("superduperdb_reconcile_last_pass_repairs", "gauge",
           "What the reconciler's last pass over the collection repaired, by kind (outputs_computed, "
           "outputs_removed, index_upserted, jobs_lost ...).",
           (*COLLECTION, "kind"), "scheduler"),
    Metric("superduperdb_master_generation", "gauge",
           "Generation of the running master (1, then 2 ... after re-creations); absent: no master reports.",
           (), "scheduler"),
    # -- job workers -------------------------------------------------------------------------------
    Metric("superduperdb_job_duration_seconds", "histogram",
           "Run time of finished jobs by kind and final status (its _count: jobs finished).",
           (*COLLECTION, "kind", "status"), "job workers", JOB_BUCKETS),
    Metric("superduperdb_job_documents_total", "counter",
           "Outputs computed by finished model jobs (rate(): documents per second).",
           (*COLLECTION, "watcher"), "job workers"),
    # -- the master -----------------------------------------------------------------------------------
    Metric("superduperdb_query_duration_seconds", "histogram",
           "Time the master took to answer a similarity query, by plan: exact, graph, filtered-exact, "
           "filtered-graph.",
           (*COLLECTION, "index", "plan"), "master", QUERY_BUCKETS),
    # -- the model server ------------------------------------------------------------------------
    Metric("superduperdb_server_requests_total", "counter",
           "Requests answered by the model server, by endpoint and HTTP status code.",
           ("endpoint", "code"), "model server"),
    Metric("superduperdb_server_request_duration_seconds", "histogram",
           "Time the model server took to answer, by endpoint.",
           ("endpoint",), "model server", REQUEST_BUCKETS),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
