"""Outputs and indexes follow the data, whoever writes it and whatever is kept of the results.

Each test runs on the embedded default (mongomock, a local cluster of threads)
and on a local cluster of worker processes against the MongoDB-wire server.
The clients of the module have the periodic sweep off (``reconcile.interval:
0``), so that what the fast path (the jobs each write submits) gets right is
seen on its own; the sweep has tests of its own, with a client that sweeps.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pymongo
import pytest
import testmodels
from pymongo import InsertOne, ReturnDocument
from pymongo.errors import BulkWriteError
from waiting import poll

import superduperdb
from superduperdb.errors import InUseError, SemanticIndexError

pytestmark = pytest.mark.integration

WAIT = 120
DIM = 8
QUIET = {"master.warm_up": False, "reconcile.interval": 0}




def connect(store: str, server_uri_factory, config: dict):
    if store == "embedded":
        return superduperdb.connect(f"mongomock://c{uuid.uuid4().hex[:8]}", cluster="local", config=config)
    return superduperdb.connect(server_uri_factory(), cluster="local", config=config)


@pytest.fixture(scope="module", params=["embedded", "processes"])
def store(request):
    return request.param


@pytest.fixture(scope="module")
def client(store, request):
    client = connect(store, lambda: request.getfixturevalue("server_uri"), QUIET)
    client.store = store
    yield client
    client.close()



def vec(seed) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=DIM).astype("float32")


def indexed(coll, name: str = "ix"):
    """A watcher ``ident/x`` (identity on the vector ``x``) and a cosine index over it."""
    coll.create_model("ident", testmodels.identity, key="x").wait(WAIT)
    coll.create_semantic_index(name, models=["ident"], keys=["x"]).wait(WAIT)


def output(coll, _id, key="x", model="ident"):
    doc = coll.find_one({"_id": _id})
    return None if doc is None else (doc.get("_outputs") or {}).get(key, {}).get(model)


def nearest(coll, x, n=1) -> list:
    return [d["_id"] for d in coll.find(like={"x": x}, n=n)]


def unfinished(coll) -> int:
    return coll["_jobs"].count_documents({"status": {"$in": ["pending", "running"]}})


def index_size(coll, name: str = "ix") -> int:
    indexes = coll._services.indexes
    stats = indexes.master.ensure(coll._services.scope.target, indexes.get(name))
    return stats["size"]


# -- results dropped ----------------------------------------------------------------------------
def test_mixed_writes_with_results_dropped_leave_exactly_the_current_state(coll):
    indexed(coll)
    rng = np.random.default_rng(7)
    live: dict[int, np.ndarray] = {}
    for i in range(80):
        x = vec(i)
        coll.insert_one({"i": i, "x": x})  # the result is dropped, as most pymongo code does
        live[i] = x
    for step in range(120):
        i = int(rng.choice(sorted(live)))
        kind = step % 4
        if kind == 0:
            live[i] = vec(1000 + step)
            coll.update_one({"i": i}, {"$set": {"x": live[i]}})
        elif kind == 1:
            live[i] = vec(2000 + step)
            coll.replace_one({"i": i}, {"i": i, "x": live[i]})
        elif kind == 2:
            coll.delete_one({"i": i})
            del live[i]
        else:
            j = 100 + step
            live[j] = vec(3000 + step)
            coll.insert_one({"i": j, "x": live[j]})
    poll(lambda: unfinished(coll) == 0, WAIT, "every job to finish")
    statuses = {r["status"] for r in coll["_jobs"].find({}, {"status": 1})}
    assert statuses == {"success"}

    assert coll.count_documents({}) == len(live)
    for doc in coll.find({}):
        np.testing.assert_allclose(doc["_outputs"]["x"]["ident"], live[doc["i"]], rtol=1e-6)
    report = coll.reconcile(wait=True, timeout=WAIT).result()
    assert report["outputs_computed"] == report["outputs_removed"] == 0, report  # the fast path did it all
    assert report["index_upserted"] == report["index_removed"] == 0, report
    assert index_size(coll) == len(live)
    ids = {d["i"]: d["_id"] for d in coll.find({}, {"i": 1})}
    for i, x in live.items():
        assert nearest(coll, x) == [ids[i]]


# -- other programs ---------------------------------------------------------------------------------
def plain_collection(client, coll):
    """The same collection through a plain pymongo client (the embedded store: its raw client)."""
    if client.store == "embedded":
        return client.raw[coll.database.name][coll.name], None
    other = pymongo.MongoClient(client.uri)
    return other[coll.database.name][coll.name], other


def test_reconcile_picks_up_writes_of_another_program(client, coll):
    indexed(coll)
    plain, other = plain_collection(client, coll)
    try:
        xs = {i: vec(i) for i in range(30)}
        plain.insert_many([{"i": i, "x": x.tolist()} for i, x in xs.items()])
        report = coll.reconcile(wait=True, timeout=WAIT).result()
        assert report["outputs_computed"] == 30 and report["index_upserted"] == 30, report
        for doc in coll.find({}):
            np.testing.assert_allclose(doc["_outputs"]["x"]["ident"], xs[doc["i"]], rtol=1e-6)
        ids = {d["i"]: d["_id"] for d in coll.find({}, {"i": 1})}
        assert nearest(coll, xs[3]) == [ids[3]]

        moved = vec(99)
        plain.update_one({"i": 3}, {"$set": {"x": moved.tolist()}})
        plain.delete_one({"i": 4})
        report = coll.reconcile(wait=True, timeout=WAIT).result()
        assert report["outputs_computed"] == 1 and report["index_upserted"] == 1 and report["index_removed"] == 1
        np.testing.assert_allclose(output(coll, ids[3]), moved, rtol=1e-6)
        assert nearest(coll, moved) == [ids[3]]
        assert ids[4] not in nearest(coll, xs[4], n=30)
        assert index_size(coll) == 29
        again = coll.reconcile(wait=True, timeout=WAIT).result()
        assert again["outputs_computed"] == again["index_upserted"] == again["index_removed"] == 0
    finally:
        if other is not None:
            other.close()


@pytest.mark.slow
def test_the_sweep_repairs_writes_of_another_program_by_itself(store, request, unique_name):
    sweeping = connect(store, lambda: request.getfixturevalue("server_uri"),
                       {"master.warm_up": False, "reconcile.interval": 0.5})
    sweeping.store = store
    try:
        coll = sweeping[unique_name].docs
        indexed(coll)
        plain, other = plain_collection(sweeping, coll)
        xs = {i: vec(i) for i in range(100)}
        plain.insert_many([{"i": i, "x": x.tolist()} for i, x in xs.items()])
        poll(lambda: coll.count_documents({"_outputs.x.ident": {"$exists": True}}) == 100, WAIT,
             "the sweep to compute the outputs of 100 documents written by another program")
        poll(lambda: index_size(coll) == 100, WAIT, "the index to hold them")
        ids = {d["i"]: d["_id"] for d in coll.find({}, {"i": 1})}
        assert nearest(coll, xs[17]) == [ids[17]]

        moved = vec(1234)
        plain.update_one({"i": 17}, {"$set": {"x": moved.tolist()}})
        plain.delete_many({"i": {"$lt": 10}})
        poll(lambda: nearest(coll, moved) == [ids[17]], WAIT, "the updated vector to be searchable")
        poll(lambda: index_size(coll) == 90, WAIT, "the deleted documents to leave the index")
        # The sweep goes on by itself, every 0.5 s, and its passes succeed. (A pass reads only the partitions
        # whose digests changed since the last: once repaired, documents_checked may be 0.)
        key = f"{coll.database.name}.{coll.name}"
        repaired_at = time.time()
        poll(lambda: coll._services.indexes.master.reconciler()[key].get("at", 0) > repaired_at, WAIT,
             "another sweep after the repair")
        stats = coll._services.indexes.master.reconciler()[key]
        assert stats["interval"] == 0.5 and "error" not in stats and "documents_checked" in stats["report"]
        # Neither stand-in has change streams: the sweep is the trigger, and the stats say why.
        assert stats["change_stream"].startswith("unavailable")
        if other is not None:
            other.close()
    finally:
        sweeping.drop_database(unique_name)
        sweeping.close()


@pytest.mark.slow
def test_the_sweep_waits_while_this_programs_jobs_write_then_repairs(store, request, unique_name):
    """A sweep during a backfill would compute the same outputs twice: it waits for the jobs
    (reconcile.defer), then repairs what another program wrote meanwhile."""
    if store != "embedded":
        pytest.skip("one store is enough: the deferral reads only job records")
    sweeping = connect(store, lambda: request.getfixturevalue("server_uri"),
                       {"master.warm_up": False, "reconcile.interval": 0.5, "reconcile.defer": 60})
    sweeping.store = store
    try:
        coll = sweeping[unique_name].docs
        coll.insert_many([{"x": float(i)} for i in range(150)])
        backfill = coll.create_model("slow", testmodels.Sleepy(0.05), key="x")  # ~8 s of work
        key = f"{coll.database.name}.{coll.name}"
        stats = lambda: coll._services.indexes.master.reconciler().get(key, {})  # noqa: E731
        poll(lambda: (stats().get("report") or {}).get("deferred") == 1, WAIT, "a sweep to wait for the backfill")
        assert backfill.status != "success"  # it waited while the jobs ran
        plain, other = plain_collection(sweeping, coll)
        plain.insert_one({"x": 1000.0})  # another program: no job
        backfill.wait(WAIT)
        poll(lambda: output(coll, coll.find_one({"x": 1000.0})["_id"], model="slow") == 1000.0, WAIT,
             "the sweep to repair the other program's write once the jobs are done")
        if other is not None:
            other.close()
    finally:
        sweeping.drop_database(unique_name)
        sweeping.close()


# -- the write paths, one by one ------------------------------------------------------------------
def test_unset_of_the_watched_key_removes_the_output_and_the_vector(coll):
    indexed(coll)
    coll.insert_many([{"i": i, "x": vec(i)} for i in range(5)]).jobs.wait(WAIT)
    target = coll.find_one({"i": 2})["_id"]
    coll.update_one({"_id": target}, {"$unset": {"x": ""}}).jobs.wait(WAIT)
    assert output(coll, target) is None
    assert "ident" not in coll.find_one({"_id": target}, raw=True)["_fingerprints"]["x"]
    assert target not in nearest(coll, vec(2), n=5)
    assert index_size(coll) == 4


def test_rename_of_the_watched_key_moves_the_outputs(coll):
    indexed(coll)
    coll.create_model("ident_y", testmodels.identity, key="y").wait(WAIT)
    _id = coll.insert_one({"x": vec(1)}).inserted_id
    coll.update_one({"_id": _id}, {"$rename": {"x": "y"}}).jobs.wait(WAIT)
    assert output(coll, _id) is None
    np.testing.assert_allclose(output(coll, _id, "y", "ident_y"), vec(1), rtol=1e-6)
    assert index_size(coll) == 0


def test_changing_only_the_filter_field_adds_and_removes_outputs(coll):
    coll.create_model("en", testmodels.identity, key="x", filter={"lang": "en"}).wait(WAIT)
    _id = coll.insert_one({"x": vec(1), "lang": "fr"}).inserted_id
    assert output(coll, _id, model="en") is None
    coll.update_one({"_id": _id}, {"$set": {"lang": "en"}}).jobs.wait(WAIT)
    np.testing.assert_allclose(output(coll, _id, model="en"), vec(1), rtol=1e-6)
    coll.update_one({"_id": _id}, {"$set": {"lang": "de"}}).jobs.wait(WAIT)
    assert output(coll, _id, model="en") is None


def test_find_one_and_update_with_upsert_computes_the_new_documents_outputs(coll):
    indexed(coll)
    before = coll.find_one_and_update({"name": "new"}, {"$set": {"x": vec(5)}}, upsert=True)
    assert before is None
    poll(lambda: output(coll, coll.find_one({"name": "new"})["_id"]) is not None, WAIT, "the upserted document's output")
    doc = coll.find_one({"name": "new"})
    np.testing.assert_allclose(doc["_outputs"]["x"]["ident"], vec(5), rtol=1e-6)
    assert "_fold" not in doc  # writes add no bookkeeping (folds come with the first training)
    poll(lambda: nearest(coll, vec(5)) == [doc["_id"]], WAIT, "the upserted document to be searchable")
    after = coll.find_one_and_update({"name": "newer"}, {"$set": {"x": vec(6)}}, upsert=True,
                                     return_document=ReturnDocument.AFTER)
    poll(lambda: output(coll, after["_id"]) is not None, WAIT, "the second upserted document's output")


def test_find_one_and_update_with_sort_recomputes_the_document_it_changed(coll):
    coll.create_model("ident", testmodels.identity, key="x").wait(WAIT)
    result = coll.insert_many([{"g": 1, "n": 1, "x": vec(1)}, {"g": 1, "n": 2, "x": vec(2)}])
    result.jobs.wait(WAIT)
    first, second = result.inserted_ids

    def has(_id, x):
        value = output(coll, _id)
        return value is not None and np.allclose(value, x)

    coll.find_one_and_update({"g": 1}, {"$set": {"x": vec(3)}}, sort=[("n", -1)])
    poll(lambda: has(second, vec(3)), WAIT, "the sorted-last document's new output")
    np.testing.assert_allclose(output(coll, first), vec(1), rtol=1e-6)
    coll.find_one_and_replace({"g": 1}, {"g": 1, "n": 0, "x": vec(4)}, sort=[("n", 1)])
    poll(lambda: has(first, vec(4)), WAIT, "the replaced document's new output")
    np.testing.assert_allclose(output(coll, second), vec(3), rtol=1e-6)


def test_a_url_written_by_update_or_replace_is_downloaded_then_computed(coll, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello")
    (tmp_path / "b.txt").write_bytes(b"hi there")
    coll.create_model("size", len)
    coll.create_watcher("size", "file").wait(WAIT)
    _id = coll.insert_one({"file": b"x"}).inserted_id
    url = {"_content": {"url": (tmp_path / "a.txt").as_uri(), "type": "bytes"}}
    coll.update_one({"_id": _id}, {"$set": {"file": url}}).jobs.wait(WAIT)
    doc = coll.find_one({"_id": _id})
    assert doc["file"] == b"hello" and doc["_outputs"]["file"]["size"] == 5
    url = {"_content": {"url": (tmp_path / "b.txt").as_uri(), "type": "bytes"}}
    coll.replace_one({"_id": _id}, {"file": url}).jobs.wait(WAIT)
    doc = coll.find_one({"_id": _id})
    assert doc["file"] == b"hi there" and doc["_outputs"]["file"]["size"] == 8


def test_replace_keeps_the_fold_and_recomputes(coll):
    coll.create_model("ident", testmodels.identity, key="x").wait(WAIT)
    _id = coll.insert_one({"x": vec(1)}).inserted_id
    assert "_fold" not in coll.find_one({"_id": _id})
    coll.create_validation_set("v", fold=None)  # folds are given once the split is needed ...
    fold = coll.find_one({"_id": _id})["_fold"]
    coll.replace_one({"_id": _id}, {"x": vec(2)}).jobs.wait(WAIT)
    doc = coll.find_one({"_id": _id})
    assert doc["_fold"] == fold
    np.testing.assert_allclose(doc["_outputs"]["x"]["ident"], vec(2), rtol=1e-6)


def _duplicates_refused(coll) -> bool:
    probe = coll.raw.database[f"{coll.name}_probe"]
    probe.insert_one({"_id": 1})
    try:
        probe.insert_one({"_id": 1})
        return False
    except pymongo.errors.DuplicateKeyError:
        return True
    finally:
        probe.drop()


def test_partly_failed_insert_many_computes_what_it_wrote(coll):
    if not _duplicates_refused(coll):
        pytest.skip("this server does not refuse duplicate _ids")
    coll.create_model("ident", testmodels.identity, key="x").wait(WAIT)
    taken = coll.insert_one({"x": vec(0)}).inserted_id
    with pytest.raises(BulkWriteError):
        coll.insert_many([{"x": vec(1)}, {"_id": taken, "x": vec(9)}, {"x": vec(2)}], ordered=False)
    poll(lambda: coll.count_documents({"_outputs.x.ident": {"$exists": True}}) == 3, WAIT,
         "the outputs of the documents the failed insert_many wrote")
    np.testing.assert_allclose(output(coll, taken), vec(0), rtol=1e-6)


def test_partly_failed_bulk_write_computes_what_it_wrote(coll):
    if not _duplicates_refused(coll):
        pytest.skip("this server does not refuse duplicate _ids")
    coll.create_model("ident", testmodels.identity, key="x").wait(WAIT)
    taken = coll.insert_one({"x": vec(0)}).inserted_id
    with pytest.raises(BulkWriteError):
        coll.bulk_write([InsertOne({"x": vec(1)}), InsertOne({"_id": taken, "x": vec(9)}), InsertOne({"x": vec(2)})])
    poll(lambda: coll.count_documents({"_outputs.x.ident": {"$exists": True}}) == 2, WAIT,
         "the output of the document the ordered bulk write wrote before it failed")


# -- deletes of what indexes use ----------------------------------------------------------------------
def test_deleting_an_indexed_model_is_refused_or_cascades(coll):
    indexed(coll)
    coll.insert_many([{"x": vec(i)} for i in range(3)]).jobs.wait(WAIT)
    with pytest.raises(InUseError, match="semantic index 'ix'"):
        coll.delete_model("ident")
    coll.delete_model("ident", force=True)
    assert coll.list_semantic_indexes() == [] and coll.list_watchers() == [] and coll.list_models() == []
    assert coll.count_documents({"_outputs.x.ident": {"$exists": True}}) == 0
    assert all(s["index"] != "ix" for s in coll._services.indexes.master.stats()
               if s["collection"] == f"{coll.database.name}.{coll.name}")
    with pytest.raises(SemanticIndexError):
        coll.find(like={"x": vec(1)})
    coll.insert_one({"x": vec(4)}).jobs.wait(WAIT)  # writes go on, with nothing left to compute


def test_deleting_an_indexed_watcher_is_refused_or_cascades(coll):
    indexed(coll)
    coll.create_neighbourhood("near", n=2).wait(WAIT)
    coll.insert_many([{"x": vec(i)} for i in range(3)]).jobs.wait(WAIT)
    with pytest.raises(InUseError, match="semantic index 'ix'"):
        coll.delete_watcher("ident/x")
    coll.delete_watcher("ident/x", force=True)
    assert coll.list_semantic_indexes() == [] and coll.list_neighbourhoods() == []
    assert coll.list_models() == ["ident"]
    assert coll.count_documents({"_outputs.x.ident": {"$exists": True}}) == 0
    assert coll.count_documents({"_like.near": {"$exists": True}}) == 0
    with pytest.raises(SemanticIndexError):
        coll.find(like={"x": vec(1)})
    coll.create_watcher("ident", "x").wait(WAIT)
    coll.create_semantic_index("ix2", models=["ident"], keys=["x"]).wait(WAIT)
    _id = coll.insert_one({"x": vec(7)}).inserted_id
    poll(lambda: nearest(coll, vec(7)) == [_id], WAIT, "a new insert to be searchable in the new index")


# -- neighbourhoods ----------------------------------------------------------------------------------
def test_deleted_documents_leave_the_neighbour_lists(coll):
    indexed(coll)
    coll.create_neighbourhood("near", n=2).wait(WAIT)
    coll.insert_many([{"i": i, "x": vec(i)} for i in range(6)]).jobs.wait(WAIT)
    gone = coll.find_one({"i": 0})["_id"]
    coll.delete_one({"_id": gone}).jobs.wait(WAIT)
    for doc in coll.find({}, raw=True):
        assert gone not in doc["_like"]["near"] and len(doc["_like"]["near"]) == 2
    report = coll.reconcile(wait=True, timeout=WAIT).result()
    assert report["neighbour_lists"] == 0, report
