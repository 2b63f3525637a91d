"""Durability: outputs and indexes follow the data through lost workers, a lost master,
a database that goes away, and lost jobs.

Every test runs a local Dask cluster of worker *processes* against the
MongoDB-wire server (``server_uri``), and kills or cuts off real parts of it:

* a worker that held finished jobs' results (Dask recomputes them: the jobs
  must not run their model again);
* the master's worker, with two clients on one cluster (one new master, both
  clients use it, every new document is found);
* the database connection in the middle of a job (the job retries and
  completes; its record says so);
* a worker in the middle of a job that Dask then gives up on (the reconciler
  marks the job record lost).
"""

from __future__ import annotations

import contextlib
from typing import Any

import dask
import numpy as np
import pymongo
import pytest
import testmodels
from tcpproxy import TcpProxy
from waiting import poll

import superduperdb
from superduperdb.cli.status import master_info
from superduperdb.master.handle import DATASET, FUTURE, GENERATION

pytestmark = pytest.mark.integration

WAIT = 120
REPLACE_WAIT = 20  # a lost master is replaced in well under the 30 s a call to its dead worker can hang
DIM = 8
BASE_CONFIG = {"master.warm_up": False}




@pytest.fixture
def connect(server_uri, unique_name):
    """``connect(uri=None, cluster="local", **config)``: a client (closed, database dropped, at teardown)."""

    def drop_database() -> None:
        with pymongo.MongoClient(server_uri, serverSelectionTimeoutMS=10_000) as raw:
            raw.drop_database(unique_name)

    with contextlib.ExitStack() as teardown:  # every step runs, even after one fails
        teardown.callback(drop_database)

        def make(uri: str | None = None, cluster: Any = "local", **config: Any):
            client = superduperdb.connect(uri or server_uri, cluster=cluster, config={**BASE_CONFIG, **config})
            teardown.callback(client.close)  # last made, first closed: a shared cluster's owner closes last
            return client

        yield make


def workers_of(dask_client) -> set[tuple[str, str]]:
    """The cluster's workers, as ``(address, id)`` (a restarted worker may reuse an address)."""
    return set(dask_client.run_on_scheduler(testmodels.worker_ids).items())


def kill_workers(dask_client, addresses: set[str]) -> set[tuple[str, str]]:
    """Kill these worker processes (their nannies restart them); wait until the cluster has as
    many workers as before, none of them a killed one; return the killed ``(address, id)``."""
    before = workers_of(dask_client)
    killed = {w for w in before if w[0] in addresses}
    assert {a for a, _ in killed} == addresses, (addresses, before)
    dask_client.run(testmodels.exit_process, workers=sorted(addresses), wait=False)

    def replaced() -> bool:
        now = workers_of(dask_client)
        return len(now) == len(before) and not now & killed

    poll(replaced, WAIT, f"the cluster to replace the killed workers {sorted(addresses)}")
    return killed


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype("float32")


# -- 1. a worker killed after its jobs finished ------------------------------------------------
def test_killed_worker_after_jobs_finished_calls_the_model_no_more(connect, unique_name, tmp_path):
    """Dask recomputes the lost results of jobs whose futures the client holds; the jobs see
    their final records and return at once: not one more model call, records untouched."""
    calls = tmp_path / "calls"
    client = connect()
    coll = client[unique_name].docs
    coll.create_model("count", testmodels.CountCalls(str(calls)))
    coll.create_watcher("count", "v").wait(WAIT)
    groups = [coll.insert_many([{"v": 10 * i + j} for j in range(10)]).jobs for i in range(10)]
    jobs = [job for group in groups for job in group]
    assert len(jobs) == 10 and all(job._future is not None for job in jobs)
    for group in groups:
        group.wait(WAIT)
    assert testmodels.count_calls(calls) == 100
    assert coll.count_documents({"_outputs.v.count": {"$exists": True}}) == 100
    before = {job.id: job.record() for job in jobs}

    dask_client = client.cluster.client
    futures = [job._future for job in jobs]
    holders = dask_client.who_has(futures)
    held = {address for addresses in holders.values() for address in addresses}
    assert len(holders) == len(futures) and all(holders.values()), holders
    kill_workers(dask_client, held)

    outcomes = [future.result(timeout=WAIT) for future in futures]
    assert [o["status"] for o in outcomes] == ["success"] * len(jobs)
    # the results live on the new workers: they were recomputed
    recomputed = dask_client.who_has(futures)
    assert all(recomputed.values()) and set().union(*recomputed.values()) <= {a for a, _ in workers_of(dask_client)}
    assert testmodels.count_calls(calls) == 100
    assert {job.id: job.record() for job in jobs} == before  # every record still success, not even touched
    assert coll.count_documents({"_outputs.v.count": {"$exists": True}}) == 100


# -- 2. two clients, the master's worker killed --------------------------------------------------
def published_masters(dask_client) -> dict:
    """What the scheduler publishes about the master, and the master actors the workers hold."""
    held = dask_client.run(testmodels.held_actors)
    return {
        "datasets": sorted(name for name in dask_client.list_datasets() if name.startswith(DATASET)),
        "generation": dask_client.get_dataset(GENERATION),
        "actors": sorted(key for keys in held.values() for key in keys),
        "info": master_info(dask_client, 30),
    }


def test_two_clients_share_one_new_master_after_its_worker_dies(connect, unique_name):
    """Two clients on one cluster use its master; its worker dies; each client writes. The first
    job to need the master replaces it, once: both clients then use generation 2, the only
    master in the cluster, and find every new document, whoever wrote it."""
    a = connect()
    dask_client = a.cluster.client
    b = connect(cluster=dask_client.scheduler.address)
    coll_a, coll_b = a[unique_name].docs, b[unique_name].docs
    X = vectors(30, seed=0)
    coll_a.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    coll_a.create_model("ident", testmodels.identity)
    coll_a.create_semantic_index("vectors", models=["ident"], keys=["x"]).wait(WAIT)
    for coll in (coll_a, coll_b):  # both clients hold the master
        assert coll.find_one(like={"x": X[3]})["i"] == 3
    master_a, master_b = coll_a._services.indexes.master, coll_b._services.indexes.master
    assert master_a.generation == master_b.generation == 1
    address = master_a.worker()
    assert master_b.worker() == address

    kill_workers(dask_client, {address})
    new_a, new_b = vectors(5, seed=1) * 3, vectors(5, seed=2) * 3
    # The first index job finds the dead master published and replaces it at once (not after
    # Dask's 30 s connect timeout to the dead worker, which cluster.timeout would let it wait).
    coll_a.insert_many([{"x": x, "i": 100 + i} for i, x in enumerate(new_a)]).jobs.wait(REPLACE_WAIT)
    coll_b.insert_many([{"x": x, "i": 200 + i} for i, x in enumerate(new_b)]).jobs.wait(REPLACE_WAIT)

    for coll in (coll_a, coll_b):
        found = [coll.find_one(like={"x": x})["i"] for x in (*new_a, *new_b)]
        assert found == [*range(100, 105), *range(200, 205)]
        assert coll.find_one(like={"x": X[7]})["i"] == 7  # and the old documents
    assert master_a.generation == master_b.generation == 2
    assert master_a.info()["generation"] == 2
    assert master_a.worker() == master_b.worker() != address
    published = published_masters(dask_client)
    assert published["datasets"] == [DATASET, FUTURE, GENERATION]
    assert published["generation"] == 2
    assert len(published["actors"]) == 1, published  # one master in the whole cluster
    assert published["info"]["state"] == "running" and published["info"]["worker"] == master_a.worker()


# -- 3. the database cut off in the middle of a job -------------------------------------------
@pytest.fixture
def proxy(server_uri):
    """A :class:`TcpProxy` to the database server (``proxy.uri`` is the server's URI through it)."""
    host, port = pymongo.uri_parser.parse_uri(server_uri)["nodelist"][0]
    with TcpProxy((host, port)) as p:
        p.uri = f"mongodb://127.0.0.1:{p.port}/"
        yield p


def backing_off(dask_client, key: str) -> bool:
    """Whether the task ``key`` waits to retry a job the database interrupted (it sleeps in ``run_job``)."""
    stacks = dask_client.call_stack(keys=[key])
    return any(frames and "in run_job" in frames[-1] for tasks in stacks.values() for frames in tasks.values())


@pytest.mark.parametrize("interruptions", [1, 2], ids=["one-interruption", "two-interruptions"])
def test_database_cut_off_mid_job_then_restored(proxy, connect, unique_name, interruptions):
    """The database goes away while a backfill job runs, for one retry of the job or two; once it
    is back, the job completes every output, and its record tells each interruption."""
    n = 300
    client = connect(proxy.uri, **{"mongodb.timeout_ms": 2000, "jobs.retry_delay": 0.5, "jobs.chunk_size": 20,
                                    "reconcile.interval": 0})
    coll = client[unique_name].docs
    coll.insert_many([{"v": i} for i in range(n)], refresh=False)
    coll.create_model("sleepy", testmodels.Sleepy(0.02))
    job = coll.create_watcher("sleepy", "v")[0]
    poll(lambda: job.record()["progress"] > 0, WAIT, "the backfill job to make progress")

    # Cut off until a reconnection was refused and the job was interrupted (``interruptions``
    # times): pymongo hides a short outage (it waits up to mongodb.timeout_ms for the server), so
    # a cut restored at once may interrupt nothing. The job is seen waiting to retry through its
    # task's stack on the worker (Dask's call_stack), not through the database, which is away.
    dask_client = client.cluster.client
    key = job.record()["key"]
    proxy.cut()
    try:
        poll(lambda: proxy.refused > 0, WAIT, "a reconnection attempt while the database is cut off")
        for i in range(interruptions):
            if i:
                poll(lambda: not backing_off(dask_client, key), WAIT, "the job to try again")
            poll(lambda: backing_off(dask_client, key), WAIT, f"interruption {i + 1} of the job by the database")
    finally:
        proxy.restore()
    refused = proxy.refused

    job.wait(WAIT)
    record = job.record()
    assert record["status"] == "success"
    assert coll.count_documents({"_outputs.v.sleepy": {"$exists": True}}) == n
    assert sorted(d["_outputs"]["v"]["sleepy"] for d in coll.find({}, {"_outputs": 1})) == [float(i) for i in range(n)]
    assert refused > 0
    told = [line for line in record["logs"] if "interrupted by the database" in line]
    assert record["attempts"] >= interruptions + 1, record
    assert len(told) == record["attempts"] - 1, record["logs"]  # every interruption is in the record
    # the retry skipped the documents whose outputs the interrupted attempt had written
    assert record["result"]["computed"] < n, record["result"]


# -- 4. lost job records ----------------------------------------------------------------------------
def test_reconciler_marks_lost_job_records(connect, unique_name, tmp_path):
    """A job whose worker dies mid-run, and which Dask then gives up on, leaves its record
    ``running`` forever; the reconciler marks it failed ("lost:") and repairs its documents."""
    import distributed  # noqa: F401  (loads its config, which the override below must not replace)

    died = tmp_path / "died"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # read when the scheduler starts
        client = connect(**{"reconcile.lost_after": 0, "reconcile.interval": 0})
        dask_client = client.cluster.client
    coll = client[unique_name].docs
    coll.create_model("die_once", testmodels.DieOnce(str(died)))
    coll.create_watcher("die_once", "v").wait(WAIT)
    job = coll.insert_one({"v": 4}).jobs[0]
    key = job.record()["key"]
    future = job._future
    error = future.exception(timeout=WAIT)  # its worker died and Dask gave up: no retry
    assert type(error).__name__ == "KilledWorker" and died.exists(), error
    assert job.record()["status"] == "running"  # nobody wrote a final status

    del future
    job._future = None  # the client lets go of the task, so the scheduler forgets it
    poll(lambda: not dask_client.run_on_scheduler(testmodels.known_tasks, keys=[key]), WAIT,
         "the scheduler to forget the lost task")
    report = coll.reconcile(wait=True, timeout=WAIT).result()
    assert report["jobs_lost"] >= 1, report
    record = job.record()
    assert record["status"] == "failed" and record["error"].startswith("lost:"), record
    assert report["outputs_computed"] == 1  # and the reconciler computed the output the job did not
    assert coll.find_one({"v": 4})["_outputs"]["v"]["die_once"] == 40.0
