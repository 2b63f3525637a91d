"""What pymongo can rely on when it talks to CongoDB over TCP.

CongoDB (from the npm package ``@push.rocks/smartmongo@2.2.0``) is the stand-in for MongoDB in
the integration tests.  Each test here exercises one operation the library uses.  Tests for
operations that do *not* behave like real MongoDB are marked ``xfail(strict=True)``: they assert
real-MongoDB behaviour and document the quirk, so the suite stays green while CongoDB is what
it is, and turns red (XPASS) if a new CongoDB version fixes one of them.

``tests/congodb/install.sh`` patches CongoDB (``tests/congodb/patches/``) for bugs that the
tests here guard against:

* every update with operators (``$set``, ``$push``, ...) rewrote the *whole* document through a
  deep clone that turned each Binary, Decimal128, large Int64, Regex, Code, MinKey and MaxKey in
  it into a plain sub-document (e.g. ``{'sub_type': 0, 'buffer': {'0': 97}, 'position': 1}``);
* every ``_id`` was coerced to an ObjectId (a string ``_id`` was rejected, an integer one
  silently became an unrelated ObjectId); now an ``_id`` of any type but array round-trips.
* a reply over 17 MB failed to encode and was answered to request 0 (pymongo: ``ProtocolError:
  Got response id 0 but expected ...``), e.g. reading a GridFS file of more than ~17 MB; batches
  are now bounded at 16 MiB as in mongod, and a large message is received in linear time.
"""

from __future__ import annotations

import datetime
import itertools
import random
import re
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import gridfs
import pymongo
import pytest
from bson import Binary, ObjectId
from pymongo import DeleteOne, InsertOne, ReplaceOne, ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, WriteError

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)
import congodb_server  # noqa: E402
from congodb_server import CongoDB  # noqa: E402

pytestmark = pytest.mark.integration

Doc = dict[str, Any]
_db_counter = itertools.count()


def quirk(reason: str, raises: type[BaseException] | None = None) -> pytest.MarkDecorator:
    """Mark a test that asserts real-MongoDB behaviour which CongoDB does not have."""
    return pytest.mark.xfail(strict=True, reason=f"CongoDB quirk: {reason}", raises=raises)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def congo() -> Iterator[CongoDB]:
    """One CongoDB server for the whole module (installed on first use)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed; CongoDB needs it")
    with CongoDB() as server:
        yield server


@pytest.fixture(scope="module")
def client(congo: CongoDB) -> Iterator[pymongo.MongoClient[Doc]]:
    """A pymongo client connected to the module's CongoDB over TCP."""
    mongo_client: pymongo.MongoClient[Doc] = pymongo.MongoClient(congo.uri, serverSelectionTimeoutMS=5000)
    yield mongo_client
    mongo_client.close()


@pytest.fixture
def db(client: pymongo.MongoClient[Doc]) -> Iterator[Database[Doc]]:
    """A fresh database per test, dropped afterwards."""
    name = f"smoke_{next(_db_counter)}"
    yield client[name]
    client.drop_database(name)


def _numbers(db: Database[Doc], n: int = 10) -> list[ObjectId]:
    """Insert ``{'i': 0..n-1, 'g': i % 3}`` into ``db.numbers`` in order; return the ids."""
    return list(db.numbers.insert_many([{"i": i, "g": i % 3} for i in range(n)]).inserted_ids)


# -- install -------------------------------------------------------------------------------


def test_install_dir_in_sync() -> None:
    """install.sh, server.mjs and congodb_server.py agree on the (patch-level) install dir."""
    congodb_dir = congodb_server.CONGODB_DIR
    install_sh = (congodb_dir / "install.sh").read_text()
    version = re.search(r'^readonly VERSION="([^"]+)"$', install_sh, re.M)
    suffix = re.search(r'^readonly INSTALL_NAME="\$\{VERSION\}([^"]*)"$', install_sh, re.M)
    assert version and suffix
    name = version.group(1) + suffix.group(1)
    assert congodb_server.INSTALL_MARKER.parent.name == name
    assert f"./smartmongo/{name}/package/" in (congodb_dir / "server.mjs").read_text()
    assert sorted(p.name for p in (congodb_dir / "patches").glob("*.patch"))


# -- server and connection -----------------------------------------------------------------


def test_server_api(congo: CongoDB) -> None:
    assert congo.running
    assert congo.uri == f"mongodb://127.0.0.1:{congo.port}/"
    assert congo.log_path is not None and congo.log_path.is_file()


def test_ping_roundtrip(
    client: pymongo.MongoClient[Doc], record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert client.admin.command("ping") == {"ok": 1}
    timings = []
    for _ in range(200):
        start = time.perf_counter()
        client.admin.command("ping")
        timings.append(time.perf_counter() - start)
    median_ms = statistics.median(timings) * 1000
    record_property("ping_median_ms", round(median_ms, 3))
    with capsys.disabled():
        print(f"\nCongoDB ping roundtrip: median {median_ms:.2f} ms over {len(timings)} pings")
    assert median_ms < 50


def test_build_info_command(client: pymongo.MongoClient[Doc]) -> None:
    info = client.admin.command("buildInfo")
    assert info["version"] == "7.0.0"


@quirk(
    "server_info() sends 'buildinfo' (lower case) and only 'buildInfo' is registered: "
    "OperationFailure \"no such command: 'buildinfo'\" (code 59)",
    raises=OperationFailure,
)
def test_server_info(client: pymongo.MongoClient[Doc]) -> None:
    assert "version" in client.server_info()


def test_list_databases_and_collections(client: pymongo.MongoClient[Doc], db: Database[Doc]) -> None:
    db.alpha.insert_one({"a": 1})
    db.beta.insert_one({"b": 1})
    assert db.name in client.list_database_names()
    assert db.name in {entry["name"] for entry in client.list_databases()}
    assert set(db.list_collection_names()) == {"alpha", "beta"}
    assert {entry["name"] for entry in db.list_collections()} == {"alpha", "beta"}


def test_dotted_collection_names(db: Database[Doc]) -> None:
    types = db["docs._types"]
    oid = types.insert_one({"name": "int"}).inserted_id
    db["docs"].insert_one({"x": 1})
    assert types.find_one({"name": "int"}) == {"_id": oid, "name": "int"}
    assert db["docs"].count_documents({}) == 1
    assert set(db.list_collection_names()) == {"docs", "docs._types"}
    types.drop()
    assert db.list_collection_names() == ["docs"]


# -- inserts and _id -----------------------------------------------------------------------


def test_insert_one_and_insert_many(db: Database[Doc]) -> None:
    result = db.c.insert_one({"x": 1})
    assert result.acknowledged and isinstance(result.inserted_id, ObjectId)
    given = ObjectId()
    assert db.c.insert_one({"_id": given, "x": 2}).inserted_id == given
    many = db.c.insert_many([{"x": i} for i in range(3, 8)])
    assert len(many.inserted_ids) == 5
    assert db.c.count_documents({}) == 7
    assert db.c.find_one({"_id": given}) == {"_id": given, "x": 2}


def test_duplicate_objectid_rejected(db: Database[Doc]) -> None:
    oid = db.c.insert_one({"x": 1}).inserted_id
    with pytest.raises(DuplicateKeyError):
        db.c.insert_one({"_id": oid})
    with pytest.raises(BulkWriteError) as excinfo:
        db.c.insert_many([{"_id": oid}, {"x": 2}])  # ordered: stops at the first error
    assert excinfo.value.details["nInserted"] == 0
    with pytest.raises(BulkWriteError) as excinfo:
        db.c.insert_many([{"_id": oid}, {"x": 3}], ordered=False)
    assert excinfo.value.details["nInserted"] == 1
    assert db.c.count_documents({}) == 2


def test_string_id(db: Database[Doc]) -> None:
    assert db.c.insert_one({"_id": "my-key", "x": 1}).inserted_id == "my-key"
    assert db.c.find_one({"_id": "my-key"}) == {"_id": "my-key", "x": 1}
    with pytest.raises(DuplicateKeyError):
        db.c.insert_one({"_id": "my-key"})
    db.c.insert_many([{"_id": "k2", "x": 2}, {"_id": "", "x": 3}])
    assert sorted(db.c.distinct("_id")) == ["", "k2", "my-key"]
    assert db.c.update_one({"_id": "my-key"}, {"$set": {"y": 1}}).modified_count == 1
    assert db.c.find_one_and_update({"_id": "k2"}, {"$inc": {"x": 1}}, return_document=True) == {
        "_id": "k2",
        "x": 3,
    }
    assert db.c.replace_one({"_id": ""}, {"z": 1}).modified_count == 1
    assert db.c.find_one({"_id": ""}) == {"_id": "", "z": 1}
    assert db.c.delete_one({"_id": "my-key"}).deleted_count == 1
    assert db.c.count_documents({}) == 2
    assert db.c.create_index("x") == "x_1"  # indexing documents with string ids


def test_upsert_with_string_id(db: Database[Doc]) -> None:
    db.c.update_one({"_id": "my-key"}, {"$set": {"x": 1}}, upsert=True)
    assert db.c.find_one({"_id": "my-key"}) == {"_id": "my-key", "x": 1}


def test_hex_string_id_keeps_its_type(db: Database[Doc]) -> None:
    key = "a" * 24
    db.c.insert_one({"_id": key})
    assert db.c.find_one() == {"_id": key}


def test_integer_id(db: Database[Doc]) -> None:
    db.c.insert_one({"_id": 7})
    assert db.c.find_one({"_id": 7}) == {"_id": 7}
    with pytest.raises(DuplicateKeyError):
        db.c.insert_one({"_id": 7})
    db.c.insert_one({"_id": 0})  # a falsy _id is kept, not replaced by an ObjectId
    assert db.c.find_one({"_id": 0}) == {"_id": 0}
    assert db.c.update_one({"_id": 7}, {"$set": {"v": 1}}).modified_count == 1
    assert sorted(d["_id"] for d in db.c.find()) == [0, 7]
    bulk = db.c.bulk_write([UpdateOne({"_id": 8}, {"$set": {"v": 2}}, upsert=True), DeleteOne({"_id": 0})])
    assert bulk.upserted_ids == {0: 8} and bulk.deleted_count == 1
    assert list(db.c.find().sort("_id", 1)) == [{"_id": 7, "v": 1}, {"_id": 8, "v": 2}]


def test_ids_of_different_types_do_not_collide(db: Database[Doc]) -> None:
    oid = ObjectId("a" * 24)
    keys: list[Any] = [oid, "a" * 24, 1, "1", {"k": 1}, Binary(b"a" * 24, 5)]
    db.c.insert_many([{"_id": key} for key in keys])
    assert db.c.count_documents({}) == len(keys)
    for key in keys:
        assert db.c.find_one({"_id": key}) == {"_id": key}
    found = db.c.find_one({"_id": oid})
    assert found is not None and isinstance(found["_id"], ObjectId)


def test_array_id_rejected(db: Database[Doc]) -> None:
    with pytest.raises(WriteError) as excinfo:
        db.c.insert_one({"_id": [1, 2]})
    assert excinfo.value.code == 53
    assert db.c.count_documents({}) == 0


def test_binary_id(db: Database[Doc]) -> None:
    key = Binary(b"0123456789abcdef", 4)
    db.c.insert_one({"_id": key})
    assert db.c.find_one({"_id": key}) == {"_id": key}


def test_id_in_objectids(db: Database[Doc]) -> None:
    ids = _numbers(db)
    found = db.numbers.find({"_id": {"$in": [ids[1], ids[3], ObjectId()]}}).sort("i", 1)
    assert [doc["i"] for doc in found] == [1, 3]
    assert db.numbers.count_documents({"_id": {"$nin": ids[:8]}}) == 2


# -- reads -------------------------------------------------------------------------------


def test_find_sort_skip_limit(db: Database[Doc]) -> None:
    _numbers(db)
    assert [d["i"] for d in db.numbers.find().sort("i", -1)] == list(range(9, -1, -1))
    assert [d["i"] for d in db.numbers.find().sort("i", 1).skip(2).limit(3)] == [2, 3, 4]
    assert [d["i"] for d in db.numbers.find({}, sort=[("i", 1)], skip=8, limit=5)] == [8, 9]
    multi = db.numbers.find().sort([("g", -1), ("i", 1)]).limit(4)
    assert [(d["g"], d["i"]) for d in multi] == [(2, 2), (2, 5), (2, 8), (1, 1)]
    assert [d["i"] for d in db.numbers.find().sort("_id", -1).limit(2)] == [9, 8]
    assert [d["i"] for d in db.numbers.find({"i": {"$gte": 3, "$lt": 6}})] == [3, 4, 5]
    assert db.numbers.count_documents({"$or": [{"i": 1}, {"g": 2}]}) == 4


def test_natural_order_and_stable_sort(db: Database[Doc]) -> None:
    """Observed, not guaranteed by MongoDB: insertion order, and ties keep it."""
    _numbers(db)
    assert [d["i"] for d in db.numbers.find()] == list(range(10))
    assert [d["i"] for d in db.numbers.find().sort("g", 1)] == [0, 3, 6, 9, 1, 4, 7, 2, 5, 8]


@quirk(
    "mixed-type sort does not follow BSON order (numbers < strings < booleans): "
    "CongoDB gives [1, 2.5, True, 'x']",
    raises=AssertionError,
)
def test_sort_mixed_types_bson_order(db: Database[Doc]) -> None:
    db.c.insert_many([{"a": "x"}, {"a": 1}, {"a": 2.5}, {"a": True}])
    assert [d["a"] for d in db.c.find().sort("a", 1)] == [1, 2.5, "x", True]


def test_find_projection(db: Database[Doc]) -> None:
    db.c.insert_one({"x": 1, "y": 2, "o": {"a": 1, "b": 2}})
    assert db.c.find_one({}, {"_id": 0, "x": 1}) == {"x": 1}
    without = db.c.find_one({}, {"y": 0, "o": 0})
    assert without is not None and set(without) == {"_id", "x"}
    assert db.c.find_one({}, {"_id": 0, "o.a": 1}) == {"o": {"a": 1}}
    assert list(db.c.find({}, ["x"]))[0].keys() == {"_id", "x"}


def test_find_batch_size_get_more(db: Database[Doc]) -> None:
    db.c.insert_many([{"i": i} for i in range(250)])
    assert [d["i"] for d in db.c.find().sort("i", 1).batch_size(7)] == list(range(250))
    assert sum(1 for _ in db.c.find(batch_size=100)) == 250
    assert len(list(db.c.find().limit(-5))) == 5


def test_count_documents_and_estimated_document_count(db: Database[Doc]) -> None:
    _numbers(db)
    assert db.numbers.count_documents({}) == 10
    assert db.numbers.count_documents({"g": 0}) == 4
    assert db.numbers.count_documents({}, skip=3, limit=5) == 5
    assert db.numbers.estimated_document_count() == 10
    assert db.missing.count_documents({}) == 0
    assert db.missing.estimated_document_count() == 0


def test_distinct(db: Database[Doc]) -> None:
    _numbers(db)
    assert sorted(db.numbers.distinct("g")) == [0, 1, 2]
    assert sorted(db.numbers.distinct("g", {"i": {"$lt": 2}})) == [0, 1]
    assert sorted(db.numbers.find({"i": {"$gt": 7}}).distinct("g")) == [0, 2]


@quirk("distinct('_id') returns hex strings instead of ObjectIds", raises=AssertionError)
def test_distinct_id_returns_objectids(db: Database[Doc]) -> None:
    ids = _numbers(db, 3)
    assert sorted(db.numbers.distinct("_id")) == sorted(ids)


def test_aggregate_match_group_sort(db: Database[Doc]) -> None:
    _numbers(db)
    pipeline: list[Doc] = [
        {"$match": {"i": {"$gte": 1}}},
        {"$group": {"_id": "$g", "n": {"$sum": 1}, "total": {"$sum": "$i"}, "xs": {"$push": "$i"}}},
        {"$sort": {"_id": -1}},
    ]
    assert list(db.numbers.aggregate(pipeline)) == [
        {"_id": 2, "n": 3, "total": 15, "xs": [2, 5, 8]},
        {"_id": 1, "n": 3, "total": 12, "xs": [1, 4, 7]},
        {"_id": 0, "n": 3, "total": 18, "xs": [3, 6, 9]},
    ]
    rest: list[Doc] = [{"$sort": {"i": 1}}, {"$skip": 1}, {"$limit": 2}, {"$project": {"_id": 0, "i": 1}}]
    assert list(db.numbers.aggregate(rest)) == [{"i": 1}, {"i": 2}]
    assert list(db.numbers.aggregate([{"$count": "n"}])) == [{"n": 10}]
    assert len(list(db.numbers.aggregate([{"$match": {}}], batchSize=3))) == 10


# -- updates -------------------------------------------------------------------------------


def test_nested_set_on_outputs(db: Database[Doc]) -> None:
    oid = db.c.insert_one({"x": 1}).inserted_id
    result = db.c.update_one({"_id": oid}, {"$set": {"_outputs.x.y": 5}})
    assert (result.matched_count, result.modified_count) == (1, 1)
    db.c.update_one({"_id": oid}, {"$set": {"_outputs.x.z": [1, 2], "_outputs.w.y": "a"}})
    assert db.c.find_one({"_id": oid}) == {
        "_id": oid,
        "x": 1,
        "_outputs": {"x": {"y": 5, "z": [1, 2]}, "w": {"y": "a"}},
    }
    assert db.c.count_documents({"_outputs.x.y": 5}) == 1
    assert db.c.count_documents({"_outputs.x": {"$exists": True}}) == 1
    assert db.c.count_documents({"_outputs.q": {"$exists": False}}) == 1


def test_unset(db: Database[Doc]) -> None:
    oid = db.c.insert_one({"x": 1, "y": 2, "_outputs": {"x": {"y": 1, "z": 2}}}).inserted_id
    result = db.c.update_one({"_id": oid}, {"$unset": {"y": "", "_outputs.x.z": ""}})
    assert result.modified_count == 1
    assert db.c.find_one({"_id": oid}) == {"_id": oid, "x": 1, "_outputs": {"x": {"y": 1}}}


def test_update_many(db: Database[Doc]) -> None:
    _numbers(db)
    first = db.numbers.update_many({"g": 0}, {"$set": {"flag": True}})
    assert (first.matched_count, first.modified_count) == (4, 4)
    again = db.numbers.update_many({"g": 0}, {"$set": {"flag": True}})
    assert (again.matched_count, again.modified_count) == (4, 0)
    none = db.numbers.update_many({"g": 99}, {"$set": {"flag": True}})
    assert (none.matched_count, none.modified_count, none.upserted_id) == (0, 0, None)
    db.numbers.update_many({}, {"$inc": {"i": 100}})
    assert sorted(db.numbers.distinct("i")) == list(range(100, 110))


def test_update_one_upsert(db: Database[Doc]) -> None:
    result = db.c.update_one(
        {"k": "a"}, {"$set": {"v": 1}, "$setOnInsert": {"s": 0}, "$inc": {"n": 1}}, upsert=True
    )
    assert (result.matched_count, result.modified_count) == (0, 0)
    assert isinstance(result.upserted_id, ObjectId)
    assert db.c.find_one({"_id": result.upserted_id}) == {
        "_id": result.upserted_id,
        "k": "a",
        "v": 1,
        "s": 0,
        "n": 1,
    }
    again = db.c.update_one({"k": "a"}, {"$inc": {"n": 1}}, upsert=True)
    assert (again.matched_count, again.modified_count, again.upserted_id) == (1, 1, None)


def test_replace_one(db: Database[Doc]) -> None:
    oid = db.c.insert_one({"x": 1, "y": 2}).inserted_id
    result = db.c.replace_one({"x": 1}, {"x": 1, "z": 3})
    assert (result.matched_count, result.modified_count, result.upserted_id) == (1, 1, None)
    assert db.c.find_one({"_id": oid}) == {"_id": oid, "x": 1, "z": 3}
    upserted = db.c.replace_one({"x": 9}, {"x": 9}, upsert=True)
    assert isinstance(upserted.upserted_id, ObjectId)
    assert db.c.count_documents({}) == 2


@quirk(
    "replace_one may change _id (real MongoDB: WriteError 'the (immutable) field _id was "
    "found to have been altered'); CongoDB accepts it and its id index goes stale",
    raises=pytest.fail.Exception,
)
def test_replace_one_rejects_changing_id(db: Database[Doc]) -> None:
    oid = db.c.insert_one({"x": 1}).inserted_id
    with pytest.raises(WriteError):
        db.c.replace_one({"_id": oid}, {"_id": ObjectId(), "x": 2})


def test_delete_one_and_many(db: Database[Doc]) -> None:
    _numbers(db)
    assert db.numbers.delete_one({"g": 1}).deleted_count == 1
    assert db.numbers.delete_one({"g": 99}).deleted_count == 0
    assert db.numbers.delete_many({"g": 0}).deleted_count == 4
    assert db.numbers.count_documents({}) == 5
    assert db.numbers.delete_many({}).deleted_count == 5
    assert db.numbers.count_documents({}) == 0


def test_find_one_and_update(db: Database[Doc]) -> None:
    oid = db.c.insert_one({"k": 1, "v": 0}).inserted_id
    before = db.c.find_one_and_update({"k": 1}, {"$set": {"v": 1}})
    assert before == {"_id": oid, "k": 1, "v": 0}
    after = db.c.find_one_and_update({"k": 1}, {"$inc": {"v": 1}}, return_document=ReturnDocument.AFTER)
    assert after == {"_id": oid, "k": 1, "v": 2}
    projected = db.c.find_one_and_update(
        {"k": 1}, {"$set": {"w": 1}}, projection={"_id": 0, "w": 1}, return_document=True
    )
    assert projected == {"w": 1}
    assert db.c.find_one_and_update({"k": 99}, {"$set": {"v": 1}}) is None
    assert db.c.find_one_and_update({"k": 2}, {"$set": {"v": 5}}, upsert=True) is None
    upserted = db.c.find_one_and_update(
        {"k": 3}, {"$set": {"v": 6}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert upserted is not None and {k: upserted[k] for k in ("k", "v")} == {"k": 3, "v": 6}
    top = db.c.find_one_and_update(
        {}, {"$set": {"top": True}}, sort=[("k", -1)], return_document=ReturnDocument.AFTER
    )
    assert top is not None and top["k"] == 3 and top["top"] is True


def test_find_one_and_replace(db: Database[Doc]) -> None:
    oid = db.c.insert_one({"k": 1, "v": 0}).inserted_id
    assert db.c.find_one_and_replace({"k": 1}, {"k": 1, "r": 1}) == {"_id": oid, "k": 1, "v": 0}
    after = db.c.find_one_and_replace({"k": 1}, {"k": 1, "r": 2}, return_document=ReturnDocument.AFTER)
    assert after == {"_id": oid, "k": 1, "r": 2}
    assert db.c.find_one_and_replace({"k": 99}, {"k": 99}) is None
    upserted = db.c.find_one_and_replace(
        {"k": 5}, {"k": 5}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert upserted is not None and upserted["k"] == 5


def test_find_one_and_delete(db: Database[Doc]) -> None:
    _numbers(db, 5)
    deleted = db.numbers.find_one_and_delete({"i": 2})
    assert deleted is not None and deleted["i"] == 2
    last = db.numbers.find_one_and_delete({}, sort=[("i", -1)])
    assert last is not None and last["i"] == 4
    assert db.numbers.find_one_and_delete({"i": 2}) is None
    assert sorted(db.numbers.distinct("i")) == [0, 1, 3]


def test_bulk_write(db: Database[Doc]) -> None:
    db.c.insert_many([{"k": i, "v": i} for i in range(5)])
    result = db.c.bulk_write(
        [
            InsertOne({"k": 10, "v": 10}),
            UpdateOne({"k": 1}, {"$set": {"v": 100}}),
            ReplaceOne({"k": 2}, {"k": 2, "v": 200}),
            DeleteOne({"k": 3}),
            UpdateOne({"k": 50}, {"$set": {"v": 5}}, upsert=True),
            UpdateOne({"k": 0}, {"$set": {"v": 0}}),  # matches, changes nothing
        ]
    )
    assert result.acknowledged
    assert result.inserted_count == 1
    assert result.matched_count == 3
    assert result.modified_count == 2
    assert result.deleted_count == 1
    assert result.upserted_count == 1
    assert list(result.upserted_ids) == [4]
    assert isinstance(result.upserted_ids[4], ObjectId)
    assert sorted((d["k"], d["v"]) for d in db.c.find()) == [
        (0, 0),
        (1, 100),
        (2, 200),
        (4, 4),
        (10, 10),
        (50, 5),
    ]
    unordered = db.c.bulk_write([InsertOne({"k": 11}), DeleteOne({"k": 11})], ordered=False)
    assert (unordered.inserted_count, unordered.deleted_count) == (1, 1)


# -- indexes and drop ----------------------------------------------------------------------


def test_create_index_and_index_information(db: Database[Doc]) -> None:
    db.c.insert_one({"x": 1, "name": "a", "g": 0})
    assert db.c.create_index("x") == "x_1"
    assert db.c.create_index([("name", pymongo.ASCENDING), ("g", pymongo.DESCENDING)]) == "name_1_g_-1"
    info = db.c.index_information()
    assert info["_id_"]["key"] == [("_id", 1)]
    assert info["x_1"]["key"] == [("x", 1)]
    assert info["name_1_g_-1"]["key"] == [("name", 1), ("g", -1)]
    assert {index["name"] for index in db.c.list_indexes()} == {"_id_", "x_1", "name_1_g_-1"}
    db.c.drop_index("x_1")
    assert set(db.c.index_information()) == {"_id_", "name_1_g_-1"}
    assert db.c.find_one({"x": 1}) is not None


def test_unique_index_creation_checks_existing_data(db: Database[Doc]) -> None:
    db.c.insert_many([{"k": 1}, {"k": 1}])
    with pytest.raises(DuplicateKeyError):
        db.c.create_index("k", unique=True)


@quirk("a unique index is not enforced on later inserts", raises=pytest.fail.Exception)
def test_unique_index_enforced(db: Database[Doc]) -> None:
    db.c.create_index("k", unique=True)
    db.c.insert_one({"k": 1})
    with pytest.raises(DuplicateKeyError):
        db.c.insert_one({"k": 1})


def test_drop_collection_and_database(client: pymongo.MongoClient[Doc], db: Database[Doc]) -> None:
    db.c.insert_one({"x": 1})
    db.c.create_index("x")
    db.other.insert_one({"x": 1})
    db.c.drop()
    assert db.list_collection_names() == ["other"]
    assert db.c.count_documents({}) == 0
    assert set(db.c.index_information()) <= {"_id_"}
    db.never_created.drop()  # no error
    client.drop_database(db.name)
    assert db.name not in client.list_database_names()


# -- value types ---------------------------------------------------------------------------


def test_binary_round_trip(db: Database[Doc]) -> None:
    payload = bytes(range(256)) * 4
    big = b"\x07" * 3_000_000
    oid = db.c.insert_one(
        {"b0": Binary(payload), "raw": b"\x00abc", "uuid": Binary(b"u" * 16, 4), "big": Binary(big)}
    ).inserted_id
    doc = db.c.find_one({"_id": oid})
    assert doc is not None
    # pymongo decodes subtype 0 as bytes (as with real MongoDB); other subtypes stay Binary
    assert doc["b0"] == payload and isinstance(doc["b0"], bytes)
    assert doc["raw"] == b"\x00abc"
    assert doc["uuid"] == Binary(b"u" * 16, 4) and doc["uuid"].subtype == 4
    assert doc["big"] == big
    assert db.c.count_documents({"raw": b"\x00abc"}) == 1


def test_scalar_types_round_trip(db: Database[Doc]) -> None:
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, 123000)
    ref = ObjectId()
    value = {
        "f": 1.5,
        "i32": 2**31 - 1,
        "i64": bson.Int64(5),
        "n": None,
        "t": True,
        "l": [1, "a", {"b": 2}],
        "d": {},
        "when": when,
        "ref": ref,
        "dec": bson.Decimal128("1.25"),
    }
    oid = db.c.insert_one(dict(value)).inserted_id
    assert db.c.find_one({"_id": oid}, {"_id": 0}) == value
    assert db.c.count_documents({"ref": ref}) == 1
    assert list(db.c.find_one({"_id": oid}, {"_id": 0}) or {}) == list(value)  # key order kept


def _bson_values() -> Doc:
    """One value of each BSON type that an update used to mangle (or might)."""
    return {
        "bin": Binary(b"abc", 5),
        "raw": b"\x00xy",  # subtype 0, read back as bytes
        "uuid": Binary(b"u" * 16, 4),
        "ref": ObjectId(),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5, 123000),
        "dec": bson.Decimal128("1.25"),
        "i64": bson.Int64(5),
        "big": bson.Int64(2**60),
        "re": bson.Regex("^a", "i"),
        "code": bson.Code("x = 1"),
        "ts": bson.Timestamp(5, 1),
        "min": bson.MinKey(),
        "max": bson.MaxKey(),
        "nested": [[Binary(b"a", 5), b"b"], {"deep": [b"c"], "oid": ObjectId()}],
    }


def test_update_keeps_bson_values_of_whole_document(db: Database[Doc]) -> None:
    """Regression: an operator update turned every Binary etc. in the document into a dict."""
    values = _bson_values()
    oid = db.c.insert_one({"k": 1, **values}).inserted_id
    expected: Doc = {"_id": oid, "k": 1, **values}

    db.c.update_one({"k": 1}, {"$set": {"q": [Binary(b"xy", 0)], "o.m": Binary(b"abc")}})
    expected.update(q=[b"xy"], o={"m": b"abc"})
    assert db.c.find_one({"_id": oid}) == expected

    db.c.update_many({"k": 1}, {"$inc": {"n": 1}, "$unset": {"o": ""}})
    del expected["o"]
    expected["n"] = 1
    assert db.c.find_one({"_id": oid}) == expected

    after = db.c.find_one_and_update(
        {"k": 1}, {"$push": {"q": Binary(b"zz", 5)}}, return_document=ReturnDocument.AFTER
    )
    expected["q"] = [b"xy", Binary(b"zz", 5)]
    assert after == expected
    assert db.c.find_one({"_id": oid}) == expected

    db.c.bulk_write([UpdateOne({"k": 1}, {"$addToSet": {"tags": bson.Decimal128("2.5")}})])
    expected["tags"] = [bson.Decimal128("2.5")]
    assert db.c.find_one({"_id": oid}) == expected
    assert db.c.count_documents({"bin": Binary(b"abc", 5), "dec": bson.Decimal128("1.25")}) == 1


def test_update_sets_bson_values(db: Database[Doc]) -> None:
    values = _bson_values()
    oid = db.c.insert_one({"k": 1}).inserted_id
    db.c.update_one({"_id": oid}, {"$set": values})
    assert db.c.find_one({"_id": oid}) == {"_id": oid, "k": 1, **values}
    db.c.update_one({"_id": oid}, {"$set": {f"sub.{key}": value for key, value in values.items()}})
    assert db.c.find_one({"_id": oid}, {"_id": 0, "sub": 1}) == {"sub": values}
    upserted = db.c.update_one({"k": 2}, {"$set": {"bin": values["bin"]}}, upsert=True).upserted_id
    assert db.c.find_one({"_id": upserted}) == {"_id": upserted, "k": 2, "bin": values["bin"]}


def test_update_detects_binary_changes(db: Database[Doc]) -> None:
    oid = db.c.insert_one({"p": Binary(b"xy", 0)}).inserted_id
    changed = db.c.update_one({"_id": oid}, {"$set": {"p": Binary(b"xy", 5)}})  # only the subtype
    assert changed.modified_count == 1
    assert db.c.find_one({"_id": oid}) == {"_id": oid, "p": Binary(b"xy", 5)}
    assert db.c.update_one({"_id": oid}, {"$set": {"p": Binary(b"xy", 5)}}).modified_count == 0
    assert db.c.update_one({"_id": oid}, {"$set": {"p": Binary(b"xz", 5)}}).modified_count == 1


@quirk(
    "integers between 2**31 and 2**53 come back as float (e.g. 2**40 -> 1099511627776.0): "
    "values are kept, the int type is lost",
    raises=AssertionError,
)
def test_large_int_keeps_int_type(db: Database[Doc]) -> None:
    oid = db.c.insert_one({"big": 2**40}).inserted_id
    doc = db.c.find_one({"_id": oid})
    assert doc is not None and type(doc["big"]) is int


# -- GridFS --------------------------------------------------------------------------------


def test_gridfs_legacy_with_objectid_ids(db: Database[Doc]) -> None:
    fs = gridfs.GridFS(db, collection="docs._artifacts")
    data = b"hello world " * 50_000  # several chunks
    file_id = fs.put(data, filename="blob.bin")
    assert isinstance(file_id, ObjectId)
    assert fs.exists(file_id)
    assert fs.exists(filename="blob.bin")
    assert fs.get(file_id).read() == data
    assert fs.get_last_version("blob.bin").read() == data
    given = ObjectId()
    assert fs.put(b"x", _id=given) == given and fs.get(given).read() == b"x"
    fs.delete(file_id)
    assert not fs.exists(file_id)
    assert {"docs._artifacts.files", "docs._artifacts.chunks"} <= set(db.list_collection_names())


def test_gridfs_legacy_with_custom_string_id(db: Database[Doc]) -> None:
    fs = gridfs.GridFS(db, collection="docs._artifacts")
    assert fs.put(b"payload", _id="artifact-1") == "artifact-1"
    assert fs.exists("artifact-1")
    assert fs.get("artifact-1").read() == b"payload"
    fs.delete("artifact-1")
    assert not fs.exists("artifact-1")


def test_gridfs_string_key_as_filename(db: Database[Doc]) -> None:
    """Workaround for string ids: keep the key in ``filename`` (works on real MongoDB too)."""
    fs = gridfs.GridFS(db, collection="docs._artifacts")
    fs.put(b"payload", filename="artifact-1", metadata={"kind": "blob"})
    assert fs.exists(filename="artifact-1")
    assert fs.get_last_version("artifact-1").read() == b"payload"
    found = fs.find_one({"filename": "artifact-1"})
    assert found is not None and found.metadata == {"kind": "blob"}
    fs.delete(found._id)
    assert not fs.exists(filename="artifact-1")
    assert db["docs._artifacts.chunks"].count_documents({}) == 0


def test_replies_over_16_mib_come_in_batches(db: Database[Doc]) -> None:
    """Like mongod, a batch holds at most 16 MiB of documents, so no reply is too big to send."""
    mib = 1024 * 1024
    db.big.insert_many([{"i": i, "data": Binary(bytes([i]) * mib)} for i in range(24)])
    first = db.command("find", "big", sort={"i": 1})["cursor"]
    sizes = [len(bson.encode(d)) for d in first["firstBatch"]]
    assert 1 <= len(sizes) < 24 and sum(sizes) <= 16 * mib
    assert first["id"] != 0  # the rest is left for getMore
    got = [(d["i"], d["data"]) for d in db.big.find().sort("i", 1)]
    assert got == [(i, bytes([i]) * mib) for i in range(24)]


def test_gridfs_file_as_big_as_a_real_model(db: Database[Doc]) -> None:
    """all-MiniLM-L6-v2 is 91 MB stored: stock CongoDB failed to read it back (ProtocolError)."""
    fs = gridfs.GridFS(db, collection="docs._artifacts")
    data = random.Random(0).randbytes(91_000_000)
    file_id = fs.put(data, filename="model")
    assert fs.get_last_version("model").read() == data
    fs.delete(file_id)


def test_gridfs_bucket(db: Database[Doc]) -> None:
    bucket = gridfs.GridFSBucket(db, bucket_name="bk")
    file_id = bucket.upload_from_stream("name.bin", b"data" * 1000)
    assert bucket.open_download_stream(file_id).read() == b"data" * 1000
    bucket.delete(file_id)
    with pytest.raises(gridfs.errors.NoFile):
        bucket.open_download_stream(file_id)


# -- transactions and change streams -------------------------------------------------------


def test_transaction_commands_accepted(client: pymongo.MongoClient[Doc], db: Database[Doc]) -> None:
    """Transactions are accepted and their writes land; see the quirk below for isolation."""
    db.c.insert_one({"x": 0})
    with client.start_session() as session:
        with session.start_transaction():
            db.c.insert_one({"x": 1}, session=session)
            db.c.update_one({"x": 0}, {"$set": {"y": 1}}, session=session)
    assert db.c.count_documents({}) == 2
    assert db.c.count_documents({"y": 1}) == 1


@quirk(
    "transactions are not isolated or atomic: writes inside one are visible outside at once "
    "and abort_transaction() does not roll them back",
    raises=AssertionError,
)
def test_transaction_abort_rolls_back(client: pymongo.MongoClient[Doc], db: Database[Doc]) -> None:
    with client.start_session() as session:
        session.start_transaction()
        db.c.insert_one({"x": 1}, session=session)
        assert db.c.count_documents({}) == 0  # not visible outside the transaction
        session.abort_transaction()
    assert db.c.count_documents({}) == 0


@quirk(
    "change streams are not supported: OperationFailure 'unregistered pipeline operator $changeStream.'",
    raises=OperationFailure,
)
def test_change_stream(db: Database[Doc]) -> None:
    with db.c.watch() as stream:
        assert stream.alive
