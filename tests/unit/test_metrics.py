"""Metrics: one table of names, the job records' report (lag, jobs, errors), the scheduler's gauges, the status text.

The report is read from real job records in the embedded store, written by the
library's own record functions; the gauges go through ``prometheus_client``'s
registry and its text format, as Dask's ``/metrics`` serves them.
"""

from __future__ import annotations

import datetime
import doctest
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import superduperdb
from superduperdb import metrics
from superduperdb.cli.status import format_status
from superduperdb.cluster.observe import samples
from superduperdb.master import monitor as monitor_
from superduperdb.metrics import definitions
from superduperdb.store import monitor, records
from superduperdb.store.metadata import MetadataStore

REPO = Path(__file__).resolve().parents[2]


def test_doctests():
    from superduperdb.tasks import report

    for module in (metrics, definitions, monitor, report):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_every_metric_is_prefixed_and_documented():
    text = (REPO / "docs" / "operations.md").read_text()
    for m in metrics.METRICS:
        assert m.name.startswith("superduperdb_") and re.fullmatch(r"[a-z_]+", m.name), m.name
        assert m.type in ("gauge", "counter", "histogram")
        assert (m.type == "counter") == m.name.endswith("_total"), m.name
        assert f"`{m.name}`" in text, f"docs/operations.md does not describe {m.name}"


def test_the_grafana_dashboard_plots_defined_metrics():
    dashboard = json.loads((REPO / "deploy" / "grafana" / "superduperdb.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"superduperdb_[a-z_]+", e)}
    assert used <= set(metrics.BY_NAME), used - set(metrics.BY_NAME)
    for name in ("superduperdb_jobs", "superduperdb_outputs_lag_documents", "superduperdb_index_vectors",
                 "superduperdb_query_duration_seconds", "superduperdb_job_duration_seconds",
                 "superduperdb_queue_depth", "superduperdb_index_snapshot_age_seconds"):
        assert name in used, f"the Grafana dashboard does not plot {name}"


def test_import_superduperdb_does_not_import_prometheus_client():
    code = "import sys, superduperdb; print('prometheus_client' in sys.modules, 'bokeh' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.fixture
def db(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None)
    yield client.raw[unique_name]
    client.close()


def _watcher(db, name="m/x", **extra):
    MetadataStore(db, "docs").insert("watchers", {"name": name, "model": name.split("/")[0],
                                                  "key": name.split("/")[1], "filter": None, "active": True, **extra})


def test_report_counts_the_lag_of_unfinished_model_jobs(db):
    _watcher(db)
    jobs = MetadataStore(db, "docs").table("jobs")
    old = records.create(jobs, "model", watcher="m/x", **records.scope(list(range(100))))
    records.start(jobs, old)
    records.progress(jobs, old, 0.25)  # 75 left
    records.create(jobs, "model", watcher="m/x", **records.scope(list(range(10))))  # pending: 10 left
    done = records.create(jobs, "model", watcher="m/x", **records.scope(list(range(50))))
    records.finish(jobs, done, records.SUCCESS)
    failed = records.create(jobs, "index", index="idx")
    records.finish(jobs, failed, records.FAILED, error="ValueError: boom")
    jobs.update_one({"_id": records.oid(old)}, {"$set": {"created_at": records.utcnow()
                                                           - datetime.timedelta(seconds=30)}})
    db["docs"].insert_many([{"x": i} for i in range(7)])
    report = monitor.collection_report(db, "docs")
    assert report["jobs"] == {"model": {"running": 1, "pending": 1, "success": 1}, "index": {"failed": 1}}
    (w,) = report["watchers"]
    assert w["watcher"] == "m/x" and w["lag_documents"] == 85 and w["pending"] == 1 and w["running"] == 1
    assert 29 <= w["lag_seconds"] < 120
    (e,) = report["errors"]
    assert e["job_id"] == failed and e["kind"] == "index" and e["on"] == "idx" and e["error"] == "ValueError: boom"
    # A backfill over "all" that has not started yet counts the watcher's documents.
    records.create(jobs, "model", watcher="m/x", **records.scope(None))
    assert monitor.collection_report(db, "docs")["watchers"][0]["lag_documents"] == 85 + 7
    assert monitor.watcher_counts(db["docs"], MetadataStore(db, "docs").get("watchers", "m/x")) == {
        "documents": 7, "outputs": 0}


def _report(lag: float) -> dict:
    return {"at": 1000.0, "queue": {"model": 2, "index": 0}, "workers": 3, "master": {
        "at": 999.0, "generation": 2, "started_at": 900.0, "worker": "tcp://w:1",
        "collections": [{"database": "db", "collection": "docs", "jobs": {"model": {"running": 1, "success": 4}},
                         "watchers": [{"watcher": "m/x", "lag_documents": lag, "lag_seconds": 3.5, "pending": 0,
                                       "running": 1}],
                         "errors": [], "reconciler": {"at": 990.0, "seconds": 1.0, "interval": 10.0,
                                                      "report": {"outputs_computed": 2}}}],
        "indexes": [{"database": "db", "collection": "docs", "index": "idx", "vectors": 40, "tail": 40, "graph": 0,
                     "shards": 1, "snapshot_age_s": 12.0, "catch_up_rows": None, "catch_up_s": None, "load_s": 0.5,
                     "queries": {"exact": [4, 0.02]}}]}}


def _scrape() -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(metrics.exposition()) for s in f.samples}


def test_scheduler_gauges_from_a_report_through_prometheus_client():
    state = {"lag": 120.0}
    metrics.register_source("test", lambda: samples(_report(state["lag"])))
    try:
        got = _scrape()
        where = (("collection", "docs"), ("database", "db"))
        assert got[("superduperdb_outputs_lag_documents", (*where, ("watcher", "m/x")))] == 120
        assert got[("superduperdb_outputs_lag_seconds", (*where, ("watcher", "m/x")))] == 3.5
        assert got[("superduperdb_jobs", (*where, ("kind", "model"), ("status", "running")))] == 1
        assert got[("superduperdb_jobs", (*where, ("kind", "model"), ("status", "failed")))] == 0  # every status
        assert got[("superduperdb_queue_depth", (("kind", "model"),))] == 2
        assert got[("superduperdb_index_vectors", (*where, ("index", "idx"), ("shard", "0")))] == 40
        assert got[("superduperdb_index_snapshot_age_seconds", (*where, ("index", "idx"), ("shard", "0")))] == 12
        assert ("superduperdb_index_catch_up_rows", (*where, ("index", "idx"), ("shard", "0"))) not in got  # no catch-up
        assert got[("superduperdb_reconcile_pass_age_seconds", where)] == 9
        assert got[("superduperdb_master_generation", ())] == 2
        state["lag"] = 0.0  # evaluated at each scrape
        assert _scrape()[("superduperdb_outputs_lag_documents", (*where, ("watcher", "m/x")))] == 0
    finally:
        metrics.unregister_source("test")
    assert not any(name == "superduperdb_outputs_lag_documents" for name, _ in _scrape())


def test_a_failing_source_leaves_the_others():
    metrics.register_source("broken", lambda: 1 / 0)
    metrics.register_source("fine", lambda: [metrics.Sample("superduperdb_queue_depth", {"kind": "model"}, 3)])
    try:
        assert _scrape()[("superduperdb_queue_depth", (("kind", "model"),))] == 3
    finally:
        metrics.unregister_source("broken")
        metrics.unregister_source("fine")


def test_status_text_agrees_with_the_report():
    report = _report(30.0)
    master = report["master"]
    status = {"at": report["at"], "database": {"uri": "mongodb://u:***@h/", "reachable": True},
              "cluster": {"address": "tcp://s:8786", "reachable": True, "workers": 3}, "queue": report["queue"],
              "master": {k: master[k] for k in ("worker", "generation", "started_at", "at")},
              "collections": master["collections"], "indexes": master["indexes"]}
    status["collections"][0]["watchers"][0].update(documents=100, outputs=70)
    text = "\n".join(format_status(status))
    assert "master    generation 2 on tcp://w:1" in text
    assert "queue     job tasks not finished on the scheduler: index 0, model 2" in text
    (row,) = [line.split() for line in text.splitlines() if line.strip().startswith("m/x")]
    assert row == ["m/x", "100", "70", "30", "3.5", "0", "1"]
    (index,) = [line.split() for line in text.splitlines() if line.strip().startswith("idx")]
    assert index[:5] == ["idx", "40", "0", "40", "1/1"] and index[-2:] == ["4", "5.00"]
    assert "reconciler  every 10 s" in text


def test_status_command_without_a_cluster_reads_the_job_records(unique_name, monkeypatch):
    """``superduperdb status`` on a config without a standing cluster: the job records say what there is."""
    import json as json_

    import testmodels
    from click.testing import CliRunner

    from superduperdb.cli import main

    monkeypatch.setenv("SUPERDUPERDB_MONGODB__URI", f"mongomock://{unique_name}")
    monkeypatch.setenv("SUPERDUPERDB_CLUSTER__ADDRESS", "local")
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None)
    coll = client[unique_name].docs
    coll.create_model("ident", testmodels.identity, key="x")
    coll.insert_many([{"x": [float(i)]} for i in range(12)] + [{"y": 1}])
    fail = client[unique_name].other
    fail.create_model("fail", testmodels.fail, key="x")
    fail.insert_one({"x": [1.0]})
    try:
        out = CliRunner().invoke(main, ["status", "--json", "-d", unique_name])
        assert out.exit_code == 0, out.output
        report = json_.loads(out.output)
        by_name = {c["collection"]: c for c in report["collections"]}
        assert set(by_name) == {"docs", "other"} and report["master"] is None
        (w,) = by_name["docs"]["watchers"]
        assert w["documents"] == 12 and w["outputs"] == 12 == coll.count_documents({"_outputs.x.ident": {"$exists": 1}})
        assert w["lag_documents"] == 0 and by_name["docs"]["jobs"] == {"model": {"success": 2}}
        (e,) = by_name["other"]["errors"]
        assert e["kind"] == "model" and e["on"] == "fail/x" and e["error"]
        text = CliRunner().invoke(main, ["status", "-d", f"{unique_name}.docs"]).output
        assert f"{unique_name}.docs" in text and f"{unique_name}.other" not in text
        (row,) = [line.split() for line in text.splitlines() if line.strip().startswith("ident/x")]
        assert row[:4] == ["ident/x", "12", "12", "0"]
    finally:
        client.close()


def test_history_keeps_the_lag_and_the_latency_of_new_queries():
    from superduperdb.cluster.observe import History

    history = History(size=3)
    for k, lag in enumerate([120.0, 60.0, 10.0, 0.0]):
        report = _report(lag)
        report["at"] = 1000.0 + k
        report["master"]["indexes"][0]["queries"] = {"exact": [4 + 2 * k, 0.02 + 0.004 * k], "graph": [1, 0.001]}
        history.record(report)
    xs, ys = history.lag["db.docs m/x"]
    assert list(ys) == [60.0, 10.0, 0.0] and list(xs) == [1_001_000.0, 1_002_000.0, 1_003_000.0]  # the last 3
    (times, means) = history.latency["db.docs idx"]
    assert len(means) == 3 and all(m == pytest.approx(2.0) for m in means)  # 2 queries in 4 ms each second


# -- shards: each shard actor's report, put together on the scheduler ------------------------------------
def _shard_monitor(shard: int, shards: int, vectors: int, queries: int, retired: bool = False,
                   collections: bool = True) -> monitor_.Monitor:
    """A shard actor's Monitor over one loaded index (its stats as ``Master.stats`` gives them)."""
    stats = {"index": "idx", "collection": "db.docs", "size": vectors, "tail": vectors, "graph_size": 0,
             "shard": shard, "shards": shards, "load_seconds": 0.1 * (shard + 1), "snapshot_taken_at": None}
    info = {"generation": 1, "started_at": 900.0, "shard": shard, "shards": shards, "key": f"k{shard}",
            "worker": None, "leases": {}, "retired": retired}
    # shard 0 would read these collections' job records: none here (targets() is empty), so it reports none
    found = monitor_.Monitor(lambda: [], lambda: [stats], dict, lambda: info)
    if queries:
        found._queries[("db.docs", "idx", "exact")] = [queries, 0.002 * queries * (shard + 1)]
    found.report()
    return found


def _heartbeats(*monitors) -> dict:
    """One worker's heartbeat entry holding ``monitors`` (shard actors on the same worker)."""
    entry = monitor_.WorkerReports()
    for m in monitors:
        entry.add(m)
    return entry()


def test_the_scheduler_puts_every_shards_report_together():
    """Three shards on two workers (shards 0 and 2 on one; a retired actor of shard 1 there too): one
    index entry per shard, one gauge per shard labelled with it, the collections of shard 0 only."""
    from superduperdb.tasks.report import combine, index_totals

    held = [_shard_monitor(0, 3, 10, 4), _shard_monitor(2, 3, 30, 4), _shard_monitor(1, 3, 99, 0, retired=True)]
    other = [_shard_monitor(1, 3, 20, 4)]
    a = _heartbeats(*held)
    assert sorted(r["shard"] for r in a["reports"]) == [0, 1, 2]  # two live actors on one worker: both sent
    a["reports"][0]["collections"] = [{"database": "db", "collection": "docs", "jobs": {"model": {"success": 4}},
                                       "watchers": [], "errors": [], "reconciler": None}]
    for r in a["reports"][1:]:
        r["collections"] = [{"database": "db", "collection": "docs", "jobs": {"model": {"success": 4}}}]
    b = _heartbeats(*other)
    b["reports"].append({**b["reports"][0], "at": b["reports"][0]["at"] + 5, "generation": 0,  # an older actor
                         "indexes": [{**b["reports"][0]["indexes"][0], "vectors": 77}]})
    master = combine({"tcp://a:1": a, "tcp://b:1": b, "tcp://c:1": None})
    assert [(i["shard"], i["shards"], i["vectors"], i["worker"]) for i in master["indexes"]] == [
        (0, 3, 10, "tcp://a:1"), (1, 3, 20, "tcp://b:1"), (2, 3, 30, "tcp://a:1")]
    assert master["worker"] == "tcp://a:1" and master["generation"] == 1
    assert master["shards"]["total"] == 3
    assert [(r["shard"], r["worker"]) for r in master["shards"]["reporting"]] == [
        (0, "tcp://a:1"), (1, "tcp://b:1"), (2, "tcp://a:1")]
    (collection,) = master["collections"]
    assert collection["jobs"] == {"model": {"success": 4}}  # shard 0's, once

    metrics.register_source("test", lambda: samples({"at": 1000.0, "queue": {}, "workers": 2, "master": master}))
    try:
        got = _scrape()
    finally:
        metrics.unregister_source("test")
    where = (("collection", "docs"), ("database", "db"), ("index", "idx"))
    parts = {k: got.get(("superduperdb_index_vectors", (*where, ("shard", k)))) for k in "0123"}
    assert parts == {"0": 10, "1": 20, "2": 30, "3": None}
    assert got[("superduperdb_index_load_seconds", (*where, ("shard", "1")))] == pytest.approx(0.2)
    jobs = [v for (name, labels), v in got.items() if name == "superduperdb_jobs" and ("status", "success") in labels]
    assert jobs == [4]

    (total,) = index_totals(master["indexes"])
    assert (total["vectors"], total["reporting"], total["shards"]) == (60, 3, 3)
    assert total["queries"] == {"exact": [4, pytest.approx(0.024)]}  # 4 queries, each waiting 6 ms for shard 2
    status = {"at": 1000.0, "database": {"uri": "mongomock://x"}, "cluster": {"address": "tcp://s:1"},
              "queue": {}, "master": {k: master[k] for k in ("worker", "generation", "started_at", "at", "shards")},
              "collections": master["collections"], "indexes": master["indexes"]}
    text = "\n".join(format_status(status))
    assert "shards 3 of 3 reporting" in text
    (row,) = [line.split() for line in text.splitlines() if line.strip().startswith("idx")]
    assert row[:5] == ["idx", "60", "0", "60", "3/3"] and row[-2:] == ["4", "6.00"]

    # Without shard 0's report the collections are unknown (status then reads the job records).
    missing = combine({"tcp://b:1": b})
    assert missing["collections"] is None and [i["shard"] for i in missing["indexes"]] == [1]
    (total,) = index_totals(missing["indexes"])
    assert (total["vectors"], total["reporting"], total["shards"]) == (20, 1, 3)
