"""Models, watchers and jobs through the public API, in every cluster mode.

* ``inline``: no cluster, jobs run in the calling process (embedded mongomock);
* ``threads``: the embedded default, a LocalCluster whose workers are threads;
* ``processes``: a LocalCluster with separate worker processes, against the
  MongoDB-wire server over TCP.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import testmodels
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from superduperdb.errors import (
    CycleError,
    InUseError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    NotRegisteredError,
)

WAIT = 120


def vectors(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4)).astype("float32")


def test_callable_outputs_appear_after_insert(coll):
    coll.create_model("norm", testmodels.norm, key="x").wait(WAIT)
    xs = vectors(5)
    result = coll.insert_many([{"x": x} for x in xs])
    assert len(result.jobs) == 1
    result.jobs.wait(WAIT)
    for _id, x in zip(result.inserted_ids, xs):
        doc = coll.find_one({"_id": _id})
        assert doc["_outputs"]["x"]["norm"] == pytest.approx(float(np.linalg.norm(x)), rel=1e-6)


def test_backfill_on_create_watcher_in_chunks(client, coll):
    coll.insert_many([{"x": x} for x in vectors(23)])
    coll.create_model("norm", testmodels.norm)
    jobs = coll.create_watcher("norm", "x")
    jobs.wait(WAIT)
    assert coll.count_documents({"_outputs.x.norm": {"$exists": True}}) == 23
    record = jobs[0].record()
    assert record["status"] == "success" and record["progress"] == 1.0
    assert record["result"]["computed"] == 23


def test_sklearn_and_torch_models(coll):
    xs = vectors(30, seed=1)
    coll.insert_many([{"x": x, "label": int(x[0] > 0)} for x in xs])
    pca = PCA(n_components=2).fit(xs)
    clf = LogisticRegression().fit(xs, (xs[:, 0] > 0).astype(int))
    mlp = testmodels.make_torch_mlp()
    coll.create_model("pca", pca, method="transform", key="x").wait(WAIT)
    coll.create_model("clf", clf, key="x").wait(WAIT)
    coll.create_model("mlp", mlp, batch_size=7, key="x").wait(WAIT)
    for doc in coll.find({}).sort("_id", 1):
        out = doc["_outputs"]["x"]
        np.testing.assert_allclose(out["pca"], pca.transform(doc["x"][None])[0], rtol=1e-5, atol=1e-6)
        assert out["clf"] == clf.predict(doc["x"][None])[0]
        assert out["mlp"].shape == (3,)
    import torch

    expected = mlp.eval()(torch.as_tensor(xs[:1]))[0].detach().numpy()
    first = coll.find_one({"x": xs[0]})
    np.testing.assert_allclose(first["_outputs"]["x"]["mlp"], expected, rtol=1e-5)


def test_chained_models_run_in_dependency_order(coll):
    coll.create_model("pca", PCA(n_components=2).fit(vectors(20)), method="transform", key="x").wait(WAIT)
    coll.create_model("norm", testmodels.norm)
    coll.create_watcher("norm", "x", features={"x": "pca"}).wait(WAIT)
    result = coll.insert_one({"x": vectors(1, seed=3)[0]})
    upstream, downstream = result.jobs
    result.jobs.wait(WAIT)
    doc = coll.find_one({"_id": result.inserted_id})
    assert doc["_outputs"]["x"]["norm"] == pytest.approx(float(np.linalg.norm(doc["_outputs"]["x"]["pca"])), rel=1e-5)
    up, down = upstream.record(), downstream.record()
    assert down["depends_on"] == [upstream.id]
    assert down["started_at"] >= up["finished_at"]
    # and the outputs can stand in for the raw field on read
    assert coll.find_one({"_id": result.inserted_id}, features={"x": "pca"})["x"].shape == (2,)


def test_cycles_are_refused_and_change_nothing(coll):
    coll.create_model("a", testmodels.norm)
    coll.create_model("b", testmodels.norm)
    coll.create_watcher("a", "x", features={"x": "b"}).wait(WAIT)
    with pytest.raises(CycleError, match="cycle"):
        coll.create_watcher("b", "x", features={"x": "a"})
    assert coll.list_watchers() == ["a/x"]


def test_failing_model_surfaces_traceback_and_stops_dependents(coll):
    coll.create_model("bad", testmodels.fail, key="x").wait(WAIT)
    coll.create_model("after", testmodels.norm)
    coll.create_watcher("after", "x", features={"x": "bad"}).wait(WAIT)
    result = coll.insert_one({"x": 5})
    with pytest.raises(JobFailedError) as info:
        result.jobs.wait(WAIT)
    assert "cannot handle 5" in str(info.value)
    assert "testmodels.py" in info.value.remote_traceback and "def fail" not in info.value.error
    assert result.jobs[0].status == "failed"
    with pytest.raises(JobFailedError, match="did not run"):
        result.jobs[1].wait(WAIT)
    assert coll.list_jobs(status="failed")


def test_updates_recompute_only_when_watched_keys_change(coll):
    coll.create_model("shout", testmodels.shout, key="text").wait(WAIT)
    _id = coll.insert_one({"text": "hi", "other": 1}).inserted_id
    assert coll.update_one({"_id": _id}, {"$set": {"other": 2}}).jobs.ids == []
    assert coll.update_one({"_id": _id}, {"$set": {"_outputs.note": 1}}).jobs.ids == []
    result = coll.update_one({"_id": _id}, {"$set": {"text": "bye"}})
    result.jobs.wait(WAIT)
    assert coll.find_one({"_id": _id})["_outputs"]["text"]["shout"] == "BYE"
    coll.replace_one({"_id": _id}, {"text": "again"}).jobs.wait(WAIT)
    assert coll.find_one({"_id": _id})["_outputs"]["text"]["shout"] == "AGAIN"
    assert coll.insert_one({"text": "quiet"}, refresh=False).jobs.ids == []


def test_bulk_write_submits_jobs(coll):
    from pymongo import InsertOne, UpdateOne

    coll.create_model("shout", testmodels.shout, key="text").wait(WAIT)
    a = {"text": "a"}
    coll.insert_one(a).jobs.wait(WAIT)
    result = coll.bulk_write([InsertOne({"text": "b"}), UpdateOne({"_id": a["_id"]}, {"$set": {"text": "c"}})])
    result.jobs.wait(WAIT)
    assert sorted(d["_outputs"]["text"]["shout"] for d in coll.find()) == ["B", "C"]


def test_job_logs_are_captured(coll):
    coll.create_model("shout", testmodels.shout, key="text").wait(WAIT)
    job = coll.insert_one({"text": "logged"}).jobs[0].wait(WAIT)
    assert any("shouting 'logged'" in line for line in job.logs())


def test_filtered_watcher_and_delete_watcher(coll):
    coll.create_model("shout", testmodels.shout)
    coll.create_watcher("shout", "text", filter={"lang": "en"}).wait(WAIT)
    coll.insert_many([{"text": "yes", "lang": "en"}, {"text": "no", "lang": "fr"}]).jobs.wait(WAIT)
    assert coll.count_documents({"_outputs.text.shout": {"$exists": True}}) == 1
    with pytest.raises(InUseError):
        coll.delete_model("shout")
    with pytest.raises(InUseError, match="force=True"):
        coll.delete_watcher("shout/text")
    coll.delete_watcher("shout/text", force=True)
    assert coll.count_documents({"_outputs.text.shout": {"$exists": True}}) == 0
    coll.delete_model("shout")
    assert coll.list_models() == []


def test_models_mapping_and_apply_model(coll):
    coll.create_model("norm", testmodels.norm)
    assert coll.models["norm"] is not None
    assert coll.apply_model("norm", [[3, 4]]) == [5.0]
    assert coll.apply_model("norm", [{"v": [6, 8]}], key="v") == [10.0]
    with pytest.raises(NotRegisteredError, match="Did you mean 'norm'"):
        coll.apply_model("nrom", [[1]])


def test_timeout_and_cancel(client, coll, tmp_path):
    if client.mode == "inline":
        pytest.skip("inline jobs finish before the write returns")
    gate = tmp_path / "open"
    coll.create_model("gate", testmodels.Gate(str(gate)), key="x").wait(WAIT)
    first = coll.insert_one({"x": 1}).jobs[0]
    with pytest.raises(JobTimeoutError):
        first.wait(timeout=0.2)
    assert first.status in ("pending", "running")
    gate.write_text("go")
    first.wait(WAIT)
    # cancel a job that waits behind a blocked one
    gate.unlink()
    blocking = coll.insert_one({"x": 2}).jobs[0]
    coll.create_model("after", testmodels.norm)
    coll.create_watcher("after", "x", features={"x": "gate"})
    result = coll.insert_one({"x": 3})
    result.jobs[1].cancel()
    with pytest.raises(JobCancelledError):
        result.jobs[1].wait(WAIT)
    gate.write_text("go")
    blocking.wait(WAIT)


def test_concurrent_writers(client, coll):
    coll.create_model("norm", testmodels.norm, key="x").wait(WAIT)
    groups, errors = [], []

    def writer(seed):
        try:
            for x in vectors(5, seed):
                groups.append(coll.insert_one({"x": x}).jobs)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors
    for g in groups:
        g.wait(WAIT)
    assert coll.count_documents({"_outputs.x.norm": {"$exists": True}}) == 20


def test_download_job_runs_before_models(coll, tmp_path):
    image = tmp_path / "a.txt"
    image.write_bytes(b"hello")
    coll.create_model("size", len)
    coll.create_watcher("size", "file").wait(WAIT)
    missing = tmp_path / "missing.txt"
    result = coll.insert_many([
        {"file": {"_content": {"url": image.as_uri(), "type": "bytes"}}},
        {"file": {"_content": {"url": missing.as_uri(), "type": "bytes"}}},
    ])
    result.jobs.wait(WAIT)
    download = result.jobs[0].record()
    assert download["kind"] == "download" and len(download["result"]["errors"]) == 1
    ok = coll.find_one({"_id": result.inserted_ids[0]})
    assert ok["file"] == b"hello" and ok["_outputs"]["file"]["size"] == 5
    bad = coll.find_one({"_id": result.inserted_ids[1]}, raw=True)
    assert "error" in bad["file"]["_content"] and "_outputs" not in bad


def test_killed_worker_loses_nothing(client, coll, tmp_path):
    if client.mode != "processes":
        pytest.skip("needs worker processes")
    coll.create_model("die_once", testmodels.DieOnce(str(tmp_path / "died")))
    coll.create_watcher("die_once", "v").wait(WAIT)
    result = coll.insert_many([{"v": i} for i in range(10)])
    result.jobs.wait(WAIT)
    assert (tmp_path / "died").exists()  # a worker really died mid-job
    docs = list(coll.find({}, {"v": 1, "_outputs": 1}))
    assert len(docs) == 10
    assert sorted(d["_outputs"]["v"]["die_once"] for d in docs) == [i * 10.0 for i in range(10)]
    assert result.jobs[0].status == "success"


def test_long_jobs_show_progress_when_waited_on(client, coll, capsys):
    if client.mode == "inline":
        pytest.skip("inline jobs finish before the write returns")
    coll.create_model("slow", testmodels.slow_identity, key="x").wait(WAIT)
    job = coll.insert_one({"x": 1}).jobs[0]
    job.wait(WAIT, progress=True)
    err = capsys.readouterr().err
    assert "model slow" in err and "100%" in err


def test_cancelling_a_running_job_stops_it_before_it_writes(client, coll, tmp_path):
    if client.mode == "inline":
        pytest.skip("inline jobs finish before the write returns")
    import time

    gate = tmp_path / "open"
    coll.create_model("gate", testmodels.Gate(str(gate)), key="x").wait(WAIT)
    job = coll.insert_one({"x": 1}).jobs[0]
    deadline = time.monotonic() + WAIT
    while job.status != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)
    job.cancel()
    gate.write_text("go")
    with pytest.raises(JobCancelledError):
        job.wait(WAIT)
    # the worker sees the cancellation, stops, and says so in the job's logs
    while not any("stopped: the job was cancelled" in line for line in job.logs()):
        assert time.monotonic() < deadline, "the worker never stopped the job"
        time.sleep(0.01)
    assert coll.count_documents({"_outputs.x.gate": {"$exists": True}}) == 0


def test_dependents_of_a_failed_job_are_recorded_without_waiting(client, coll):
    coll.create_model("bad", testmodels.fail, key="x").wait(WAIT)
    coll.create_model("after", testmodels.norm)
    coll.create_watcher("after", "x", features={"x": "bad"}).wait(WAIT)
    result = coll.insert_one({"x": 5})
    dependent = result.jobs[1]
    if dependent._future is not None:
        dependent._future.result(timeout=WAIT)  # the worker finished it; nobody waited on the handle
    assert dependent.record()["status"] == "failed"
    assert "did not run" in dependent.record()["error"]
