"""Semantic search through the public API, in every cluster mode (see test_jobs.py)."""

from __future__ import annotations

import bson
import numpy as np
import pytest
import testmodels
from waiting import poll

import superduperdb
from superduperdb.errors import DimensionMismatchError, InUseError, NotRegisteredError, SemanticIndexError
from superduperdb.master.snapshots import snapshot_name

WAIT = 120
DIM = 8


@pytest.fixture(scope="module")
def client(mode_client):
    return mode_client


def exact(X: np.ndarray, q: np.ndarray, rows: np.ndarray, n: int) -> list[int]:
    """Brute-force cosine top-n among ``rows`` (indices into X)."""
    Xn = X[rows] / np.linalg.norm(X[rows], axis=1, keepdims=True)
    scores = Xn @ (q / np.linalg.norm(q))
    return [int(rows[i]) for i in np.argsort(-scores, kind="stable")[:n]]


@pytest.fixture
def indexed(client, unique_name):
    coll = client[unique_name].docs
    X = np.random.default_rng(7).normal(size=(150, DIM)).astype("float32")
    coll.insert_many([{"x": x, "i": i, "group": i % 3} for i, x in enumerate(X)])
    coll.create_model("ident", testmodels.identity)
    coll.create_semantic_index("vectors", models=["ident"], keys=["x"]).wait(WAIT)
    yield coll, X
    client.drop_database(unique_name)


def ids_of(cursor) -> list[int]:
    return [d["i"] for d in cursor]


def test_like_returns_exact_neighbours_in_order_with_scores(indexed):
    coll, X = indexed
    q = X[10] + 0.05
    docs = list(coll.find(like={"x": q}, n=5))
    assert [d["i"] for d in docs] == exact(X, q, np.arange(len(X)), 5)
    scores = [d["_score"] for d in docs]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9
    assert isinstance(docs[0]["x"], np.ndarray)  # decoded documents


def test_filter_first_is_exact_among_matches(indexed):
    coll, X = indexed
    q = X[3]
    rows = np.array([i for i in range(len(X)) if i % 3 == 1])
    assert ids_of(coll.find({"group": 1}, like={"x": q}, n=10)) == exact(X, q, rows, 10)
    # n larger than the matches: all matches come back
    assert len(list(coll.find({"i": {"$lt": 4}}, like={"x": q}, n=10))) == 4


def test_similar_first_filters_the_top_candidates(indexed):
    coll, X = indexed
    q = X[3]
    top = exact(X, q, np.arange(len(X)), 10)
    got = ids_of(coll.find({"group": 0}, like={"x": q}, n=10, similar_first=True))
    assert got == [i for i in top if i % 3 == 0]


def test_original_like_operator_and_find_one(indexed):
    coll, X = indexed
    assert coll.find_one({"$like": {"document": {"x": X[42]}, "n": 1}})["i"] == 42
    assert coll.find_one({"group": 0}, like={"x": X[42]})["i"] == exact(X, X[42], np.arange(0, len(X), 3), 1)[0]


def test_like_by_id_uses_the_stored_vector(indexed):
    coll, X = indexed
    _id = coll.find_one({"i": 17})["_id"]
    assert ids_of(coll.find(like={"_id": _id}, n=3)) == exact(X, X[17], np.arange(len(X)), 3)


def test_read_your_writes_and_deletes(indexed):
    coll, X = indexed
    q = np.full(DIM, 9.0, dtype="float32")
    result = coll.insert_one({"x": q, "i": 1000, "group": 5})
    result.jobs.wait(WAIT)
    assert coll.find_one(like={"x": q})["i"] == 1000
    coll.delete_one({"i": 1000}).jobs.wait(WAIT)
    assert 1000 not in ids_of(coll.find(like={"x": q}, n=20))
    # an update moves the vector
    coll.update_one({"i": 5}, {"$set": {"x": q}}).jobs.wait(WAIT)
    assert coll.find_one(like={"x": q})["i"] == 5


def test_query_encoder_from_another_key(client, unique_name):
    coll = client[unique_name].docs
    X = np.random.default_rng(1).normal(size=(40, DIM)).astype("float32")
    coll.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    coll.create_model("ident", testmodels.identity)
    coll.create_model("pair", testmodels.first_two)
    coll.create_semantic_index("multi", models=["ident", "pair"], keys=["x", "pair"]).wait(WAIT)
    q = [3.0, -2.0]
    expected = exact(X, testmodels.first_two(q), np.arange(len(X)), 3)
    assert ids_of(coll.find(like={"pair": q}, n=3, semantic_index="multi")) == expected


def test_bad_input_is_refused_clearly(indexed):
    coll, X = indexed
    with pytest.raises(NotRegisteredError, match="Did you mean 'vectors'"):
        list(coll.find(like={"x": X[0]}, semantic_index="vector"))
    with pytest.raises(SemanticIndexError, match="keys"):
        list(coll.find(like={"text": "hello"}))
    with pytest.raises(DimensionMismatchError):
        list(coll.find(like={"x": np.ones(3)}))
    with pytest.raises(SemanticIndexError, match="positive"):
        list(coll.find(like={"x": X[0]}, n=0))
    with pytest.raises(SemanticIndexError, match="measure"):
        coll.create_semantic_index("bad", models=["ident"], keys=["x"], measure="hamming")
    assert coll.list_semantic_indexes() == ["vectors"]


def test_default_index_and_deletion(indexed):
    coll, X = indexed
    assert coll.semantic_index == "vectors"
    coll.create_model("other", testmodels.identity)
    coll.create_semantic_index("second", models=["other"], keys=["x"], measure="l2").wait(WAIT)
    assert coll.semantic_index == "vectors"
    coll.semantic_index = "second"
    assert coll.find_one(like={"x": X[8]})["_score"] == pytest.approx(0.0, abs=1e-4)  # -L2 distance to itself
    coll.delete_semantic_index("second")
    assert coll.semantic_index == "vectors"


def test_neighbourhoods(indexed):
    coll, X = indexed
    coll.create_neighbourhood("nn", n=3).wait(WAIT)
    doc = coll.find_one({"i": 12}, similar_join="nn")
    assert [d["i"] for d in doc["_like"]["nn"]] == exact(X, X[12], np.arange(len(X)), 4)[1:]
    q = X[12] * 1.001
    new = coll.insert_one({"x": q, "i": 500, "group": 0})
    new.jobs.wait(WAIT)
    assert coll.find_one({"i": 500})["_like"]["nn"][0] == coll.find_one({"i": 12})["_id"]
    with pytest.raises(InUseError):
        coll.delete_semantic_index("vectors")
    with pytest.raises(InUseError):
        coll.delete_neighbourhood("nn")
    coll.delete_neighbourhood("nn", force=True)
    assert coll.count_documents({"_like.nn": {"$exists": True}}) == 0


def test_killed_master_recovers_with_same_results(client, indexed):
    if client.mode != "processes":
        pytest.skip("needs worker processes")
    coll, X = indexed
    before = [(d["i"], round(d["_score"], 5)) for d in coll.find({"group": 2}, like={"x": X[1]}, n=5)]
    master = coll._services.indexes.master
    address = master.worker()
    dask_client = client.cluster.client
    dask_client.run(testmodels.exit_process, workers=[address], wait=False)
    after = [(d["i"], round(d["_score"], 5)) for d in coll.find({"group": 2}, like={"x": X[1]}, n=5)]
    assert after == before
    assert master.worker() is not None


def test_search_many_answers_each_like_as_find_does(indexed):
    coll, X = indexed
    _id = coll.find_one({"i": 17})["_id"]
    likes = [{"x": X[10] + 0.05}, {"_id": _id}, {"x": X[99]}]
    batch = coll.search_many(likes, n=4)
    assert [[d["i"] for d in docs] for docs in batch] == [ids_of(coll.find(like=like, n=4)) for like in likes]
    assert batch[1][0]["i"] == 17 and isinstance(batch[0][0]["x"], np.ndarray)
    assert all(d["_score"] >= e["_score"] for docs in batch for d, e in zip(docs, docs[1:]))
    rows = np.array([i for i in range(len(X)) if i % 3 == 1])
    filtered = coll.search_many([{"x": X[3]}, {"x": X[4]}], {"group": 1}, n=5, projection={"i": 1, "_id": 0})
    assert [[d["i"] for d in docs] for docs in filtered] == [exact(X, X[3], rows, 5), exact(X, X[4], rows, 5)]
    assert set(filtered[0][0]) == {"i", "_score"}
    assert coll.search_many([], n=3) == []
    assert coll.search_many([{"x": X[0]}], {"group": 99}, n=3) == [[]]


def test_search_many_bad_input(indexed):
    coll, X = indexed
    with pytest.raises(SemanticIndexError, match="list of documents"):
        coll.search_many({"x": X[0]})
    with pytest.raises(SemanticIndexError, match="search_many"):
        list(coll.find(like=[{"x": X[0]}, {"x": X[1]}]))
    with pytest.raises(SemanticIndexError, match="positive"):
        coll.search_many([{"x": X[0]}], n=0)
    with pytest.raises(SemanticIndexError, match="no vector"):
        coll.search_many([{"x": X[0]}, {"_id": bson.ObjectId()}])


def test_query_rows_are_cached_briefly_and_dropped_on_registration_changes(indexed):
    coll, X = indexed
    coll.create_model("neg", testmodels.identity)
    coll.create_semantic_index("second", models=["neg"], keys=["x"], measure="l2").wait(WAIT)
    assert coll.find_one(like={"x": X[8]})["_score"] == pytest.approx(1.0, abs=1e-4)  # cosine: "vectors"
    coll.semantic_index = "second"  # a change made here: seen at once
    assert coll.find_one(like={"x": X[8]})["_score"] == pytest.approx(0.0, abs=1e-4)  # -L2 distance to itself
    # another program switches the default back: seen once the short-lived cache expires
    coll.raw.database[f"{coll.raw.name}._meta"].update_one({"name": "semantic_index"}, {"$set": {"value": "vectors"}})
    poll(lambda: coll.find_one(like={"x": X[8]})["_score"] == pytest.approx(1.0, abs=1e-4), 10,
         "the default index set by another program to be used")
    coll.delete_semantic_index("second")
    with pytest.raises(NotRegisteredError):
        list(coll.find(like={"x": X[8]}, semantic_index="second"))


def restart_master(client, master, target, row) -> None:
    """A new master: its worker process killed (worker processes), else the index dropped from memory."""
    if client.mode == "processes":
        address = master.worker()
        client.cluster.client.run(testmodels.exit_process, workers=[address], wait=False)
        poll(lambda: address not in client.cluster.client.nthreads(), WAIT, "the master's worker to go")
    else:
        master.drop(target, row)


def index_stats(master, coll, name="vectors") -> dict:
    return [s for s in master.stats() if s["index"] == name and s["collection"] == f"{coll.database.name}.docs"][0]


def test_restarted_master_loads_the_snapshot_and_catches_up(client, indexed):
    """A new master loads the index's snapshot and reads only what changed since its write position
    (writes through the library: insert, update, delete); writes behind its back (raw insert and
    delete) are found by the digests, in the background, just after."""
    coll, X = indexed
    indexes = coll._services.indexes
    master, row, target = indexes.master, indexes.get("vectors"), coll._services.scope.target
    written = master.snapshot(target, row)
    assert written["vectors"] == len(X) and written["bytes"] > len(X) * DIM * 4
    q = np.full(DIM, 9.0, dtype="float32")
    coll.insert_one({"x": q, "i": 1000, "group": 5}).jobs.wait(WAIT)
    coll.update_one({"i": 5}, {"$set": {"x": -q}}).jobs.wait(WAIT)
    coll.delete_one({"i": 3}).jobs.wait(WAIT)
    raw = coll.raw  # another program: the master hears nothing of these
    copy = raw.find_one({"i": 11})
    copy.update(_id=bson.ObjectId(), i=2000)
    raw.insert_one(copy)
    gone = raw.find_one({"i": 9})["_id"]
    raw.delete_one({"_id": gone})

    restart_master(client, master, target, row)
    assert coll.find_one(like={"x": q})["i"] == 1000
    assert coll.find_one(like={"x": -q})["i"] == 5
    stats = index_stats(master, coll)
    assert stats["source"] == "snapshot", stats
    catch_up = stats["catch_up"]
    assert catch_up["mode"] == "position" and catch_up["as_of"]["behind"] > 0, catch_up
    assert {k: catch_up[k] for k in ("upserted", "removed")} == {"upserted": 2, "removed": 1}, catch_up
    poll(lambda: (index_stats(master, coll)["catch_up"] or {}).get("digests"), WAIT, "the digests to be checked")
    found = index_stats(master, coll)["catch_up"]["digests"]
    assert {k: found[k] for k in ("upserted", "removed")} == {"upserted": 1, "removed": 1}, found
    assert sorted(ids_of(coll.find(like={"x": X[11]}, n=2))) == [11, 2000]
    assert index_stats(master, coll)["size"] == len(X)
    assert master.vector_of(target, row, gone) is None  # deleted behind its back: gone from the index too
    expected = [i for i in exact(X, X[3], np.arange(len(X)), 12) if i not in (3, 5, 9)][:8]
    assert ids_of(coll.find(like={"x": X[3]}, n=8)) == expected


def test_unreadable_snapshot_falls_back_to_the_documents_and_deletion_removes_snapshots(indexed):
    coll, X = indexed
    indexes = coll._services.indexes
    master, row, target = indexes.master, indexes.get("vectors"), coll._services.scope.target
    master.snapshot(target, row)
    artifacts = coll._services.scope.artifacts
    assert artifacts.prune_named(snapshot_name(row)) >= 1
    artifacts.put_named(snapshot_name(row), b"not a pickle")  # the only version cannot be read
    master.drop(target, row)
    assert ids_of(coll.find(like={"x": X[4]}, n=3)) == exact(X, X[4], np.arange(len(X)), 3)
    stats = index_stats(master, coll)
    assert stats["source"] == "database" and stats["size"] == len(X)
    assert stats["snapshot_rejected"][0]["part"] == "header", stats["snapshot_rejected"]
    coll.delete_semantic_index("vectors")
    assert artifacts.info_named(snapshot_name(row)) is None


@pytest.mark.slow
def test_ann_path_recall_through_the_master(unique_name):
    """Past the exact threshold, queries go through the pynndescent graph: recall@10 >= 0.95."""
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None,
                                  config={"master.warm_up": False, "master.exact_threshold": 100})
    coll = client[unique_name].docs
    rng = np.random.default_rng(3)
    centres = rng.normal(scale=4.0, size=(30, 32))
    X = (centres[rng.integers(0, 30, size=3000)] + rng.normal(size=(3000, 32))).astype("float32")
    coll.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    coll.create_model("ident", testmodels.identity)
    coll.create_semantic_index("ann", models=["ident"], keys=["x"]).wait(WAIT)
    indexes = coll._services.indexes
    stats = indexes.master.rebuild(coll._services.scope.target, indexes.get("ann"), wait=True, timeout=600.0)
    assert stats["graph_size"] == 3000
    hits = 0
    queries = X[rng.choice(len(X), 30, replace=False)] + rng.normal(scale=0.1, size=(30, 32)).astype("float32")
    for q in queries:
        hits += len(set(ids_of(coll.find(like={"x": q}, n=10))) & set(exact(X, q, np.arange(len(X)), 10)))
    assert hits / (10 * len(queries)) >= 0.95
    client.close()
