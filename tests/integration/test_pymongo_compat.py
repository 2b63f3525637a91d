"""superduperdb's Collection behaves like pymongo's.

Every scenario runs twice on the same stand-in (the ``backend`` fixture: the embedded mongomock
store and the MongoDB-wire server over TCP): once on the raw client's collection (a
``pymongo.MongoClient`` for the server, the mongomock store itself for ``mongomock://``) and once
through ``superduperdb.connect(uri, cluster=None)[db][coll]``. The two runs must observe the same
documents, counts and write results.

Generated ObjectIds differ between the runs, so observations are compared after renaming every
ObjectId to the order in which it first appears (``<oid 0>``, ``<oid 1>`` ...): two runs that insert
the same documents in the same order get the same names.

Stand-in limitations that are skipped, each with its reason where it applies:

* mongomock's own ``bulk_write`` raises TypeError for UpdateOne/ReplaceOne with pymongo >= 4.11
  (superduperdb/store/bulk.py), so on mongomock our ``bulk_write`` is compared with the expected values instead.
* mongomock lets a cursor be modified after iteration started; pymongo raises InvalidOperation
  (ours does on both stand-ins, as pymongo).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pymongo
import pytest
from bson import ObjectId
from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, ReturnDocument, UpdateMany, UpdateOne
from pymongo import results as pymongo_results
from pymongo.errors import BulkWriteError, DuplicateKeyError, InvalidOperation

import superduperdb
from superduperdb.jobs.handles import JobGroup

pytestmark = pytest.mark.integration

GIVEN_ID = ObjectId("65a000000000000000000001")


@dataclass
class Pair:
    raw: Any  # pymongo / mongomock collection
    ours: Any  # superduperdb Collection
    mongomock: bool

    @property
    def both(self) -> tuple[Any, Any]:
        return self.raw, self.ours


@pytest.fixture
def pair(backend) -> Iterator[Pair]:
    uri, dbname = backend
    client = superduperdb.connect(uri, cluster=None, config={"data.assign_folds": False})
    is_mock = uri.startswith("mongomock://")
    raw_client = client.raw if is_mock else pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    yield Pair(raw=raw_client[dbname]["raw"], ours=client[dbname]["ours"], mongomock=is_mock)
    raw_client.drop_database(dbname)
    client.close()
    if not is_mock:
        raw_client.close()


# -- comparing observations ------------------------------------------------------------------


def _pymongo_class(result: Any) -> type:
    return next(c for c in type(result).__mro__ if c.__module__ == "pymongo.results")


def _describe(result: Any) -> dict:
    fields: dict[str, Any] = {"class": _pymongo_class(result).__name__, "acknowledged": result.acknowledged}
    if isinstance(result, pymongo_results.InsertOneResult):
        fields["inserted_id"] = result.inserted_id
    elif isinstance(result, pymongo_results.InsertManyResult):
        fields["inserted_ids"] = list(result.inserted_ids)
    elif isinstance(result, pymongo_results.UpdateResult):
        fields.update(
            matched_count=result.matched_count,
            modified_count=result.modified_count,
            upserted_id=result.upserted_id,
            raw_result=result.raw_result,
        )
    elif isinstance(result, pymongo_results.DeleteResult):
        fields.update(deleted_count=result.deleted_count, raw_result=result.raw_result)
    elif isinstance(result, pymongo_results.BulkWriteResult):
        fields.update(
            bulk_api_result=result.bulk_api_result,
            inserted_count=result.inserted_count,
            matched_count=result.matched_count,
            modified_count=result.modified_count,
            deleted_count=result.deleted_count,
            upserted_count=result.upserted_count,
            upserted_ids=result.upserted_ids,
        )
    else:  # pragma: no cover - a new result class needs describing
        raise AssertionError(f"undescribed result {result!r}")
    return fields


def canonical(value: Any, ids: dict | None = None) -> Any:
    """``value`` with results described and ObjectIds named by first appearance."""
    ids = {} if ids is None else ids
    if isinstance(value, ObjectId):
        return f"<oid {ids.setdefault(value, len(ids))}>"
    if isinstance(value, pymongo_results._WriteResult):
        return canonical(_describe(value), ids)
    if isinstance(value, Mapping):
        return {k: canonical(value[k], ids) for k in sorted(value, key=str)}
    if isinstance(value, tuple):
        return tuple(canonical(v, ids) for v in value)
    if isinstance(value, list):
        return [canonical(v, ids) for v in value]
    return value


def _check_result_types(raw: Any, ours: Any) -> None:
    if isinstance(raw, pymongo_results._WriteResult):
        assert isinstance(ours, type(raw)), f"{type(ours)} is not a {type(raw)}"
        assert isinstance(ours.jobs, JobGroup) and len(ours.jobs) == 0  # no watchers: no jobs
    elif isinstance(raw, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(raw)
        for r, o in zip(raw, ours):
            _check_result_types(r, o)


def same(pair: Pair, scenario: Callable[[Any], list]) -> list:
    """Run ``scenario`` on the raw collection and on ours; assert identical observations."""
    raw_obs = scenario(pair.raw)
    ours_obs = scenario(pair.ours)
    _check_result_types(raw_obs, ours_obs)
    assert canonical(ours_obs) == canonical(raw_obs)
    return canonical(ours_obs)


def _seed(c: Any, n: int = 10) -> list:
    docs = [{"k": i, "g": i % 3, "name": f"n{i}", "sub": {"a": i, "b": -i}} for i in range(n)]
    return list(c.insert_many(docs).inserted_ids)


def _all(c: Any) -> list[dict]:
    return list(c.find().sort([("k", 1), ("g", 1)]))


# -- inserts ---------------------------------------------------------------------------------


def test_insert_one_sets_id_on_the_callers_dict(pair: Pair) -> None:
    def scenario(c):
        doc = {"k": 1, "name": "a"}
        first = c.insert_one(doc)
        given = {"_id": GIVEN_ID, "k": 2}
        second = c.insert_one(given)
        return [first, doc, doc["_id"] == first.inserted_id, second, given, _all(c)]

    obs = same(pair, scenario)
    assert obs[0] == {"class": "InsertOneResult", "acknowledged": True, "inserted_id": "<oid 0>"}
    assert obs[1] == {"_id": "<oid 0>", "k": 1, "name": "a"} and obs[2] is True
    assert obs[3]["inserted_id"] == "<oid 1>"
    assert pair.ours.find_one({"k": 2})["_id"] == GIVEN_ID


def test_insert_many_sets_ids_in_order(pair: Pair) -> None:
    def scenario(c):
        docs = [{"k": i} for i in range(5)]
        ordered = c.insert_many(docs)
        unordered = c.insert_many(({"k": i} for i in range(5, 8)), ordered=False)  # any iterable
        return [ordered, [d["_id"] for d in docs] == ordered.inserted_ids, unordered, c.count_documents({}), _all(c)]

    obs = same(pair, scenario)
    assert obs[0]["inserted_ids"] == [f"<oid {i}>" for i in range(5)]
    assert obs[1] is True and obs[3] == 8


def test_insert_duplicate_id_raises_pymongos_error(pair: Pair) -> None:
    for c in pair.both:
        c.insert_one({"_id": GIVEN_ID, "k": 1})
        with pytest.raises(DuplicateKeyError):
            c.insert_one({"_id": GIVEN_ID, "k": 2})
        with pytest.raises(BulkWriteError) as info:
            c.insert_many([{"k": 3}, {"_id": GIVEN_ID}, {"k": 4}])
        assert info.value.details["nInserted"] == 1  # ordered: stops at the duplicate
        assert c.count_documents({}) == 2


# -- reads -----------------------------------------------------------------------------------


def test_find_sort_skip_limit_projection(pair: Pair) -> None:
    def scenario(c):
        _seed(c)
        return [
            list(c.find().sort("k", -1)),
            list(c.find({"g": 1}).sort("k", 1).skip(1).limit(2)),
            list(c.find({}, {"_id": 0, "k": 1}).sort([("g", -1), ("k", 1)]).limit(4)),
            list(c.find({}, {"sub": 0}, sort=[("k", 1)], skip=8, limit=5)),
            list(c.find({}, {"_id": 0, "sub.a": 1}).sort("k", 1).limit(2)),
            list(c.find({}, ["k"]).sort("k", 1).limit(2)),
            list(c.find({"k": {"$gte": 3, "$lt": 6}}).sort("k", 1)),
            list(c.find({"$or": [{"k": 1}, {"g": 2}]}).sort("k", 1)),
            list(c.find({"sub.a": {"$in": [2, 4]}}).sort("k", 1)),
            list(c.find({"k": 99})),
            list(c.find(None).sort("k", 1).limit(1)),
        ]

    obs = same(pair, scenario)
    assert [d["k"] for d in obs[0]] == list(range(9, -1, -1))
    assert [d["k"] for d in obs[1]] == [4, 7]
    assert obs[2] == [{"k": 2}, {"k": 5}, {"k": 8}, {"k": 1}]
    assert [d["k"] for d in obs[3]] == [8, 9] and "sub" not in obs[3][0]
    assert obs[4] == [{"sub": {"a": 0}}, {"sub": {"a": 1}}]
    assert set(obs[5][0]) == {"_id", "k"}
    assert [d["k"] for d in obs[6]] == [3, 4, 5]
    assert [d["k"] for d in obs[7]] == [1, 2, 5, 8]
    assert obs[9] == []


def test_a_negative_skip_is_refused_as_pymongo_refuses_it(pair: Pair) -> None:
    """pymongo raises ValueError('skip must be >= 0') (the embedded store raised a bare IndexError)."""
    for c in pair.both:
        c.insert_one({"k": 1})
        with pytest.raises(ValueError, match="skip must be >= 0"):
            list(c.find().skip(-1))
        with pytest.raises(TypeError, match="skip must be an"):
            list(c.find().skip(1.5))
        assert len(list(c.find().skip(0))) == 1


def test_cursor_batch_size_chaining_rewind_clone(pair: Pair) -> None:
    def scenario(c):
        c.insert_many([{"k": i} for i in range(25)])
        cursor = c.find({"k": {"$gte": 2}})
        chained = [cursor.sort("k", 1) is cursor, cursor.skip(1) is cursor, cursor.limit(10) is cursor,
                   cursor.batch_size(3) is cursor]
        first = next(cursor)
        rest = [d["k"] for d in cursor]
        cursor.rewind()
        again = [d["k"] for d in cursor]
        clone = [d["k"] for d in cursor.clone()]
        return [
            chained, first, rest, again, clone,
            [d["k"] for d in c.find(batch_size=4).sort("k", 1)],
            [d["k"] for d in c.find().sort("k", 1).batch_size(7)],
            [d["k"] for d in c.find().sort("k", 1).limit(-3)],
        ]

    obs = same(pair, scenario)
    assert obs[0] == [True, True, True, True]
    assert obs[1]["k"] == 3 and obs[2] == list(range(4, 13))
    assert obs[3] == obs[4] == list(range(3, 13))
    assert obs[5] == obs[6] == list(range(25))
    assert obs[7] == [0, 1, 2]


def test_cursor_is_lazy_and_refuses_options_after_iterating(pair: Pair) -> None:
    ours = pair.ours
    cursor = ours.find().sort("k", 1)  # nothing there yet: the query has not run
    ours.insert_many([{"k": 2}, {"k": 1}])
    assert next(cursor)["k"] == 1
    with pytest.raises(InvalidOperation):
        cursor.limit(1)
    raw_cursor = pair.raw.find()
    pair.raw.insert_one({"k": 1})
    next(raw_cursor)
    if not pair.mongomock:  # mongomock lets a running cursor be modified; pymongo does not
        with pytest.raises(InvalidOperation):
            raw_cursor.limit(1)


def test_find_one(pair: Pair) -> None:
    def scenario(c):
        ids = _seed(c, 5)
        return [
            c.find_one({"k": 3}),
            c.find_one(ids[2]),  # a bare _id, as pymongo allows
            c.find_one({"_id": ids[4]}, {"_id": 0, "name": 1}),
            c.find_one({}, sort=[("k", -1)]),
            c.find_one({"k": 99}),
            c.find_one(ObjectId()),
            c.find_one(),
        ]

    obs = same(pair, scenario)
    assert obs[0]["k"] == 3 and obs[1]["k"] == 2 and obs[2] == {"name": "n4"}
    assert obs[3]["k"] == 4 and obs[4] is None and obs[5] is None and obs[6] is not None


# -- updates, replaces, deletes ----------------------------------------------------------------


def test_update_one_and_many_with_upsert(pair: Pair) -> None:
    def scenario(c):
        _seed(c, 6)
        return [
            c.update_one({"k": 1}, {"$set": {"v": 10}}),
            c.update_one({"k": 1}, {"$set": {"v": 10}}),  # matched, not modified
            c.update_one({"k": 99}, {"$set": {"v": 1}}),
            c.update_one({"k": 100}, {"$set": {"v": 1}}, upsert=True),
            c.update_many({"g": 0}, {"$inc": {"v": 1}, "$set": {"sub.c": True}}),
            c.update_many({"g": 7}, {"$set": {"v": 2}}, upsert=True),
            c.update_many({"k": {"$lt": 3}}, {"$unset": {"name": ""}}),
            c.update_one({"k": 2}, {"$push": {"tags": "x"}}),
            _all(c),
            c.count_documents({}),
        ]

    obs = same(pair, scenario)
    assert [(r["matched_count"], r["modified_count"]) for r in obs[:3]] == [(1, 1), (1, 0), (0, 0)]
    assert obs[3]["upserted_id"] is not None and obs[3]["matched_count"] == 0
    assert (obs[4]["matched_count"], obs[4]["modified_count"], obs[4]["upserted_id"]) == (2, 2, None)
    assert obs[5]["upserted_id"] is not None
    assert obs[6]["modified_count"] == 3 and obs[9] == 8


def test_replace_one(pair: Pair) -> None:
    def scenario(c):
        ids = _seed(c, 3)
        return [
            c.replace_one({"k": 1}, {"k": 1, "replaced": True}),
            c.replace_one({"_id": ids[2]}, {"k": 2, "name": "two"}),
            c.replace_one({"k": 99}, {"k": 99}),
            c.replace_one({"k": 50}, {"k": 50, "new": 1}, upsert=True),
            _all(c),
        ]

    obs = same(pair, scenario)
    assert [r["modified_count"] for r in obs[:3]] == [1, 1, 0]
    assert obs[3]["upserted_id"] is not None
    assert [{k: v for k, v in d.items() if k != "_id"} for d in obs[4]] == [
        {"k": 0, "g": 0, "name": "n0", "sub": {"a": 0, "b": 0}},
        {"k": 1, "replaced": True},
        {"k": 2, "name": "two"},
        {"k": 50, "new": 1},
    ]


def test_delete_one_and_many(pair: Pair) -> None:
    def scenario(c):
        _seed(c)
        return [
            c.delete_one({"g": 1}),
            c.delete_one({"g": 99}),
            c.delete_many({"g": 0}),
            _all(c),
            c.delete_many({}),
            c.count_documents({}),
        ]

    obs = same(pair, scenario)
    assert [r["deleted_count"] for r in (obs[0], obs[1], obs[2], obs[4])] == [1, 0, 4, 5]
    assert [d["k"] for d in obs[3]] == [2, 4, 5, 7, 8] and obs[5] == 0


def test_find_one_and_update_replace_delete(pair: Pair) -> None:
    def scenario(c):
        _seed(c, 5)
        return [
            c.find_one_and_update({"k": 1}, {"$set": {"v": 1}}),
            c.find_one_and_update({"k": 1}, {"$inc": {"v": 1}}, return_document=ReturnDocument.AFTER),
            # (not {"_id": 0, ...}: mongomock's find_one_and_update then returns None)
            c.find_one_and_update({"k": 1}, {"$set": {"w": 1}}, projection={"w": 1}, return_document=True),
            c.find_one_and_update({}, {"$set": {"top": True}}, sort=[("k", -1)], return_document=ReturnDocument.AFTER),
            c.find_one_and_update({"k": 99}, {"$set": {"v": 1}}),
            c.find_one_and_update({"k": 60}, {"$set": {"v": 6}}, upsert=True, return_document=ReturnDocument.AFTER),
            c.find_one_and_replace({"k": 2}, {"k": 2, "r": 1}),
            c.find_one_and_replace({"k": 2}, {"k": 2, "r": 2}, return_document=ReturnDocument.AFTER),
            c.find_one_and_replace({"k": 99}, {"k": 99}),
            c.find_one_and_delete({"k": 3}),
            c.find_one_and_delete({}, sort=[("k", 1)]),
            c.find_one_and_delete({"k": 3}),
            _all(c),
        ]

    obs = same(pair, scenario)
    assert obs[0]["k"] == 1 and "v" not in obs[0]
    assert obs[1]["v"] == 2 and obs[2] == {"_id": obs[0]["_id"], "w": 1} and obs[3]["k"] == 4 and obs[3]["top"] is True
    assert obs[4] is None and {obs[5]["k"], obs[5]["v"]} == {60, 6}
    assert "r" not in obs[6] and obs[7]["r"] == 2 and obs[8] is None
    assert obs[9]["k"] == 3 and obs[10]["k"] == 0 and obs[11] is None
    assert [d["k"] for d in obs[12]] == [1, 2, 4, 60]


# -- bulk_write ----------------------------------------------------------------------------------


def _bulk_scenario(c):
    c.insert_many([{"k": i, "v": i} for i in range(5)])
    mixed = c.bulk_write(
        [
            InsertOne({"k": 10, "v": 10}),
            UpdateOne({"k": 1}, {"$set": {"v": 100}}),
            ReplaceOne({"k": 2}, {"k": 2, "v": 200}),
            DeleteOne({"k": 3}),
            UpdateOne({"k": 50}, {"$set": {"v": 5}}, upsert=True),
            UpdateOne({"k": 0}, {"$set": {"v": 0}}),  # matches, changes nothing
            UpdateMany({"k": {"$gte": 10}}, {"$inc": {"v": 1}}),
        ]
    )
    unordered = c.bulk_write([InsertOne({"k": 11}), DeleteMany({"k": 11})], ordered=False)
    return [mixed, unordered, _all(c)]


def test_bulk_write(pair: Pair) -> None:
    ours = canonical(_bulk_scenario(pair.ours))
    mixed, unordered, docs = ours
    assert mixed["class"] == "BulkWriteResult" and mixed["acknowledged"] is True
    counts = ("inserted_count", "matched_count", "modified_count", "deleted_count", "upserted_count")
    assert [mixed[k] for k in counts] == [1, 5, 4, 1, 1]
    assert list(mixed["upserted_ids"]) == [4] and mixed["upserted_ids"][4].startswith("<oid")
    api = mixed["bulk_api_result"]
    assert (api["nInserted"], api["nMatched"], api["nModified"], api["nRemoved"], api["nUpserted"]) == (1, 5, 4, 1, 1)
    assert api["upserted"] == [{"index": 4, "_id": mixed["upserted_ids"][4]}] and api["writeErrors"] == []
    assert (unordered["inserted_count"], unordered["deleted_count"]) == (1, 1)
    assert [(d["k"], d["v"]) for d in docs] == [(0, 0), (1, 100), (2, 200), (4, 4), (10, 11), (50, 6)]
    if pair.mongomock:
        pytest.skip("mongomock's own bulk_write raises TypeError for UpdateOne/ReplaceOne (superduperdb/store/bulk.py): "
                    "ours was checked against the expected values")
    assert ours == canonical(_bulk_scenario(pair.raw))


def test_bulk_write_inserts_and_deletes_match_the_raw_client(pair: Pair) -> None:
    # mongomock's own bulk_write handles these operations, so both stand-ins compare.
    def scenario(c):
        c.insert_many([{"k": i} for i in range(4)])
        return [
            c.bulk_write([InsertOne({"k": 10}), DeleteOne({"k": 0}), DeleteMany({"k": {"$gt": 2}})]),
            _all(c),
        ]

    obs = same(pair, scenario)
    assert (obs[0]["inserted_count"], obs[0]["deleted_count"]) == (1, 3)
    assert [d["k"] for d in obs[1]] == [1, 2]


@pytest.mark.parametrize("ordered, inserted", [(True, 1), (False, 2)])
def test_bulk_write_errors_like_pymongo(pair: Pair, ordered: bool, inserted: int) -> None:
    requests = [InsertOne({"_id": GIVEN_ID, "k": 1}), InsertOne({"_id": GIVEN_ID, "k": 2}), InsertOne({"k": 3})]
    targets = [pair.ours] if pair.mongomock else list(pair.both)
    for c in targets:
        with pytest.raises(BulkWriteError) as info:
            c.bulk_write(list(requests), ordered=ordered)
        details = info.value.details
        assert details["nInserted"] == inserted
        assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
        assert c.count_documents({}) == inserted


# -- counting, distinct, aggregate ----------------------------------------------------------------


def test_counts_distinct_aggregate(pair: Pair) -> None:
    def scenario(c):
        _seed(c)
        return [
            c.count_documents({}),
            c.count_documents({"g": 0}),
            c.count_documents({}, skip=3, limit=5),
            c.count_documents({"k": 99}),
            c.estimated_document_count(),
            sorted(c.distinct("g")),
            sorted(c.distinct("g", {"k": {"$lt": 2}})),
            sorted(c.distinct("sub.a", {"g": 2})),
            sorted(c.find({"k": {"$gt": 7}}).distinct("g")),
            list(c.aggregate([
                {"$match": {"k": {"$gte": 1}}},
                {"$group": {"_id": "$g", "n": {"$sum": 1}, "total": {"$sum": "$k"}}},
                {"$sort": {"_id": -1}},
            ])),
            list(c.aggregate([{"$sort": {"k": 1}}, {"$skip": 1}, {"$limit": 2}, {"$project": {"_id": 0, "k": 1}}])),
            list(c.aggregate([{"$count": "n"}])),
        ]

    obs = same(pair, scenario)
    assert obs[:5] == [10, 4, 5, 0, 10]
    assert obs[5:9] == [[0, 1, 2], [0, 1], [2, 5, 8], [0, 2]]
    assert obs[9] == [{"_id": 2, "n": 3, "total": 15}, {"_id": 1, "n": 3, "total": 12}, {"_id": 0, "n": 3, "total": 18}]
    assert obs[10] == [{"k": 1}, {"k": 2}] and obs[11] == [{"n": 10}]


# -- indexes and drop ------------------------------------------------------------------------------


def test_create_index_and_index_information(pair: Pair) -> None:
    def scenario(c):
        c.insert_one({"k": 1, "name": "a", "g": 0})
        return [
            c.create_index("k"),
            c.create_index([("name", pymongo.ASCENDING), ("g", pymongo.DESCENDING)]),
            c.create_index("g", name="by_g"),
            c.index_information(),
        ]

    obs = same(pair, scenario)
    assert obs[:3] == ["k_1", "name_1_g_-1", "by_g"]
    assert {name: info["key"] for name, info in obs[3].items()} == {
        "_id_": [("_id", 1)], "k_1": [("k", 1)], "name_1_g_-1": [("name", 1), ("g", -1)], "by_g": [("g", 1)],
    }


def test_drop(pair: Pair) -> None:
    database = pair.ours.database
    pair.ours.create_type("marker", MarkerType())  # metadata beside the collection goes too

    def scenario(c):
        c.insert_many([{"k": i} for i in range(3)])
        c.create_index("k")
        before = c.name in database.list_collection_names()
        result = c.drop()
        return [result, before, c.name in database.list_collection_names(), c.count_documents({}),
                sorted(set(c.index_information()) - {"_id_"})]

    obs = same(pair, scenario)
    assert obs == [None, True, False, 0, []]
    assert not [n for n in database.list_collection_names() if n.startswith("ours.")]
    # the collection can be used again after a drop, as in pymongo
    assert database["ours"].insert_one({"k": 1}).acknowledged and database["ours"].count_documents({}) == 1


class MarkerType:
    types = ()

    def encode(self, x: Any) -> bytes:
        return b""

    def decode(self, data: bytes) -> Any:
        return None


# -- connecting ------------------------------------------------------------------------------------


def test_connecting_like_pymongo(backend) -> None:
    uri, dbname = backend
    first = superduperdb.connect(uri, cluster=None, config={"data.assign_folds": False})
    oid = first[dbname]["c"].insert_one({"k": 1}).inserted_id
    if uri.startswith("mongomock://"):
        clients = [superduperdb.SuperDuperClient(first.raw, cluster=None)]  # wrapping the store
        raw_client = first.raw
    else:
        raw_client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
        host, port = raw_client.address
        clients = [
            superduperdb.SuperDuperClient(host, port, cluster=None),
            superduperdb.SuperDuperClient(f"{host}:{port}", cluster=None),
            superduperdb.SuperDuperClient(port=port, cluster=None),  # localhost, as pymongo
            superduperdb.SuperDuperClient(uri, cluster=None, serverSelectionTimeoutMS=5000),  # pymongo kwargs
            superduperdb.SuperDuperClient(raw_client, cluster=None),  # wrapping a pymongo client
        ]
    try:
        for client in clients:
            by_attr, by_item = getattr(client, dbname).c, client[dbname]["c"]
            assert isinstance(by_attr, superduperdb.Collection) and by_attr == by_item
            raw_doc = raw_client[dbname]["c"].find_one(oid)
            assert set(raw_doc.pop("_sdb")) == {"seq", "part"}  # the write position, hidden by find()
            assert by_attr.find_one(oid) == {"_id": oid, "k": 1} == raw_doc
            assert dbname in client.list_database_names()  # client methods pass through
            assert set(client[dbname].list_collection_names()) >= {"c"}
    finally:
        for client in clients:
            client.close()
        first.drop_database(dbname)
        first.close()
        if not uri.startswith("mongomock://"):
            raw_client.close()
