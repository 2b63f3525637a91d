"""Filtered search through the public API, in every cluster mode: the planner's guarantees, ``explain()``'s
fields, and filter fields held in the index (answered in the master) giving the same answers as the store.

* ``inline`` (no cluster), ``threads`` (the embedded default's local cluster) and ``processes`` (worker
  processes against the MongoDB-wire server CongoDB), from ``mode_client``;
* three shards on the embedded default for the filter fields (each shard evaluates the filter over what it
  holds), and a restart of the master from its snapshot (the filter fields come back from it).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import testmodels
from waiting import poll

import superduperdb
from superduperdb.errors import SemanticIndexError

WAIT = 180
DIM = 8
LANGS = ["en", "fr", "de"]


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype("float32")


def document(i: int, x: np.ndarray, rng: random.Random) -> dict:
    doc = {"x": x, "i": i}
    if rng.random() < 0.9:
        doc["lang"] = rng.choice(LANGS)
    if rng.random() < 0.8:
        doc["year"] = rng.randrange(2000, 2010)
    if rng.random() < 0.5:
        doc["meta"] = {"n": rng.randrange(5)}
    return doc


def random_condition(rng: random.Random) -> dict:
    field = rng.choice(["lang", "year", "meta.n"])
    pick = {"lang": lambda: rng.choice(LANGS), "year": lambda: rng.randrange(1999, 2011),
            "meta.n": lambda: rng.randrange(-1, 6)}[field]
    kind = rng.choice(["eq", "$eq", "$in", "range", "$exists"])
    if kind == "eq":
        return {field: pick()}
    if kind == "$eq":
        return {field: {"$eq": pick()}}
    if kind == "$in":
        return {field: {"$in": [pick() for _ in range(rng.randrange(1, 4))]}}
    if kind == "$exists":
        return {field: {"$exists": rng.random() < 0.5}}
    ops = rng.sample(["$gt", "$gte", "$lt", "$lte"], rng.randrange(1, 3))
    return {field: {op: pick() for op in ops}}


def random_filter(rng: random.Random) -> dict:
    """A filter made of equality, $eq, $in, ranges, $exists, $and and $or on the filter fields."""
    shape = rng.choice(["one", "two", "and", "or", "nested"])
    if shape == "one":
        return random_condition(rng)
    if shape == "two":
        a, b = random_condition(rng), random_condition(rng)
        return {**a, **b} if not set(a) & set(b) else {"$and": [a, b]}
    if shape == "and":
        return {"$and": [random_condition(rng) for _ in range(rng.randrange(1, 4))]}
    if shape == "or":
        return {"$or": [random_condition(rng) for _ in range(rng.randrange(1, 4))]}
    return {"$or": [{"$and": [random_condition(rng), random_condition(rng)]}, random_condition(rng)]}


def ranked(hits: list[dict]) -> list[tuple]:
    return [(d["i"], round(d["_score"], 5)) for d in hits]


def build(coll, n: int = 240, seed: int = 0) -> tuple[random.Random, np.ndarray]:
    rng = random.Random(seed)
    X = vectors(n, seed)
    coll.insert_many([document(i, x, rng) for i, x in enumerate(X)])
    coll.create_model("ident", testmodels.identity)
    coll.create_semantic_index("held", models=["ident"], keys=["x"], filter_fields=["lang", "year", "meta.n"]
                               ).wait(WAIT)
    coll.create_semantic_index("plain", models=["ident"], keys=["x"]).wait(WAIT)
    return rng, X


def same_answers(coll, rng: random.Random, X: np.ndarray, rounds: int, n: int = 10) -> int:
    """Random filters answered by the index's filter fields and by the store give the same documents and
    scores; returns how many were answered in the index."""
    in_index = 0
    for _ in range(rounds):
        f = random_filter(rng)
        q = X[rng.randrange(len(X))] + 0.01
        cursor = coll.find(f, like={"x": q}, n=n, semantic_index="held")
        held = ranked(list(cursor))
        plan = cursor.explain()
        store = coll.find(f, like={"x": q}, n=n, semantic_index="plain")
        assert held == ranked(list(store)), (f, plan)
        assert plan["filter_in_index"] is True, f
        assert store.explain()["filter_in_index"] is False
        want = coll.count_documents(f)
        assert len(held) == min(n, want), (f, want)  # k results whenever k documents match
        in_index += 1
    return in_index


def random_writes(coll, rng: random.Random, X: np.ndarray, start: int) -> int:
    """Updates of filter fields (alone: no model job), inserts and deletes; each write's jobs waited for."""
    results = []
    for k in range(12):
        i = rng.randrange(start)
        what = rng.choice(["set", "unset", "many", "insert", "delete", "replace_field"])
        if what == "set":
            results.append(coll.update_one({"i": i}, {"$set": {"lang": rng.choice(LANGS), "year": 2011 + k}}))
        elif what == "unset":
            results.append(coll.update_one({"i": i}, {"$unset": {"year": ""}}))
        elif what == "many":
            results.append(coll.update_many({"lang": rng.choice(LANGS), "i": {"$lt": i}},
                                             {"$set": {"meta": {"n": rng.randrange(5)}}}))
        elif what == "insert":
            results.append(coll.insert_one(document(start, X[start % len(X)] * 1.5, rng)))
            start += 1
        elif what == "delete":
            results.append(coll.delete_one({"i": i}))
        else:
            results.append(coll.update_one({"i": i}, {"$set": {"lang": "xx"}}))
    for r in results:
        r.jobs.wait(WAIT)
    return start


def test_filter_fields_answer_as_the_store_through_random_filters_and_writes(coll):
    """The differential test: random filters on filter fields, answered in the master and by the store,
    give identical results, before and after random writes (updates of filter fields only, inserts,
    deletes), in each cluster mode."""
    rng, X = build(coll)
    assert same_answers(coll, rng, X, rounds=25) == 25
    start = len(X)
    for _ in range(2):
        start = random_writes(coll, rng, X, start)
        same_answers(coll, rng, X, rounds=15)


def test_explain_says_plan_selectivity_times_and_where_the_filter_was_answered(coll):
    rng, X = build(coll, n=200, seed=3)
    q = X[4]
    cursor = coll.find({"lang": "en"}, like={"x": q}, n=5, semantic_index="held")
    hits = list(cursor)
    plan = cursor.explain()
    matching = coll.count_documents({"lang": "en"})
    assert plan["filter_in_index"] is True and plan["filter_fields"] == ["lang", "year", "meta.n"]
    assert plan["filtered"] == matching and plan["selectivity"] == pytest.approx(matching / 200)
    assert plan["plan"] == "exact" and plan["retries"] == 0 and plan["candidates"] == matching
    for key in ("store_ms", "master_ms", "caller_ms", "total_ms"):
        assert plan[key] >= 0, key
    assert plan["total_ms"] >= plan["master_ms"] + plan["store_ms"] - 1e-6
    shard = plan["shards"][0]
    assert shard["plan"] == "exact" and shard["matched"] == matching and shard["filter_ms"] is not None
    assert shard["selectivity"] == pytest.approx(matching / 200)
    assert all(d["lang"] == "en" for d in hits) and len(hits) == 5
    # A filter on another field goes through the store: its ids, the same plan fields.
    other = coll.find({"i": {"$lt": 50}}, like={"x": q}, n=5, semantic_index="held")
    assert len(list(other)) == 5
    plan = other.explain()
    assert plan["filter_in_index"] is False and plan["filtered"] == 50 and plan["selectivity"] == 0.25
    assert plan["shards"][0]["matched"] == 50 and plan["shards"][0]["filter_ms"] is None
    # No filter: no selectivity, and similar_first keeps its meaning (the n most similar, then the filter).
    plain = coll.find({}, like={"x": q}, n=5, semantic_index="held")
    list(plain)
    assert plain.explain()["selectivity"] is None and plain.explain()["filter_in_index"] is False
    top = [d["i"] for d in coll.find({}, like={"x": q}, n=5, semantic_index="held")]
    first = [d["i"] for d in coll.find({"lang": "en"}, like={"x": q}, n=5, semantic_index="held",
                                       similar_first=True)]
    assert first == [i for i in top if coll.find_one({"i": i}).get("lang") == "en"]


def test_bad_filter_fields_are_refused_and_nothing_is_registered(coll):
    coll.insert_one({"x": vectors(1)[0], "lang": "en"})
    coll.create_model("ident", testmodels.identity)
    for bad in ("lang", ["$lang"], ["_id"], [""], ["lang", "lang"], [3]):
        with pytest.raises(SemanticIndexError, match="filter_fields"):
            coll.create_semantic_index("v", models=["ident"], keys=["x"], filter_fields=bad)
    assert coll.list_semantic_indexes() == []


# -- three shards, and a restart from the snapshot ------------------------------------------------
@pytest.fixture(scope="module")
def sharded():
    name = "ff" + np.random.default_rng().bytes(4).hex()
    client = superduperdb.connect(f"mongomock://{name}", cluster="local",
                                  config={"master.warm_up": False, "reconcile.interval": 0, "master.shards": 3,
                                          "master.position_lag": 1.0})
    yield client, name
    client.close()


def test_three_shards_each_answer_the_filter_fields_and_a_restart_keeps_them(sharded):
    client, name = sharded
    coll = client[name].docs
    rng, X = build(coll, n=300, seed=5)
    assert same_answers(coll, rng, X, rounds=10) == 10
    cursor = coll.find({"year": {"$gte": 2005}}, like={"x": X[0]}, n=10, semantic_index="held")
    list(cursor)
    plan = cursor.explain()
    assert len(plan["shards"]) == 3 and all(s["matched"] is not None for s in plan["shards"])
    assert plan["filtered"] == coll.count_documents({"year": {"$gte": 2005}})
    # Snapshots of every shard hold the filter fields; a new master loads them from there.
    coll.update_one({"i": 7}, {"$set": {"lang": "zz"}}).jobs.wait(WAIT)
    held = coll.find({"lang": "zz"}, like={"x": X[7]}, n=3, semantic_index="held")
    assert [d["i"] for d in held] == [7]
    indexes = coll._services.indexes
    master, row, target = indexes.master, indexes.get("held"), coll._services.scope.target
    master.snapshot(target, row)
    master.drop(target, row)  # every shard forgets the index: the next query loads the snapshots
    # Another program changes a filter field while no shard holds the index: no position, no job; the
    # digests checked after the load find its partition, and the shard re-reads the filter fields there.
    coll.raw.update_one({"i": 9}, {"$set": {"lang": "qq"}})
    again = coll.find({"lang": "zz"}, like={"x": X[7]}, n=3, semantic_index="held")
    assert [d["i"] for d in again] == [7]
    assert {s["source"] for s in again.explain()["shards"]} == {"snapshot"}, again.explain()["shards"]
    poll(lambda: [d["i"] for d in coll.find({"lang": "qq"}, like={"x": X[9]}, n=3, semantic_index="held")] == [9],
         WAIT, "the filter field changed while the index was not held")
    assert same_answers(coll, rng, X, rounds=5) == 5
