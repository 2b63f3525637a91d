"""Every write verb goes through one door, where every write rule applies (services/writes.py).

Each scenario is a bug that a write path had because a rule ran on some doors only; each runs
on both stand-ins (the ``backend`` fixture: the embedded store and the MongoDB-wire server),
through the public API, with jobs run inline (their outputs are there when the write returns)
unless a cluster is the point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymongo
import pytest
import testmodels
from pymongo import InsertOne, ReplaceOne, ReturnDocument, UpdateOne
from sklearn.linear_model import LogisticRegression
from waiting import poll

import superduperdb
from superduperdb.tasks.reconcile import master_handle

pytestmark = pytest.mark.integration

WAIT = 120


@pytest.fixture
def connect(backend):
    """``connect(**config)``: an inline client on the backend's database (dropped at teardown)."""
    uri, name = backend
    made = []

    def make(cluster=None, **config):
        client = superduperdb.connect(uri, cluster=cluster, config={"master.warm_up": False, "reconcile.interval": 0, **config})
        made.append(client)
        return client

    yield make
    if made:
        made[0].drop_database(name)
    for client in reversed(made):
        client.close()


@pytest.fixture
def db(backend, connect):
    return connect()[backend[1]]


def output(coll, query, key="x", model="inc"):
    doc = coll.find_one(query)
    return ((doc or {}).get("_outputs") or {}).get(key, {}).get(model)


def ranked(coll, n=4):
    """``n`` documents ``{g: 1, r: i, x: i}``; ``sort={'r': -1}`` picks the last one inserted."""
    coll.insert_many([{"g": 1, "r": i, "x": i} for i in range(n)])


# -- sort= on one-document writes ------------------------------------------------------------------
def test_bulk_write_honours_sort_and_its_jobs_follow_the_same_document(db):
    """pymongo >= 4.9: UpdateOne/ReplaceOne(sort=) write the document the sort picks (the bulk path
    dropped the sort: the write and its jobs hit the first document in natural order)."""
    coll = db.docs
    coll.create_model("inc", testmodels.increment, key="x")
    ranked(coll)
    coll.bulk_write([UpdateOne({"g": 1}, {"$set": {"x": 100}}, sort={"r": -1})]).jobs.wait(WAIT)
    assert coll.find_one({"r": 3})["x"] == 100 and coll.find_one({"r": 0})["x"] == 0
    assert output(coll, {"r": 3}) == 101 and output(coll, {"r": 0}) == 1
    coll.bulk_write([ReplaceOne({"g": 1}, {"g": 1, "r": 9, "x": 50}, sort=[("r", pymongo.ASCENDING)])]).jobs.wait(WAIT)
    assert coll.count_documents({"r": 0}) == 0 and coll.find_one({"r": 9})["x"] == 50
    assert output(coll, {"r": 9}) == 51


def test_update_one_and_replace_one_with_sort_run_on_every_store(db):
    """update_one(sort=) on the embedded store raised a bare TypeError; on the wire server the
    store ignored the sort while the jobs followed it."""
    coll = db.docs
    coll.create_model("inc", testmodels.increment, key="x")
    ranked(coll)
    result = coll.update_one({"g": 1}, {"$set": {"x": 40}}, sort={"r": -1})
    assert result.matched_count == 1 and coll.find_one({"r": 3})["x"] == 40 and coll.find_one({"r": 0})["x"] == 0
    assert output(coll, {"r": 3}) == 41
    coll.replace_one({"g": 1}, {"g": 2, "x": 7}, sort={"r": -1})
    assert coll.count_documents({"r": 3}) == 0 and output(coll, {"g": 2}) == 8


def test_find_one_and_delete_with_sort_and_no_id_in_the_projection(db):
    """The document the sort picks is deleted (the embedded store deleted the first match) and its
    index forgets it at once (the jobs acted on the unsorted first match)."""
    coll = db.docs
    coll.create_model("id", testmodels.identity, key="v")
    coll.create_semantic_index("ix", ["id"], ["v"]).wait(WAIT)
    coll.insert_many([{"g": 1, "r": i, "v": np.eye(4)[i].astype("float32")} for i in range(4)]).jobs.wait(WAIT)
    doc = coll.find_one_and_delete({"g": 1}, sort={"r": -1}, projection={"_id": 0, "r": 1})
    assert doc == {"r": 3}
    assert sorted(d["r"] for d in coll.find({}, {"r": 1})) == [0, 1, 2]
    like = {"v": np.eye(4)[3].astype("float32")}
    found = coll.find({}, {"r": 1}, like=like, n=4).to_list()
    assert sorted(d["r"] for d in found) == [0, 1, 2]
    # the index no longer holds the deleted document: the most similar one is one that exists
    assert len(coll.find({}, {"r": 1}, like=like, n=1, similar_first=True).to_list()) == 1


# -- upserts of find-and-modify -----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["find_one_and_update", "find_one_and_replace"])
@pytest.mark.parametrize("returned", [ReturnDocument.BEFORE, ReturnDocument.AFTER])
def test_find_and_modify_upsert_with_id_in_the_filter_computes_outputs(connect, backend, method, returned):
    """With _id in the filter the upserted document got no jobs (its output waited for the sweep,
    forever with reconcile.interval 0)."""
    coll = connect(**{"reconcile.interval": 0})[backend[1]].docs
    coll.create_model("inc", testmodels.increment, key="x")
    change = {"$set": {"x": 3}} if method == "find_one_and_update" else {"x": 3}
    getattr(coll, method)({"_id": 7}, change, upsert=True, return_document=returned)
    assert output(coll, {"_id": 7}) == 4


# -- folds ---------------------------------------------------------------------------------------------
def point(i):
    """A document the classifier below can learn: ``y`` is the sign of ``x[0]``."""
    return {"i": i, "x": [float(i % 2) * 2 - 1, float(i % 3)], "y": i % 2}


def make_by_every_verb(coll):
    """Documents 0..49, made by every verb that makes documents (no verb may give them a ``_fold``)."""
    import dask
    import dask.dataframe as dd

    coll.insert_one(point(0))
    coll.insert_many([point(i) for i in range(1, 40)])
    coll.update_one({"i": 40}, {"$set": point(40)}, upsert=True)
    coll.update_many({"i": 41}, {"$set": point(41)}, upsert=True)
    coll.replace_one({"i": 42}, point(42), upsert=True)
    coll.find_one_and_update({"i": 43}, {"$set": point(43)}, upsert=True)
    coll.find_one_and_replace({"i": 44}, point(44), upsert=True)
    coll.bulk_write([InsertOne(point(45)), UpdateOne({"i": 46}, {"$set": point(46)}, upsert=True),
                     ReplaceOne({"i": 47}, point(47), upsert=True)])
    with dask.config.set({"dataframe.convert-string": False}):  # else dask stores the lists as strings
        coll.from_dask(dd.from_pandas(pd.DataFrame([point(48), point(49)]), npartitions=2))


def test_no_verb_writes_a_fold_replacements_keep_one_and_training_gets_a_stable_split(connect, backend):
    """Folds are bookkeeping given when training first needs the split (store/folds.py): no write verb
    adds one (inserts, upserts, bulk_write and from_dask included), a replacement by any verb keeps the
    one a document has (bulk ReplaceOne dropped it), and the split is stable from then on."""
    coll = connect(**{"data.valid_probability": 0.3})[backend[1]].docs
    make_by_every_verb(coll)
    assert sorted(d["i"] for d in coll.raw.find({}, {"i": 1})) == list(range(50))
    assert coll.raw.count_documents({"_fold": {"$exists": True}}) == 0
    coll.create_model("clf", LogisticRegression())
    coll.create_imputation("sign", "clf", "x", "y", metrics=["accuracy"]).wait(WAIT)  # needs the split
    folds = {d["i"]: d["_fold"] for d in coll.raw.find({}, {"i": 1, "_fold": 1})}
    assert len(folds) == 50 and set(folds.values()) == {"train", "valid"}, folds
    coll.replace_one({"i": 0}, {**point(0), "note": "replaced"})
    coll.find_one_and_replace({"i": 1}, {**point(1), "note": "replaced"})
    coll.bulk_write([ReplaceOne({"i": 2}, {**point(2), "note": "replaced"}),
                     UpdateOne({"i": 3}, {"$set": {"note": "updated"}}), InsertOne(point(50))])
    assert coll.raw.count_documents({"note": {"$exists": True}}) == 4
    kept = {d["i"]: d.get("_fold") for d in coll.raw.find({"i": {"$in": [0, 1, 2, 3]}}, {"i": 1, "_fold": 1})}
    assert kept == {i: folds[i] for i in range(4)}  # replaced (and updated) documents keep their fold
    assert "_fold" not in coll.raw.find_one({"i": 50})  # still none on a new document
    coll.train_imputation("sign").wait(WAIT)  # the split again: the new document gets one, none changes
    again = {d["i"]: d["_fold"] for d in coll.raw.find({}, {"i": 1, "_fold": 1})}
    assert {i: f for i, f in again.items() if i != 50} == folds and again[50] in ("train", "valid")
    assert "_fold" not in coll.to_pandas({}).columns  # bookkeeping stays out of sight
    assert coll.to_pandas({}, bookkeeping=True)["_fold"].notna().all()


# -- the reconciler's sweep ----------------------------------------------------------------------------
VERBS = {
    "insert_one": lambda c: c.insert_one({"x": 1}),
    "insert_many": lambda c: c.insert_many([{"x": 1}]),
    "update_one": lambda c: c.update_one({"x": 1}, {"$set": {"y": 1}}),
    "update_many": lambda c: c.update_many({"x": 1}, {"$set": {"y": 1}}),
    "replace_one": lambda c: c.replace_one({"x": 1}, {"x": 1, "y": 1}),
    "delete_one": lambda c: c.delete_one({"x": 0}),
    "delete_many": lambda c: c.delete_many({"x": 0}),
    "find_one_and_update": lambda c: c.find_one_and_update({"x": 1}, {"$set": {"y": 1}}),
    "find_one_and_replace": lambda c: c.find_one_and_replace({"x": 1}, {"x": 1, "y": 1}),
    "find_one_and_delete": lambda c: c.find_one_and_delete({"x": 0}),
    "bulk_write": lambda c: c.bulk_write([UpdateOne({"x": 1}, {"$set": {"y": 1}})]),
    "from_dask": lambda c: c.from_dask(__import__("dask.dataframe").dataframe.from_pandas(
        pd.DataFrame({"x": [1, 2]}), npartitions=1)),
}


def test_every_write_verb_has_the_master_sweep_its_collection(connect, backend):
    """A program's first write has its cluster's reconciler sweep the collection, whatever the verb
    (bulk_write, delete_* and find_one_and_* did not: a program that only bulk_writes was never swept)."""
    name = backend[1]
    setup = connect()[name]  # another program registered the watchers (on its own master)
    for verb in VERBS:
        setup[verb].insert_many([{"x": 0}, {"x": 1}])
        setup[verb].create_model(f"inc_{verb}", testmodels.increment, key="x")
    program = connect(cluster="local", **{"reconcile.interval": 0})
    for verb, write in VERBS.items():
        write(program[name][verb])
    master = master_handle(program.cluster.client, program.config)
    watched = master.reconciler()
    assert sorted(k.split(".", 1)[1] for k in watched if k.startswith(f"{name}.")) == sorted(VERBS)
    poll(lambda: all(r["status"] in ("success", "failed") for verb in VERBS for r in program[name][verb].list_jobs()),
         WAIT, "the writes' jobs to finish")


# -- the write position ----------------------------------------------------------------------------------
def _vec(i):
    return np.eye(8, dtype="float32")[i % 8]


def test_every_write_verb_stamps_its_position_and_every_delete_verb_leaves_tombstones(db):
    """One rule (write_rules.Position): each verb's documents carry ``_sdb: {seq, part}`` (upserts and
    from_dask included), a changed document a newer ``seq``, and each delete verb tombstones the ids
    it removed (an index must forget them) with its ``seq`` and partition."""
    from pymongo import DeleteMany, DeleteOne

    from superduperdb.store.partitions import partition_of
    from superduperdb.store.positions import Positions

    coll = db.docs
    coll.create_model("id", testmodels.identity, key="v")
    coll.create_semantic_index("ix", ["id"], ["v"]).wait(WAIT)

    def sdb(_id):
        return coll.find_one({"_id": _id}, {"_sdb": 1}, raw=True).get("_sdb")

    new = {
        "insert_one": coll.insert_one({"k": 1, "v": _vec(1)}).inserted_id,
        "insert_many": coll.insert_many([{"k": 2, "v": _vec(2)}]).inserted_ids[0],
        "update_one upsert": coll.update_one({"k": 3}, {"$set": {"v": _vec(3)}}, upsert=True).upserted_id,
        "replace_one upsert": coll.replace_one({"k": 4}, {"k": 4, "v": _vec(4)}, upsert=True).upserted_id,
        "find_one_and_update upsert": coll.find_one_and_update({"_id": 5}, {"$set": {"k": 5, "v": _vec(5)}},
                                                               upsert=True, return_document=ReturnDocument.AFTER)["_id"],
        "find_one_and_replace upsert": coll.find_one_and_replace({"k": 6}, {"k": 6, "v": _vec(6)}, upsert=True,
                                                                 return_document=ReturnDocument.AFTER)["_id"],
    }
    result = coll.bulk_write([InsertOne({"k": 7, "v": _vec(7)}), UpdateOne({"k": 8}, {"$set": {"v": _vec(0)}}, upsert=True),
                              ReplaceOne({"k": 9}, {"k": 9, "v": _vec(1)}, upsert=True)])
    new["bulk_write upserts"] = result.upserted_ids[1]
    new["bulk_write replace upsert"] = result.upserted_ids[2]
    new["bulk_write insert"] = coll.find_one({"k": 7})["_id"]
    dask_ids = coll.from_dask(__import__("dask.dataframe").dataframe.from_pandas(
        pd.DataFrame({"k": [10, 11]}), npartitions=2)).inserted_ids
    new["from_dask"] = dask_ids[0]
    for verb, _id in new.items():
        stamp = sdb(_id)
        assert stamp is not None and isinstance(stamp.get("seq"), int), (verb, stamp)
        assert stamp.get("part") == partition_of(_id), (verb, stamp)
    assert "_sdb" not in coll.find_one({"_id": new["insert_one"]})  # find() hides it

    changes = {  # each changes the indexed input of one document: its output is recomputed, newer position
        "update_one": lambda: coll.update_one({"k": 1}, {"$set": {"v": _vec(2)}}),
        "update_many": lambda: coll.update_many({"k": 2}, {"$set": {"v": _vec(3)}}),
        "replace_one": lambda: coll.replace_one({"k": 3}, {"k": 3, "v": _vec(4)}),
        "find_one_and_update": lambda: coll.find_one_and_update({"k": 4}, {"$set": {"v": _vec(5)}}),
        "find_one_and_replace": lambda: coll.find_one_and_replace({"k": 5}, {"k": 5, "v": _vec(6)}),
        "bulk_write": lambda: coll.bulk_write([UpdateOne({"k": 6}, {"$set": {"v": _vec(7)}})]),
    }
    for k, (verb, change) in enumerate(changes.items(), start=1):
        _id = coll.find_one({"k": k})["_id"]
        before = sdb(_id)["seq"]
        change()
        assert sdb(_id)["seq"] > before and sdb(_id)["part"] == partition_of(_id), verb

    deletes = {
        "delete_one": (lambda: coll.delete_one({"k": 1}), [new["insert_one"]]),
        "delete_many": (lambda: coll.delete_many({"k": {"$in": [2, 3]}}), [new["insert_many"], new["update_one upsert"]]),
        "find_one_and_delete": (lambda: coll.find_one_and_delete({"k": 4}), [new["replace_one upsert"]]),
        "bulk_write": (lambda: coll.bulk_write([DeleteOne({"k": 5}), DeleteMany({"k": {"$in": [6, 7]}})]),
                       [new["find_one_and_update upsert"], new["find_one_and_replace upsert"], new["bulk_write insert"]]),
    }
    positions = Positions(coll.raw)
    for verb, (delete, ids) in deletes.items():
        delete()
        gone = {t["_id"]: t for t in positions.tombstones.find()}
        assert set(ids) <= set(gone), (verb, ids, list(gone))
        assert all(isinstance(gone[i]["seq"], int) and gone[i]["part"] == partition_of(i) for i in ids), verb
    tombstones = list(positions.tombstones.find())
    assert len(tombstones) == 7
    assert coll.delete_one({"k": 99}).deleted_count == 0 and len(list(positions.tombstones.find())) == 7
