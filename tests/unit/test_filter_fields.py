"""Filter fields held beside a shard's vectors: which filters they answer, that they answer as the embedded
store does, and that a snapshot keeps them as checked plain data."""

from __future__ import annotations

import datetime
import random

import numpy as np
import pytest

import superduperdb
from superduperdb.index import VectorIndex, snapfile
from superduperdb.jobs.planner import indexes_touched
from superduperdb.master import snapshots
from superduperdb.master.filters import FilterFields, answerable, extract

FIELDS = ["lang", "year", "meta.n", "when"]


@pytest.mark.parametrize("f, ok", [
    ({"lang": "en"}, True), ({"lang": {"$eq": "en"}}, True), ({"year": {"$in": [1, 2]}}, True),
    ({"year": {"$gte": 1, "$lt": 3}}, True), ({"meta.n": {"$exists": False}}, True),
    ({"$or": [{"lang": "en"}, {"$and": [{"year": 2}, {"_id": 3}]}]}, True),
    ({"text": "x"}, False), ({"lang": {"$regex": "e"}}, False), ({"lang": {"$ne": "en"}}, False),
    ({"lang": ["en"]}, False), ({"meta": {"n": 1}}, False), ({"$nor": [{"lang": "en"}]}, False),
    ({"$or": []}, False), ({"year": {"$in": [[1]]}}, False), ({"lang": {"$exists": 1}}, False), ({}, False),
    ({"$where": "1"}, False), ({"year": {"$gt": 1, "$mod": [2, 0]}}, False),
])
def test_answerable_takes_equality_in_ranges_exists_and_or_on_filter_fields_only(f, ok):
    assert answerable(f, FIELDS) is ok


def test_filter_fields_match_as_the_embedded_store_on_random_documents_and_filters():
    """The same documents in the embedded store (mongomock, with its field indexes) and in FilterFields:
    every random filter selects the same ids."""
    rng = random.Random(4)
    client = superduperdb.connect("mongomock://ffunit", cluster=None)
    raw = client["ffunit"].docs.raw
    held = FilterFields(FIELDS)
    day = datetime.datetime(2026, 1, 1)
    for i in range(400):
        doc = {"_id": i}
        if rng.random() < 0.8:
            doc["lang"] = rng.choice(["en", "fr", None, 1, "de", ["en", "fr"], [1, "de"], {"x": 1}])
        if rng.random() < 0.8:
            doc["year"] = rng.choice([2000, 2001, 2002.0, 2003.5, "2001", True, 1, float("nan"), [2000, 2003]])
        if rng.random() < 0.5:
            doc["meta"] = {"n": rng.randrange(4)} if rng.random() < 0.9 else {"m": 1}
        if rng.random() < 0.5:
            doc["when"] = day + datetime.timedelta(days=rng.randrange(10))
        raw.insert_one(doc)
        held.put(i, extract(doc, FIELDS))
    raw.create_index("lang")
    values = {"lang": ["en", "fr", None, 1, "de"], "year": [2000, 2001, 2002, 2003.5, "2001", 1, True],
              "meta.n": [0, 1, 3],
              "when": [day + datetime.timedelta(days=d) for d in (0, 3, 9)]}

    def cond():
        field = rng.choice(list(values))
        v = lambda: rng.choice(values[field])  # noqa: E731
        kind = rng.choice(["eq", "in", "range", "exists"])
        if kind == "eq":
            return {field: v()}
        if kind == "in":
            return {field: {"$in": [v(), v()]}}
        if kind == "exists":
            return {field: {"$exists": rng.random() < 0.5}}
        return {field: {rng.choice(["$gt", "$gte", "$lt", "$lte"]): v()}}

    for _ in range(300):
        f = rng.choice([cond(), {"$and": [cond(), cond()]}, {"$or": [cond(), cond()]}, {**cond(), "_id": {"$in": [1, 5, 9]}}])
        assert answerable(f, FIELDS), f
        assert sorted(held.match(f)) == sorted(d["_id"] for d in raw.find(f, {"_id": 1})), f
    held.remove([1, 2])
    assert 1 not in held.match({"_id": {"$in": [1, 3]}}) and held.get(2) is None
    client.close()


def test_a_snapshot_keeps_the_filter_fields_as_checked_plain_data():
    X = np.random.default_rng(3).standard_normal((50, 4)).astype(np.float32)
    index = VectorIndex(measure="l2", background=False)
    index.add(list(range(50)), X)
    index.remove([3])
    held = FilterFields(["lang", "meta.n"])
    for i in range(50):
        held.put(i, {"lang": "en" if i % 2 else "fr", "meta": {"n": i}} if i % 7 else {})
    row = {"name": "v", "uid": "u", "filter_fields": ["lang", "meta.n"]}
    data = snapshots.dumps(index, {i: None for i in range(50)}, row, position=None, hashes={}, fields=held)
    restored = snapshots.parse(data, row)
    assert restored.manifest["filter_fields"] == ["lang", "meta.n"] and 3 not in restored.fields
    assert restored.fields == {i: held.get(i) for i in range(50) if i != 3}
    with pytest.raises(snapfile.SnapshotCorrupt, match="filter fields") as info:
        snapshots.parse(data, {**row, "filter_fields": ["lang"]})  # made for other filter fields
    assert info.value.part == "manifest"
    bad = bytearray(data)
    bad[snapfile.read_header(data)[1]["filter_fields"]["offset"] + 5] ^= 1
    with pytest.raises(snapfile.SnapshotCorrupt, match="checksum") as info:
        snapshots.parse(bytes(bad), row)
    assert info.value.part == "filter_fields"
    plain = snapshots.dumps(index, {}, {"name": "v", "uid": "u"}, position=None, hashes={})
    with pytest.raises(snapfile.SnapshotCorrupt, match="filter fields"):
        snapshots.parse(plain, row)  # a snapshot without them cannot serve an index with them


def test_updates_of_filter_fields_concern_their_indexes():
    rows = [{"name": "a", "filter_fields": ["lang", "meta.n"]}, {"name": "b", "filter_fields": []}, {"name": "c"}]
    assert indexes_touched(rows, {"$set": {"lang": "en"}}) == {"a"}
    assert indexes_touched(rows, {"$unset": {"meta.n": ""}}) == {"a"}
    assert indexes_touched(rows, {"$set": {"text": "x"}}) == set()
    assert indexes_touched(rows, {"lang": "en"}) == {"a"}  # a replacement: cannot tell, so every one
