"""Registrations that fail, and deletions, leave nothing behind (on both stand-ins, jobs inline)."""

from __future__ import annotations

import numpy as np
import pytest
import testmodels

import superduperdb
from superduperdb.errors import JobFailedError

pytestmark = pytest.mark.integration

WAIT = 120


@pytest.fixture
def coll(backend):
    uri, name = backend
    client = superduperdb.connect(uri, cluster=None, config={"master.warm_up": False, "reconcile.interval": 0,
                                                            "data.assign_folds": False})
    yield client[name].docs
    client.drop_database(name)
    client.close()


def test_an_index_whose_first_load_fails_is_not_left_registered(coll):
    """An index over scalar outputs failed to load and stayed registered: every later write got a
    failing index job."""
    coll.insert_many([{"x": i} for i in range(3)])
    coll.create_model("inc", testmodels.increment, key="x").wait(WAIT)
    jobs = coll.create_semantic_index("scalars", ["inc"], ["x"])
    with pytest.raises(JobFailedError, match="'scalars' was not registered: its first load failed"):
        jobs.wait(WAIT)
    assert coll.list_semantic_indexes() == [] and coll.semantic_index is None
    later = coll.insert_one({"x": 10}).jobs
    later.wait(WAIT)  # no failing index job
    assert [j.record()["kind"] for j in later] == ["model"]
    assert coll.find_one({"x": 10})["_outputs"]["x"]["inc"] == 11
    # a good index registers as before, and becomes the default
    coll.create_model("id", testmodels.identity, key="v")
    coll.insert_many([{"v": np.eye(3)[i].astype("float32")} for i in range(3)]).jobs.wait(WAIT)
    coll.create_semantic_index("vectors", ["id"], ["v"]).wait(WAIT)
    assert coll.list_semantic_indexes() == ["vectors"] and coll.semantic_index == "vectors"


def test_forced_deletes_leave_no_empty_derived_fields(coll):
    """A forced delete of a model (its watcher, index and neighbourhood with it) left
    ``_outputs.<key>: {}``, ``_fingerprints.<key>: {}`` and ``_like: {}`` in every document."""
    coll.insert_many([{"v": np.eye(4)[i].astype("float32"), "x": i} for i in range(4)])
    before = {d["_id"]: sorted(d) for d in coll.find({}, raw=True)}
    coll.create_model("id", testmodels.identity, key="v", semantic_index="ix", neighbourhoods=[("near", 2)]).wait(WAIT)
    coll.create_model("inc", testmodels.increment, key="x").wait(WAIT)
    assert all(set(d) >= {"_outputs", "_fingerprints", "_like"} for d in coll.find({}, raw=True))
    coll.delete_model("id", force=True)
    after = list(coll.find({}, raw=True))
    assert all("_like" not in d and "v" not in d["_outputs"] and "v" not in d["_fingerprints"] for d in after), after
    coll.delete_watcher("inc/x", force=True)
    assert {d["_id"]: sorted(d) for d in coll.find({}, raw=True)} == before
