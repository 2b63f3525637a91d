"""Kills of the master's worker in a loop (worker processes, the MongoDB-wire server).

Every first answer after a kill must come, and be exact: the handle probes the dead worker's
port instead of waiting for Dask's connect timeout, never places a shard on a worker it saw
die, and a shard whose creation was pinned to a worker that dies meanwhile is created on
another one (such a creation would otherwise wait for that worker for ``cluster.timeout``:
the task may only run there, and the worker comes back, if at all, under another address).
Half of the kills here are aimed at exactly that moment: the worker on which the replacement
of the shard just killed is being created.

Dask's ``LocalCluster`` closes a worker's nanny for good when the worker is still down
``distributed.deploy.lost-worker-timeout`` (15 s) after it left; a loop that kills every
second or two hits that, so the loop runs with a longer timeout: what is tested is the
library, not how long Dask keeps a worker that keeps dying.
"""

from __future__ import annotations

import threading

import dask
import numpy as np
import pymongo
import pytest
import testmodels
from waiting import poll

import superduperdb

WAIT = 120
DIM = 8
KILLS = 8


def exact(X: np.ndarray, q: np.ndarray, n: int) -> list[int]:
    scores = X @ q / (np.linalg.norm(X, axis=1) * np.linalg.norm(q))
    return [int(j) for j in np.argsort(-scores, kind="stable")[:n]]


@pytest.mark.integration
def test_every_kill_of_the_master_worker_is_answered_exactly_even_mid_replacement(server_uri, unique_name):
    X = np.random.default_rng(4).normal(size=(150, DIM)).astype("float32")
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "10 minutes"}):
        client = superduperdb.connect(server_uri, cluster="local", config={
            "master.warm_up": False, "reconcile.interval": 0, "master.position_lag": 1.0,
            "cluster.timeout": 30})  # a replacement that waits for a gone worker fails after this long
        try:
            coll = client[unique_name].docs
            coll.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
            coll.create_model("ident", testmodels.identity)
            coll.create_semantic_index("v", models=["ident"], keys=["x"]).wait(WAIT)
            master = coll._services.indexes.master
            dask_client = client.cluster.client
            aimed = 0
            for kill in range(KILLS):
                q = X[kill] + 0.05
                dask_client.run(testmodels.exit_process, workers=[master.worker()], wait=False)
                answer: dict = {}

                def ask(q=q, answer=answer) -> None:
                    try:
                        answer["i"] = [d["i"] for d in coll.find(like={"x": q}, n=5)]
                    except Exception as exc:  # noqa: BLE001 - reported below
                        answer["error"] = exc

                thread = threading.Thread(target=ask)
                thread.start()
                if kill % 2:  # kill the worker the replacement is being created on, as it starts
                    starting = poll(lambda t=thread: dask_client.run_on_scheduler(testmodels.starting_masters)
                                    or not t.is_alive(), WAIT, "a replacement to start", interval=0.01)
                    if starting is not True:
                        dask_client.run(testmodels.exit_process, workers=starting[:1], wait=False)
                        aimed += 1
                thread.join(WAIT)
                assert not thread.is_alive(), f"no answer after kill {kill}"
                assert "error" not in answer, f"kill {kill}: {answer.get('error')!r}"
                assert answer["i"] == exact(X, q, 5)
            assert aimed >= 1  # at least one kill hit a replacement as it started
        finally:
            client.close()
            pymongo.MongoClient(server_uri).drop_database(unique_name)
