"""A semantic index over several shards, through the public API, on real clusters.

* the embedded default with ``master.shards = 3`` (a local cluster of threads, one
  master worker per shard): answers equal exact search, with and without a filter,
  ``explain()`` lists the shards, index jobs reach only the owning shard;
* worker processes against the MongoDB-wire server: a shard's worker is killed while
  queries run (every answer complete, or flagged partial when asked; complete again
  after), and two clients across a scheduler restart (one live owner per shard);
* a batch ``apply_model`` split over the workers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pymongo
import pytest
import testmodels
from waiting import poll

import superduperdb
from superduperdb.cluster.local import ProcessCluster
from superduperdb.cluster.spec import ClusterSpec
from superduperdb.errors import ShardUnavailableError
from superduperdb.master import localcopy
from superduperdb.master.snapshots import snapshot_name
from superduperdb.store import shards as store
from superduperdb.store.partitions import partition_of

WAIT = 180
DIM = 8
BASE = {"master.warm_up": False, "reconcile.interval": 0}


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype("float32")


def exact(X: np.ndarray, q: np.ndarray, n: int, among: list[int] | None = None) -> list[int]:
    """The ``i`` of the ``n`` documents most cosine-similar to ``q`` (among ``among``)."""
    rows = np.arange(len(X)) if among is None else np.asarray(among)
    Y = X[rows]
    scores = Y @ q / (np.linalg.norm(Y, axis=1) * np.linalg.norm(q))
    return [int(rows[j]) for j in np.argsort(-scores, kind="stable")[:n]]


def index(coll, X: np.ndarray) -> None:
    coll.insert_many([{"x": x, "i": i, "g": i % 4} for i, x in enumerate(X)])
    coll.create_model("ident", testmodels.identity)
    coll.create_semantic_index("v", models=["ident"], keys=["x"]).wait(WAIT)


def live_owners(dask_client) -> Counter:
    """How many shard actors that have not retired exist, per shard, on every worker."""
    held = dask_client.run(testmodels.shard_owners)
    return Counter(shard for owners in held.values() for shard, _, retired in owners if not retired)


# -- the embedded default, three shards ---------------------------------------------------------
@pytest.fixture(scope="module")
def sharded():
    name = "sh" + np.random.default_rng().bytes(4).hex()
    client = superduperdb.connect(f"mongomock://{name}", cluster="local",
                                  config={**BASE, "master.shards": 3, "master.position_lag": 1.0})
    yield client, name
    client.close()


def test_three_shards_answer_as_exact_search_and_explain_each_shard(sharded):
    client, name = sharded
    coll = client[name].docs
    X = vectors(300)
    index(coll, X)
    for q in X[:5] + 0.1:
        cursor = coll.find(like={"x": q}, n=7)
        assert [d["i"] for d in cursor] == exact(X, q, 7)
        plan = cursor.explain()
        assert plan["partial"] is False and plan["index"] == "v"
        assert [s["shard"] for s in plan["shards"]] == [0, 1, 2]
        assert sum(s["size"] for s in plan["shards"]) == 300
        assert len({s["worker"] for s in plan["shards"]}) == 3  # each shard on its own worker
        assert all(s["plan"] == "exact" and s["candidates"] == s["size"] and s["epoch"] >= 1 and s["ms"] >= 0
                   for s in plan["shards"])
    # a filter's ids go to the shards that own them
    q = X[10] + 0.1
    cursor = coll.find({"g": 1}, like={"x": q}, n=5)
    assert [d["i"] for d in cursor] == exact(X, q, 5, [i for i in range(300) if i % 4 == 1])
    plan = cursor.explain()
    assert plan["filtered"] == 75 and sum(s["candidates"] for s in plan["shards"]) == 75
    # search_many: one call per shard for the batch
    hits = coll.search_many([{"x": X[1]}, {"x": X[2]}], n=1)
    assert [[d["i"] for d in h] for h in hits] == [[1], [2]]
    assert coll.find_one(like={"_id": coll.find_one({"i": 42})["_id"]})["i"] == 42


def test_index_jobs_reach_only_the_shard_that_owns_the_document(sharded):
    client, name = sharded
    coll = client[name].routed
    index(coll, vectors(60, seed=3))
    before = {s["shard"]: s["size"] for s in coll.find(like={"x": vectors(1)[0]}, n=1).explain()["shards"]}
    result = coll.insert_one({"x": vectors(1, seed=9)[0] * 5, "i": 1000, "g": 0})
    result.jobs.wait(WAIT)
    table = store.partition_table(store.shards_table(client[name]._raw, "routed"), 3)["table"]
    owner = table[partition_of(result.inserted_id)]
    index_job = [job for job in result.jobs if job.record()["kind"] == "index"][0]
    assert index_job.result()["shards"] == [owner]  # the job asked that shard only
    after = {s["shard"]: s["size"] for s in coll.find(like={"x": vectors(1)[0]}, n=1).explain()["shards"]}
    assert after == {**before, owner: before[owner] + 1}
    assert coll.find_one(like={"x": vectors(1, seed=9)[0]})["i"] == 1000
    coll.delete_many({"i": 1000}).jobs.wait(WAIT)
    final = {s["shard"]: s["size"] for s in coll.find(like={"x": vectors(1)[0]}, n=1).explain()["shards"]}
    assert final == before


def test_each_shard_restarts_from_its_own_snapshot_and_catches_up_over_its_own_partitions(sharded):
    """A shard is the unit that restarts: its own snapshot file (and local copy), a catch-up that reads
    only the documents and tombstones of its partitions, and ``as_of`` in its ``explain()`` entry."""
    client, name = sharded
    coll = client[name].restarted
    X = vectors(90, seed=21)
    index(coll, X)
    master, target = coll._services.indexes.master, coll._services.scope.target
    row = coll._services.indexes.get("v")
    saved = master.snapshot(target, row)
    assert [s["epoch"] for s in saved["shards"]] == [1, 1, 1] and saved["vectors"] == 90
    table = store.partition_table(store.shards_table(client[name]._raw, "restarted"), 3)["table"]
    files = coll._services.scope.artifacts.names_like(snapshot_name(row))
    assert sorted(files) == sorted(snapshot_name(row, store.partitions_of_shard(table, s)) for s in range(3))
    folder = localcopy.folder(coll._services.scope.config.master.snapshot_dir)
    assert all(localcopy.path_for(folder, target, row, store.partitions_of_shard(table, s)).exists() for s in range(3))

    new = vectors(6, seed=22) * 3
    inserted = coll.insert_many([{"x": x, "i": 900 + j, "g": 0} for j, x in enumerate(new)])
    inserted.jobs.wait(WAIT)
    gone = {d["_id"] for d in coll.find({"i": {"$in": [1, 2, 3]}}, {"_id": 1})}
    coll.delete_many({"i": {"$in": [1, 2, 3]}}).jobs.wait(WAIT)
    master.drop(target, row)  # every shard forgets the index: each loads it again, as a restarted actor would

    cursor = coll.find(like={"x": new[0]}, n=5)
    left = [i for i in range(90) if i not in (1, 2, 3)]
    ids, Y = [*left, *range(900, 906)], np.vstack([X[left], new])
    assert [d["i"] for d in cursor] == [ids[j] for j in exact(Y, new[0], 5)]
    plan = cursor.explain()
    assert [s["source"] for s in plan["shards"]] == ["snapshot"] * 3
    assert all(s["as_of"]["behind"] > 0 for s in plan["shards"])
    stats = {s["shard"]: s for s in master.stats() if s["index"] == "v" and s["collection"].endswith(".restarted")}
    shard_of = {_id: table[partition_of(_id)] for _id in [*inserted.inserted_ids, *gone]}
    for shard, s in stats.items():
        catch_up = s["catch_up"]
        assert catch_up["mode"] == "position" and catch_up["snapshot_from"] == "local", catch_up
        mine_new = sum(1 for _id in inserted.inserted_ids if shard_of[_id] == shard)
        mine_gone = sum(1 for _id in gone if shard_of[_id] == shard)
        # only its own partitions were read: its new documents, its tombstones
        assert (catch_up["read"], catch_up["tombstones"]) == (mine_new, mine_gone), (shard, catch_up)
        assert (catch_up["upserted"], catch_up["removed"]) == (mine_new, mine_gone), (shard, catch_up)
    assert sum(s["size"] for s in stats.values()) == 90 - 3 + 6
    for q in [*new[1:3], *X[10:12]]:
        assert [d["i"] for d in coll.find(like={"x": q}, n=4)] == [ids[j] for j in exact(Y, q, 4)]


def test_a_shard_still_loading_is_left_out_with_allow_partial_and_waited_for_without(sharded):
    client, name = sharded
    coll = client[name].loading
    X = vectors(120, seed=31)
    index(coll, X)
    master, target = coll._services.indexes.master, coll._services.scope.target
    row = coll._services.indexes.get("v")
    coll.find_one(like={"x": X[0]})
    master.call_shard(1, "drop", target, row)  # shard 1 loads the index again on its next call
    cursor = coll.find(like={"x": X[5]}, n=3, allow_partial=True)
    plan = cursor.explain()
    assert plan["partial"] is True and plan["missing"] == [1], plan
    entry = plan["shards"][1]
    assert entry["missing"] and entry["loading"]["phase"] in ("starting", "lease", "snapshot", "catch-up",
                                                               "documents"), entry
    table = store.partition_table(store.shards_table(client[name]._raw, "loading"), 3)["table"]
    ids = {d["_id"]: d["i"] for d in coll.find({}, {"i": 1})}
    others = [i for _id, i in ids.items() if table[partition_of(_id)] != 1]
    assert [d["i"] for d in cursor] == exact(X, X[5], 3, others)  # flagged, and right for the shards that answered
    complete = coll.find(like={"x": X[5]}, n=3)  # without allow_partial: waits for the load
    assert [d["i"] for d in complete] == exact(X, X[5], 3) and complete.explain()["partial"] is False


# -- worker processes and the wire server ----------------------------------------------------------
@pytest.fixture
def connect(server_uri, unique_name):
    """``connect(cluster="local", **config)``: a client (closed, database dropped, at teardown)."""
    with contextlib.ExitStack() as teardown:
        teardown.callback(lambda: pymongo.MongoClient(server_uri).drop_database(unique_name))

        def make(cluster: Any = "local", **config: Any):
            client = superduperdb.connect(server_uri, cluster=cluster, config={**BASE, **config})
            teardown.callback(client.close)
            return client

        yield make


@pytest.mark.integration
def test_a_killed_shard_worker_never_gives_a_silently_short_answer(connect, unique_name):
    client = connect(**{"master.shards": 2, "master.lease_ttl": 5, "master.shard_wait": 120,
                        "master.position_lag": 1.0})
    coll = client[unique_name].docs
    X = vectors(120)
    index(coll, X)
    coll._services.indexes.master.snapshot(coll._services.scope.target, coll._services.indexes.get("v"))
    plan = coll.find(like={"x": X[0]}, n=3).explain()
    workers = {s["shard"]: s["worker"] for s in plan["shards"]}
    assert len(set(workers.values())) == 2
    ids = {d["_id"]: d["i"] for d in coll.find({}, {"i": 1})}
    table = store.partition_table(store.shards_table(client[unique_name]._raw, "docs"), 2)["table"]
    shard_of = {i: table[partition_of(_id)] for _id, i in ids.items()}
    dask_client = client.cluster.client
    dask_client.run(testmodels.exit_process, workers=[workers[1]], wait=False)

    partial = complete_after = 0
    for k in range(60):
        q = X[k % 120] + 0.05
        allow = k % 2 == 0
        try:
            cursor = coll.find(like={"x": q}, n=5, allow_partial=allow)
        except ShardUnavailableError:  # pragma: no cover - shard_wait is long enough here
            pytest.fail("a lost shard was not re-created within master.shard_wait")
        got = [d["i"] for d in cursor]
        info = cursor.explain()
        if info["partial"]:
            assert allow and info["missing"] == [1]
            assert got == exact(X, q, 5, [i for i in range(120) if shard_of[i] != 1])  # flagged, and right for the rest
            partial += 1
        else:
            assert got == exact(X, q, 5)  # complete
            complete_after += 1
    assert complete_after > 0
    poll(lambda: live_owners(dask_client) == Counter({0: 1, 1: 1}), WAIT, "one live owner per shard")
    new = coll.find(like={"x": X[0]}, n=3).explain()["shards"]
    assert new[1]["worker"] != workers[1] and new[1]["epoch"] > plan["shards"][1]["epoch"]
    # the new owner of shard 1 loaded shard 1's snapshot (written by the epoch before) and caught up from it
    assert new[1]["source"] == "snapshot" and new[1]["as_of"]["position"] is not None, new[1]
    assert new[0]["epoch"] == plan["shards"][0]["epoch"]  # shard 0 was not touched


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.slow
def test_two_clients_and_a_scheduler_restart_keep_one_owner_per_shard(connect, unique_name, tmp_path):
    spec = ClusterSpec(port=free_port(), n_workers=1, shards=2, dashboard_address=None)
    tests = str(Path(__file__).resolve().parent.parent)  # the workers import testmodels
    env = {"PYTHONPATH": os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)}
    with ProcessCluster(spec, log_dir=tmp_path, env=env) as cluster:
        config = {"master.shards": 2, "master.lease_ttl": 5, "cluster.timeout": 60}
        a, b = connect(cluster.address, **config), connect(cluster.address, **config)
        coll_a, coll_b = a[unique_name].docs, b[unique_name].docs
        X = vectors(80)
        index(coll_a, X)

        def both_answer() -> bool:
            answers: list = []

            def ask(coll, q):
                answers.append([d["i"] for d in coll.find(like={"x": q}, n=3)])

            threads = [threading.Thread(target=ask, args=(c, X[j])) for j, c in enumerate((coll_a, coll_b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(WAIT)
            return answers and sorted(answers) == sorted([exact(X, X[0], 3), exact(X, X[1], 3)])

        assert both_answer()
        dask_client = a.cluster.client
        assert live_owners(dask_client) == Counter({0: 1, 1: 1})
        epochs = store.epochs(store.shards_table(a[unique_name]._raw, "docs"))

        cluster.restart_scheduler(timeout=WAIT)
        poll(lambda: _quietly(both_answer), WAIT, "both clients to answer after the scheduler restart", interval=1)
        assert live_owners(dask_client) == Counter({0: 1, 1: 1})
        after = store.epochs(store.shards_table(a[unique_name]._raw, "docs"))
        assert all(after[s] == epochs[s] + 1 for s in (0, 1)), (epochs, after)  # one new owner each
        new = vectors(3, seed=99)
        coll_b.insert_many([{"x": x, "i": 500 + j, "g": 0} for j, x in enumerate(new)]).jobs.wait(WAIT)
        assert [coll_a.find_one(like={"x": x})["i"] for x in new] == [500, 501, 502]


def _quietly(check) -> bool:
    try:
        return check()
    except Exception:  # noqa: BLE001 - the cluster is coming back: ask again
        return False


@pytest.mark.integration
def test_batch_apply_model_runs_partitions_on_several_workers(connect, unique_name):
    client = connect(**{"jobs.chunk_size": 10})
    coll = client[unique_name].docs
    coll.insert_many([{"i": i, "text": "ab" * i} for i in range(40)])
    coll.create_model("shout", testmodels.shout, batch_size=4)
    out = coll.apply_model("shout", filter={}, key="text", progress=False)
    by_id = {d["_id"]: d["i"] for d in coll.find({}, {"i": 1})}
    assert {by_id[k]: v for k, v in out.items()} == {i: "AB" * i for i in range(40)}
    records = coll.list_jobs(kind="apply")
    assert len(records) == 2 and sorted(r["partition"] for r in records) == [0, 1]
    assert sum(r["result"]["applied"] for r in records) == 40
    group = coll.apply_model("shout", filter={"i": {"$gte": 5}}, key="text", write=True, progress=False)
    assert len(group) == 2 and all(s == "success" for s in group.status.values())
    assert coll.count_documents({"_outputs.text.shout": {"$exists": True}}) == 35


def test_shards_wait_for_a_worker_then_spread_out_as_master_workers_join(unique_name):
    """A cluster without workers: registering waits for one (not MasterUnavailableError at once);
    both shards start on the only master worker, and move apart when a second one joins."""
    import distributed

    with distributed.LocalCluster(n_workers=0, processes=False, threads_per_worker=2, resources={"MASTER": 1},
                                  dashboard_address=":0") as local:
        client = superduperdb.connect(f"mongomock://{unique_name}", cluster=local.scheduler_address,
                                      config={**BASE, "master.shards": 2, "cluster.timeout": 120})
        try:
            coll = client[unique_name].docs
            X = vectors(50, seed=5)
            coll.insert_many([{"x": x, "i": i, "g": 0} for i, x in enumerate(X)])
            coll.create_model("ident", testmodels.identity)
            joins = threading.Timer(1.0, lambda: local.scale(1))  # a worker joins a second later
            joins.start()
            coll.create_semantic_index("v", models=["ident"], keys=["x"]).wait(WAIT)
            joins.join()
            plan = coll.find(like={"x": X[3]}, n=3).explain()
            assert len({s["worker"] for s in plan["shards"]}) == 1
            local.scale(2)
            client.cluster.client.wait_for_workers(2, timeout=WAIT)
            master = coll._services.indexes.master
            assert master.balance(force=True) == 1
            cursor = coll.find(like={"x": X[3]}, n=3)
            assert [d["i"] for d in cursor] == exact(X, X[3], 3)
            plan = cursor.explain()
            assert len({s["worker"] for s in plan["shards"]}) == 2 and plan["shards"][1]["epoch"] == 2
            assert master.balance(force=True) is None  # nothing left to spread
        finally:
            client.close()
