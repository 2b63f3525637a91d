"""The embedded store (``mongomock://``) answers as mongomock's scan does, through its indexes.

The differential tests run the same writes on the embedded store and on plain
mongomock (which scans every document for every query) and compare every query's
answer, order included: an index may only make a query faster, never change it.
"""

from __future__ import annotations

import datetime
import random

import gridfs
import mongomock
import pymongo
import pytest
from bson import Int64, ObjectId
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, DocumentTooLarge, DuplicateKeyError, WriteError

import superduperdb
from superduperdb.store.embedded import MAX_BSON_SIZE, EmbeddedClient, EmbeddedCollection

FIELDS = ["a", "b", "tags", "meta.year", "meta.name"]
DAY = datetime.datetime(2024, 1, 1)


def _value(rng: random.Random):
    kind = rng.randrange(9)
    if kind == 0:
        return rng.randrange(5)
    if kind == 1:
        return rng.choice([0.5, 1.0, 2.5, float("nan")])
    if kind == 2:
        return rng.choice(["x", "y", "z", ""])
    if kind == 3:
        return [rng.randrange(5) for _ in range(rng.randrange(3))]
    if kind == 4:
        return DAY + datetime.timedelta(days=rng.randrange(4))
    if kind == 5:
        return None
    if kind == 6:
        return {"k": rng.randrange(3)}
    if kind == 7:
        return rng.choice([True, False])
    return ObjectId(f"{rng.randrange(3):024x}")  # (mongomock cannot range-compare Decimal128 at all)


def _doc(rng: random.Random, i: int) -> dict:
    doc: dict = {"_id": i}
    for field in ("a", "b", "tags"):
        if rng.random() < 0.8:
            doc[field] = _value(rng)
    if rng.random() < 0.7:
        doc["meta"] = {"year": _value(rng), "name": rng.choice(["p", "q"])}
    if rng.random() < 0.2:
        doc["meta"] = [{"year": rng.randrange(5)}, {"year": rng.randrange(5)}]
    return doc


def _condition(rng: random.Random):
    kind = rng.randrange(8)
    if kind == 0:
        return _value(rng)
    if kind == 1:
        return {"$in": [_value(rng) for _ in range(rng.randrange(1, 4))]}
    if kind == 2:
        op = rng.choice(["$gt", "$gte", "$lt", "$lte"])
        return {op: rng.choice([1, 2.5, "y", DAY + datetime.timedelta(days=1)])}
    if kind == 3:
        return {"$gte": rng.randrange(3), "$lt": rng.randrange(2, 6)}
    if kind == 4:
        return {"$eq": _value(rng), "$ne": 3}
    if kind == 5:
        return {"$exists": rng.random() < 0.5}
    if kind == 6:
        return {"$nin": [1, 2]}
    return {"$gt": 1, "$lt": 4}


def _filter(rng: random.Random, n: int) -> dict:
    parts = [{rng.choice(FIELDS): _condition(rng)} for _ in range(rng.randrange(1, 3))]
    if rng.random() < 0.3:
        parts.append({"_id": rng.choice([rng.randrange(n), {"$in": [rng.randrange(n) for _ in range(5)]},
                                         {"$in": _long_in(rng, n)}])})
    if rng.random() < 0.3:
        return {"$and": parts}
    merged: dict = {}
    for part in parts:
        merged.update(part)
    return merged


def _long_in(rng: random.Random, n: int) -> list:
    """An ``$in`` long enough for the store's set lookup (some over 30% of the collection: a scan)."""
    values: list = [rng.randrange(n) for _ in range(rng.choice([12, 70]))]
    return values + rng.choice([[], [2.0, "3", float("nan")], [{"k": 1}], [True], [ObjectId()]])


def _update(rng: random.Random):
    field = rng.choice(FIELDS)
    kind = rng.randrange(4)
    if kind == 0:
        return {"$set": {field: _value(rng)}}
    if kind == 1:
        return {"$unset": {field: ""}}
    if kind == 2:
        return {"$set": {"tags": [rng.randrange(5), rng.randrange(5)]}}
    return {"$inc": {"a": 1}}


def _answer(coll, filter) -> list | str:
    try:
        return [doc["_id"] for doc in coll.find(filter)]
    except Exception as exc:  # both stores must refuse the same filters the same way
        return f"{type(exc).__name__}"


@pytest.mark.parametrize("seed", range(6))
def test_indexed_answers_equal_scanned_answers(seed):
    rng = random.Random(seed)
    fast = EmbeddedClient().db.c
    slow = mongomock.MongoClient().db.c
    for coll in (fast, slow):
        coll.create_index("b")
    n = 150
    docs = [_doc(rng, i) for i in range(n)]
    fast.insert_many([dict(d) for d in docs])
    slow.insert_many([dict(d) for d in docs])
    for field in FIELDS:  # indexes built over existing documents (and "b" before them)
        fast.create_index(field)
        slow.create_index(field)
    checked = 0
    for _ in range(300):
        action = rng.random()
        if action < 0.15:
            filter, update = _filter(rng, n), _update(rng)
            outcomes = []
            # An update that cannot apply ($inc of "x", $set of a.b in an array): a server's
            # WriteError here, Python's TypeError/ValueError from mongomock.
            for coll, refusal in ((fast, WriteError), (slow, (TypeError, ValueError))):
                try:
                    outcomes.append(coll.update_many(filter, update).modified_count)
                except refusal:
                    outcomes.append("refused")
            assert outcomes[0] == outcomes[1], (filter, update)
        elif action < 0.2:
            i = rng.randrange(n)
            replacement = {k: v for k, v in _doc(rng, i).items() if k != "_id"}
            assert fast.replace_one({"_id": i}, replacement).matched_count == slow.replace_one(
                {"_id": i}, dict(replacement)).matched_count
        elif action < 0.25:
            filter = _filter(rng, n)
            assert fast.delete_many(filter).deleted_count == slow.delete_many(filter).deleted_count
        elif action < 0.3:
            doc = _doc(rng, n)
            n += 1
            fast.insert_one(dict(doc))
            slow.insert_one(dict(doc))
        else:
            filter = _filter(rng, n)
            expected = _answer(slow, filter)
            assert _answer(fast, filter) == expected, filter
            checked += isinstance(expected, list) and bool(expected)
    assert checked > 50  # the comparison saw real answers, not only empty ones


def test_long_id_in_lists_answer_as_mongomock():
    ids = [*range(40), 2.5, "7", "x", ObjectId(), {"k": 1}, {"k": 2}, Int64(50)]  # Int64(50) == 50
    fast, slow = EmbeddedClient().db.c, mongomock.MongoClient().db.c
    for coll in (fast, slow):
        coll.insert_many([{"_id": i, "lang": "en" if j % 3 else "fr"} for j, i in enumerate(ids)])
        coll.create_index("lang")
    wanted = [1.0, 2, "7", 7.0, 2.5, ids[43], {"k": 1}, True, False, -0.0, None, "nope", *range(30, 36)]
    for filter in ({"_id": {"$in": wanted}}, {"_id": {"$in": [50, *range(20)]}}, {"_id": {"$in": wanted}, "lang": "fr"},
                   {"_id": {"$in": wanted[:9] + [{"k": 2}]}}, {"_id": {"$in": list(range(100))}},
                   {"_id": {"$in": list(range(12))}, "lang": {"$in": ["en"]}}):
        expected = [d["_id"] for d in slow.find(filter)]
        assert [d["_id"] for d in fast.find(filter)] == expected, filter
        assert expected  # a real answer
    assert fast.count_documents({"_id": {"$in": list(range(20, 60))}}) == 21  # 20..39 and Int64(50)


def test_reads_while_another_thread_updates_in_place():
    # mongomock updates stored documents in place; a cursor copying one at the same time
    # used to fail with "dictionary changed size during iteration" (a model job reading a
    # chunk while another writes outputs).
    import threading

    coll = EmbeddedClient().db.c
    coll.insert_many([{"_id": i, "a": i, **{f"k{j}": j for j in range(40)}} for i in range(1000)])
    stop = threading.Event()
    rounds = [0]

    def write() -> None:
        while not stop.is_set():
            for i in range(0, 1000, 7):
                coll.update_one({"_id": i}, {"$set": {f"new{rounds[0]}": i}})
            rounds[0] += 1

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        for _ in range(15):
            assert len(list(coll.find({}, {"a": 1, "k3": 1}))) == 1000
            assert all(len(doc) >= 42 for doc in coll.find({}))
    finally:
        stop.set()
        writer.join(timeout=30)
    assert rounds[0] > 0 and not writer.is_alive()


def test_lookups_use_the_indexes():
    coll = EmbeddedClient().db.c
    coll.insert_many([{"_id": i, "lang": "en" if i % 10 else "fr", "n": i} for i in range(1000)])
    store = coll._store
    assert store.matching({"lang": "fr"}) is None  # no index yet: a scan
    assert coll.create_index("lang") == "lang_1"
    assert [d["_id"] for d in store.matching({"lang": "fr"})[0]] == list(range(0, 1000, 10))
    docs, residual = store.matching({"_id": {"$in": [5, 3, 999, 5000]}})
    assert [d["_id"] for d in docs] == [3, 5, 999] and residual == {}  # answered by the _id map: no check left
    docs, residual = store.matching({"$and": [{"_id": {"$in": [3, 4]}}, {"n": {"$gt": 3}}]})
    assert [d["_id"] for d in docs] == [3, 4] and residual == {"$and": [{"n": {"$gt": 3}}]}
    assert [d["_id"] for d in coll.find({"$and": [{"_id": {"$in": [3, 4]}}, {"n": {"$gt": 3}}]})] == [4]
    coll.create_index([("n", pymongo.DESCENDING), ("lang", 1)])  # a compound index serves its first field
    assert [d["_id"] for d in store.matching({"n": {"$gte": 10, "$lt": 13}})[0]] == [10, 11, 12]
    assert set(store.indexed_fields) == {"lang", "n"}
    coll.update_one({"_id": 3}, {"$set": {"lang": "fr"}})
    assert 3 in [d["_id"] for d in coll.find({"lang": "fr"})]
    coll.drop_index("lang_1")
    assert store.matching({"lang": "fr"}) is None


def test_id_lookups_keep_the_stores_equality():
    """Python's True == 1: an _id map hit of another kind is still checked against the filter, as a scan does."""
    fast, slow = EmbeddedClient().db.c, mongomock.MongoClient().db.c
    for coll in (fast, slow):
        coll.insert_many([{"_id": True, "k": "bool"}, {"_id": 2.0, "k": "float"}, {"_id": "s", "k": "str"}])
    for filter in ({"_id": 1}, {"_id": {"$in": [1, 2]}}, {"_id": 2}, {"_id": {"$in": ["s", 2, 3]}}, {"_id": True}):
        assert _answer(fast, filter) == _answer(slow, filter), filter


def test_unsorted_cursors_read_only_as_far_as_they_are_iterated():
    coll = EmbeddedClient().db.c
    coll.insert_many([{"_id": i, "x": i % 3} for i in range(100)])
    cursor = coll.find({"x": 1})
    assert next(cursor)["_id"] == 1
    assert len(cursor._lazy_results) == 1  # one result read, not all 33
    assert [d["_id"] for d in cursor][:2] == [4, 7]
    assert coll.find_one({"x": 2}, sort=[("_id", -1)])["_id"] == 98


def test_bulk_write_updates_and_replaces():
    coll = EmbeddedClient().db.c
    result = coll.bulk_write([
        InsertOne({"_id": 1, "x": 1}), InsertOne({"_id": 2, "x": 2}),
        UpdateOne({"_id": 1}, {"$set": {"x": 10}}), ReplaceOne({"_id": 2}, {"y": 2}),
        UpdateMany({}, {"$set": {"z": 0}}), UpdateOne({"_id": 3}, {"$set": {"x": 3}}, upsert=True),
        DeleteOne({"_id": 1}),
    ])
    assert isinstance(result, pymongo.results.BulkWriteResult)
    assert (result.inserted_count, result.matched_count, result.modified_count) == (2, 4, 4)
    assert (result.upserted_count, result.deleted_count, result.upserted_ids) == (1, 1, {5: 3})
    assert list(coll.find({}, {"_id": 1})) == [{"_id": 2}, {"_id": 3}]
    with pytest.raises(BulkWriteError) as caught:
        coll.bulk_write([InsertOne({"_id": 2}), InsertOne({"_id": 4})], ordered=True)
    details = caught.value.details
    assert details["writeErrors"][0]["index"] == 0 and details["writeErrors"][0]["code"] == 11000
    assert coll.find_one({"_id": 4}) is None  # ordered: stopped at the first error


def test_sixteen_mib_limit_and_failed_updates_change_nothing():
    coll = EmbeddedClient().db.c
    big = b"x" * (MAX_BSON_SIZE + 1)
    with pytest.raises(DocumentTooLarge):
        coll.insert_one({"_id": 1, "blob": big})
    assert coll.count_documents({}) == 0
    coll.insert_one({"_id": 1, "n": "text", "nested": {"a": 1}})
    coll.create_index("nested.a")
    with pytest.raises(DocumentTooLarge):
        coll.update_one({"_id": 1}, {"$set": {"blob": big, "nested.a": 2}})
    with pytest.raises(WriteError):
        coll.update_one({"_id": 1}, {"$set": {"nested.a": 3}, "$inc": {"n": 1}})  # $inc on a string
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": "text", "nested": {"a": 1}}
    assert [d["_id"] for d in coll.find({"nested.a": 1})] == [1]
    assert list(coll.find({"nested.a": {"$in": [2, 3]}})) == []
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": 1})


def test_cursors_keep_pymongo_semantics():
    coll = EmbeddedClient().db.c
    coll.insert_many([{"_id": i} for i in range(10)])
    ids = lambda cursor: [d["_id"] for d in cursor]  # noqa: E731
    assert ids(coll.find().skip(3).limit(4)) == [3, 4, 5, 6]
    assert ids(coll.find().sort("_id", -1).limit(-2)) == [9, 8]
    cursor = coll.find({"_id": {"$gte": 7}})
    assert ids(cursor) == [7, 8, 9] and ids(cursor) == []
    cursor.rewind()
    assert ids(cursor.clone()) == [7, 8, 9]


def test_gridfs_bucket_works():
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()
    db = EmbeddedClient().db
    bucket = gridfs.GridFSBucket(db)
    file_id = bucket.upload_from_stream("model.bin", b"weights" * 100_000)
    assert bucket.open_download_stream(file_id).read() == b"weights" * 100_000
    assert bucket.open_download_stream_by_name("model.bin").read(7) == b"weights"
    assert [f.filename for f in bucket.find({"filename": "model.bin"})] == ["model.bin"]
    bucket.delete(file_id)
    assert list(bucket.find()) == []


def test_the_embedded_default_is_this_store():
    docs = superduperdb.connect("mongomock://embedded-store-test", cluster=None).db.docs
    assert isinstance(docs.raw, EmbeddedCollection)
    docs.insert_many([{"lang": "en", "i": i} for i in range(20)] + [{"lang": "fr", "i": 20}])
    assert docs.create_index("lang") == "lang_1"
    assert "lang_1" in docs.index_information()
    assert [d["i"] for d in docs.find({"lang": "fr"})] == [20]
    oid = docs.find_one({"i": 3})["_id"]
    assert isinstance(oid, ObjectId) and docs.find_one({"_id": oid})["i"] == 3
