"""The master compiles pynndescent's JIT only when an index approaches ``master.exact_threshold``.

A small index (searched exactly, never a graph) leaves the JIT alone with the default
config; an index that reaches ``master.warm_up_at`` of the threshold starts it.
"""

from __future__ import annotations

import numpy as np
import pytest

import superduperdb

WAIT = 120


def index_stats(client, n):
    docs = client.db.docs
    docs.insert_many([{"v": np.random.default_rng(i).random(3).astype("float32")} for i in range(n)])
    docs.create_model("vec", lambda v: v, key="v").wait(WAIT)
    (stats,) = docs.create_semantic_index("v", models=["vec"], keys=["v"], measure="l2").result(WAIT)
    return docs, stats


def test_a_small_index_never_starts_the_warm_up(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster="local")  # its own master; warm_up on
    assert client.config.master.warm_up is True
    docs, stats = index_stats(client, 3)
    assert stats["size"] == 3 and stats["jit"] == "not needed yet"
    (stats,) = docs.insert_many([{"v": np.ones(3, dtype="float32")}]).jobs.result(WAIT)[-1:]
    assert stats is None or stats.get("jit", "not needed yet") == "not needed yet"
    assert len(list(docs.find(like={"v": np.ones(3, dtype="float32")}, n=2))) == 2
    client.close()


@pytest.mark.slow  # it compiles the JIT in this process (~45 s of one core)
def test_an_index_near_the_threshold_starts_the_warm_up(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster="local",
                                  config={"master.exact_threshold": 10, "master.warm_up_at": 0.5})
    _, stats = index_stats(client, 6)
    assert stats["jit"] in ("compiling", "compiled")
    client.close()
