"""GPU workers: a model on a CUDA device requests the worker resource GPU, which only workers
started with ``superduperdb worker --gpu`` offer; ordinary jobs request ``cluster.job_resource``
so the master's worker stays free of them. Nothing here needs a GPU: the model says
``resources={'GPU': 1}`` (what ``device='cuda'`` or a module on a CUDA device imply, see
tests/unit/test_resources.py), and the worker offers the resource.

A local cluster of worker processes against the MongoDB-wire server (``server_uri``); the GPU
worker is a real ``superduperdb worker --gpu`` process joining it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import testmodels
from waiting import poll

import superduperdb

pytestmark = pytest.mark.integration

WAIT = 120
TESTS = Path(__file__).resolve().parents[1]


def states(dask_client, keys: list) -> dict:
    return dask_client.run_on_scheduler(testmodels.task_states, keys=keys)


@pytest.fixture
def client(server_uri, unique_name):
    client = superduperdb.connect(server_uri, cluster="local",
                                  config={"master.warm_up": False, "cluster.job_resource": "JOBS",
                                          "reconcile.interval": 0})
    yield client
    client.drop_database(unique_name)
    client.close()


def test_gpu_model_jobs_wait_for_a_gpu_worker_and_ordinary_jobs_request_the_job_resource(client, unique_name):
    coll = client[unique_name].docs
    dask_client = client.cluster.client
    coll.insert_many([{"x": float(i), "y": float(i)} for i in range(5)], refresh=False)
    plain = coll.create_model("plain", testmodels.identity, key="y")[0]
    gpu = coll.create_model("gpu", testmodels.identity, key="x", resources={"GPU": 1})[0]
    assert coll._metadata.get("watchers", "gpu/x")["resources"] == {"GPU": 1}
    plain.wait(WAIT)
    keys = [plain.record()["key"], gpu.record()["key"]]
    # the plain job ran on a worker offering JOBS; the GPU job waits: no worker offers GPU
    poll(lambda: states(dask_client, keys[1:]).get(keys[1], ("",))[0] == "no-worker", WAIT,
         "the GPU job to wait for a GPU worker")
    assert states(dask_client, keys[1:])[keys[1]][1] == {"GPU": 1.0}
    assert gpu.record()["status"] == "pending"
    ordinary = next(job for job in coll.insert_one({"y": 9.0}).jobs if job.record().get("model") == "plain")
    key = ordinary.record()["key"]
    known = states(dask_client, [key])  # (a finished task may be forgotten by the scheduler already)
    if key in known:
        assert known[key][1] == {"JOBS": 1.0}
    ordinary.wait(WAIT)
    ran_on = dask_client.scheduler_info(n_workers=-1)["workers"][ordinary.record()["worker"]]
    assert ran_on["resources"].get("JOBS")  # it ran on a worker offering the job resource

    env = {**os.environ, "SUPERDUPERDB_CLUSTER__ADDRESS": dask_client.scheduler.address,
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env = {k: v for k, v in env.items() if k != "SUPERDUPERDB_CLUSTER__JOB_RESOURCE"}
    worker = subprocess.Popen([sys.executable, "-m", "superduperdb", "worker", "--gpu", "--name", "gpu-worker"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def gpu_worker() -> dict | None:
            workers = dask_client.scheduler_info(n_workers=-1)["workers"].values()
            return next((w for w in workers if w.get("name") == "gpu-worker"), None)

        offered = poll(gpu_worker, WAIT, "the --gpu worker to join")
        assert offered["resources"] == {"GPU": 1}
        gpu.wait(WAIT)  # it ran there
        assert sorted(d["_outputs"]["x"]["gpu"] for d in coll.find({"x": {"$exists": True}})) == \
            [float(i) for i in range(5)]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)


def test_the_reconciler_computes_a_gpu_models_outputs_on_a_gpu_worker(client, unique_name):
    """reconcile() (and the periodic sweep: the same pass) computed every model's outputs on the worker
    running the pass, whatever the model's resources: a GPU model's outputs on the master's worker."""
    coll = client[unique_name].docs
    dask_client = client.cluster.client
    env = {**os.environ, "SUPERDUPERDB_CLUSTER__ADDRESS": dask_client.scheduler.address,
           "SUPERDUPERDB_TEST_GPU_WORKER": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env = {k: v for k, v in env.items() if k != "SUPERDUPERDB_CLUSTER__JOB_RESOURCE"}
    worker = subprocess.Popen([sys.executable, "-m", "superduperdb", "worker", "--gpu", "--name", "gpu-worker"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        poll(lambda: any(w.get("name") == "gpu-worker" for w in dask_client.scheduler_info(n_workers=-1)["workers"]
                         .values()), WAIT, "the --gpu worker to join")
        coll.insert_many([{"x": float(i)} for i in range(6)], refresh=False)
        coll.create_model("where", testmodels.which_worker, key="x", process_docs=False, resources={"GPU": 1})
        report = coll.reconcile(wait=True, timeout=WAIT).result()
        assert report["outputs_computed"] == 6, report
        assert [d["_outputs"]["x"]["where"] for d in coll.find({})] == ["gpu"] * 6
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)

