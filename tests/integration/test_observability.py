"""Metrics and the dashboard page on a local cluster, read over HTTP as Prometheus and a browser would.

The embedded store with a local Dask cluster (its scheduler runs
``superduperdb.cluster.observe``): a gated model holds the jobs so the lag is
seen at its full size on the scheduler's ``/metrics``, then falls to 0 once
the gate opens; the job histogram, the index gauges and the query histogram
appear; the page is served and linked from Dask's navigation. With two shards,
each shard's part of the index has its own ``shard`` label.
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import testmodels
from prometheus_client.parser import text_string_to_metric_families
from waiting import poll

import superduperdb

WAIT = 120.0


def scrape(base: str) -> dict:
    """``{(name, ((label, value), ...)): value}`` from ``base/metrics``."""
    text = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape_until(base: str, predicate, what: str) -> dict:
    """The first scrape of ``base/metrics`` for which ``predicate(samples)`` holds (with a deadline)."""
    def attempt():
        samples = scrape(base)
        return samples if predicate(samples) else None

    return poll(attempt, WAIT, what)


@pytest.fixture
def local(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster="local", config={"master.warm_up": False})
    yield client
    client.close()


def test_lag_jobs_and_indexes_on_the_schedulers_metrics(local, unique_name, tmp_path):
    coll = local[unique_name].docs
    gate = tmp_path / "open"
    coll.create_model("gate", testmodels.Gate(str(gate), timeout=WAIT), key="x").wait(WAIT)
    coll.create_semantic_index("idx", models=["gate"], keys=["x"]).wait(WAIT)
    base = local.cluster.dashboard_link.rsplit("/", 1)[0]
    where = {"database": unique_name, "collection": "docs"}
    lag = {**where, "watcher": "gate/x"}
    xs = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
    try:
        first = coll.insert_many([{"x": x} for x in xs[:30]])
        second = coll.insert_many([{"x": x} for x in xs[30:]])
        held = scrape_until(base, lambda s: value(s, "superduperdb_outputs_lag_documents", **lag) == 50,
                            "the lag of the gated jobs on /metrics")
        assert value(held, "superduperdb_outputs_lag_seconds", **lag) > 0
        unfinished = sum(value(held, "superduperdb_jobs", **where, kind="model", status=s) or 0
                         for s in ("pending", "running"))
        assert unfinished == 2
        assert value(held, "superduperdb_queue_depth", kind="model") >= 1
    finally:
        gate.write_text("open")
    first.jobs.wait(WAIT)
    second.jobs.wait(WAIT)
    done = scrape_until(base, lambda s: value(s, "superduperdb_outputs_lag_documents", **lag) == 0
                        and value(s, "superduperdb_index_vectors", **where, index="idx", shard="0") == 50,
                        "the lag to fall to 0 and the index to hold every vector")
    assert value(done, "superduperdb_outputs_lag_seconds", **lag) == 0
    assert value(done, "superduperdb_jobs", **where, kind="model", status="success") == 3  # with create_model's
    assert value(done, "superduperdb_jobs", **where, kind="model", status="failed") == 0
    assert value(done, "superduperdb_job_documents_total", **where, watcher="gate/x") >= 50
    assert value(done, "superduperdb_job_duration_seconds_count", **where, kind="model", status="success") >= 3
    assert value(done, "superduperdb_master_generation") == 1

    hits = list(coll.find({}, like={"x": xs[3]}, n=3))
    assert len(hits) == 3
    after = scrape_until(base, lambda s: value(s, "superduperdb_query_duration_seconds_count", **where,
                                               index="idx", plan="exact"), "the query on the master's histogram")
    assert value(after, "superduperdb_query_duration_seconds_count", **where, index="idx", plan="exact") >= 1


def test_the_page_is_served_and_linked(local, unique_name):
    coll = local[unique_name].docs
    coll.create_model("ident", testmodels.identity, key="x").wait(WAIT)
    coll.insert_many([{"x": [1.0, 2.0]}]).jobs.wait(WAIT)
    link = local.cluster.dashboard_link
    assert link.endswith("/status")
    base = link.rsplit("/", 1)[0]
    page = urllib.request.urlopen(f"{base}/superduperdb", timeout=30).read().decode()
    assert "Bokeh.embed.embed_items" in page  # a Bokeh document (its content: tests/cluster/test_observability_cli.py)
    status = urllib.request.urlopen(link, timeout=30).read().decode()
    assert 'href="superduperdb"' in status  # in the navigation bar of Dask's own pages


def test_metrics_off_records_nothing(unique_name):
    with superduperdb.connect(f"mongomock://{unique_name}", cluster="local",
                              config={"master.warm_up": False, "metrics.enabled": False}) as client:
        coll = client[unique_name].docs
        coll.create_model("ident", testmodels.identity, key="x").wait(WAIT)
        coll.insert_many([{"x": [1.0]}]).jobs.wait(WAIT)
        base = client.cluster.dashboard_link.rsplit("/", 1)[0]
        got = scrape(base)
        assert value(got, "superduperdb_job_duration_seconds_count", database=unique_name, collection="docs",
                     kind="model", status="success") is None
        assert urllib.request.urlopen(f"{base}/status", timeout=30).status == 200
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/superduperdb", timeout=30)


def test_two_shards_each_report_their_part_of_the_index(unique_name):
    """``master.shards = 2`` (a local cluster starts one master worker per shard): the scheduler's
    ``/metrics`` has one ``superduperdb_index_vectors`` per shard, and they add up to the collection."""
    from superduperdb.store.dispatch import run_on_scheduler
    from superduperdb.tasks.report import cluster_report

    config = {"master.warm_up": False, "master.shards": 2, "reconcile.interval": 0}
    with superduperdb.connect(f"mongomock://{unique_name}", cluster="local", config=config) as client:
        coll = client[unique_name].docs
        coll.create_model("ident", testmodels.identity, key="x").wait(WAIT)
        coll.create_semantic_index("idx", models=["ident"], keys=["x"]).wait(WAIT)
        xs = np.random.default_rng(1).normal(size=(60, 4)).astype("float32")
        coll.insert_many([{"x": x} for x in xs]).jobs.wait(WAIT)
        assert list(coll.find({}, like={"x": xs[0]}, n=1))[0]["_id"] is not None  # every shard has loaded it
        base = client.cluster.dashboard_link.rsplit("/", 1)[0]
        where = {"database": unique_name, "collection": "docs", "index": "idx"}

        def parts(s: dict) -> list[float | None]:
            return [value(s, "superduperdb_index_vectors", **where, shard=k) for k in ("0", "1")]

        got = scrape_until(base, lambda s: None not in parts(s) and sum(parts(s)) == coll.count_documents({}),
                           "each shard's part of the index on the scheduler's /metrics")
        assert all(n > 0 for n in parts(got)) and sum(parts(got)) == 60
        assert value(got, "superduperdb_index_vectors", **where, shard="2") is None
        # the jobs come from shard 0's report alone: counted once (create_model's and the insert's), not per shard
        assert value(got, "superduperdb_jobs", database=unique_name, collection="docs", kind="model",
                     status="success") == 2
        master = run_on_scheduler(client.cluster.client, cluster_report)["master"]
        assert master["shards"]["total"] == 2 and [r["shard"] for r in master["shards"]["reporting"]] == [0, 1]
        assert sorted((i["shard"], i["shards"]) for i in master["indexes"]) == [(0, 2), (1, 2)]
