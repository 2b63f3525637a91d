"""The cursor of ``find(like=...)`` behaves as pymongo's cursor, on both stand-ins.

``skip``/``limit``/``batch_size``/``sort`` validate as pymongo's cursor does (the same
exception types for the same calls), apply in pymongo's order (sort, skip, limit), work as
``find`` keywords or positional arguments too, and a projection without ``_id`` works.
Orders are compared with what the plain store's own cursor returns for the same calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymongo
import pytest
import testmodels
from pymongo.errors import InvalidOperation

import superduperdb

WAIT = 120
N = 24


@dataclass
class Setup:
    coll: Any  # superduperdb Collection with a semantic index on x
    raw: Any  # the plain store's collection holding the same documents (no vectors)
    q: np.ndarray

    def like(self, *args: Any, n: int = N, **kwargs: Any):
        return self.coll.find(*args, like={"x": self.q}, n=n, **kwargs)


@pytest.fixture
def setup(backend) -> Iterator[Setup]:
    uri, dbname = backend
    client = superduperdb.connect(uri, cluster=None, config={"master.warm_up": False})
    is_mock = uri.startswith("mongomock://")
    raw_client = client.raw if is_mock else pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    X = np.random.default_rng(3).normal(size=(N, 4)).astype("float32")
    docs = [{"i": i, "group": i % 3, "name": f"n{i % 5}"} for i in range(N)]
    for d in docs[::4]:
        d["opt"] = -d["i"]  # a field some documents lack (missing sorts first, as null)
    coll = client[dbname].docs
    coll.insert_many([{**d, "x": x} for d, x in zip(docs, X)])
    coll.create_model("ident", testmodels.identity)
    coll.create_semantic_index("vectors", models=["ident"], keys=["x"]).wait(WAIT)
    raw = raw_client[dbname].plain
    raw.insert_many([dict(d) for d in docs])
    yield Setup(coll, raw, X[5] + 0.1)
    raw_client.drop_database(dbname)
    client.drop_database(dbname)
    client.close()
    if not is_mock:
        raw_client.close()


def pymongo_cursor():
    """A real pymongo cursor (never executed: no server needed) to compare argument checks with."""
    return pymongo.MongoClient("mongodb://localhost:1", connect=False)["d"]["c"].find()


def raises_like_pymongo(call) -> type:
    try:
        call(pymongo_cursor())
    except Exception as exc:  # noqa: BLE001 - we record whatever pymongo raises
        return type(exc)
    raise AssertionError("pymongo accepted the call")


def ids(cursor) -> list[int]:
    return [d["i"] for d in cursor]


BAD_CALLS = {
    "negative skip": lambda c: c.skip(-1),
    "float skip": lambda c: c.skip(1.5),
    "str skip": lambda c: c.skip("1"),
    "str limit": lambda c: c.limit("2"),
    "float limit": lambda c: c.limit(2.0),
    "negative batch_size": lambda c: c.batch_size(-1),
    "str batch_size": lambda c: c.batch_size("3"),
    "sort on a number": lambda c: c.sort(5),
    "sort on an empty list": lambda c: c.sort([]),
    "sort on a list with a direction": lambda c: c.sort(["i"], 1),
    "sort on a non-str key": lambda c: c.sort([(1, 1)]),
}


@pytest.mark.parametrize("what", list(BAD_CALLS))
def test_bad_modifiers_raise_what_pymongo_raises(setup, what):
    call = BAD_CALLS[what]
    expected = raises_like_pymongo(call)
    with pytest.raises(expected):
        call(setup.like())


def test_bad_keywords_raise_before_searching(setup):
    with pytest.raises(ValueError):
        setup.like(skip=-1)
    with pytest.raises(TypeError):
        setup.like(limit="3")
    with pytest.raises(TypeError):
        setup.like(sort=5)
    with pytest.raises(TypeError):
        setup.like(no_such_option=1)


def test_default_order_is_by_score_and_skip_limit_cut_it(setup):
    full = list(setup.like())
    scores = [d["_score"] for d in full]
    assert len(full) == N and scores == sorted(scores, reverse=True)
    order = [d["i"] for d in full]
    assert ids(setup.like().skip(2).limit(3)) == order[2:5]
    assert ids(setup.like().limit(-3)) == order[:3]  # as pymongo: one batch of 3
    assert ids(setup.like().limit(0)) == order  # 0 is no limit
    assert ids(setup.like().skip(N + 5)) == []
    assert ids(setup.like(n=5).limit(10)) == order[:5]  # n retrieves; limit only cuts
    # the find keywords, and pymongo's positional skip and limit, do the same
    assert ids(setup.like(skip=2, limit=3)) == order[2:5]
    assert ids(setup.like({}, None, 2, 3)) == order[2:5]
    assert ids(setup.like(limit=-3)) == order[:3]


@pytest.mark.parametrize("spec", [
    ("i", 1), ("i", -1), ([("group", 1), ("i", -1)],), ([("name", -1), ("i", 1)],),
    ({"group": -1, "i": 1},), ([("opt", 1), ("i", 1)],), ([("opt", -1), ("i", -1)],), (["name", "i"],),
], ids=str)
def test_sort_orders_as_the_store_does(setup, spec):
    raw_spec = [[(k, 1) if isinstance(k, str) else k for k in spec[0]]] if isinstance(spec[0], list) else spec
    expected = ids(setup.raw.find().sort(*raw_spec))  # (mongomock lacks bare keys in a list)
    assert ids(setup.like().sort(*spec)) == expected
    assert ids(setup.like().sort(*spec).skip(3).limit(-4)) == expected[3:7]
    # sort applies before skip and limit, whatever the order of the calls (as pymongo)
    assert ids(setup.like().limit(4).skip(3).sort(*spec)) == expected[3:7]
    as_list = spec[0] if len(spec) == 1 else [spec]
    assert ids(setup.like(sort=as_list, skip=3, limit=4)) == expected[3:7]


def test_sort_ties_keep_similarity_order_and_score_sorts(setup):
    order = [d["i"] for d in setup.like()]
    by_group = ids(setup.like().sort("group", -1))
    assert by_group == sorted(order, key=lambda i: -(i % 3))  # stable: similarity within a group
    assert ids(setup.like().sort("_score", pymongo.ASCENDING)) == order[::-1]
    assert ids(setup.like().sort("_score", -1)) == order
    # n similar documents are retrieved, then sorted
    top5 = order[:5]
    assert ids(setup.like(n=5).sort("i", 1)) == sorted(top5)
    assert setup.coll.find_one({}, like={"x": setup.q}, n=5, sort=[("i", 1)])["i"] == min(top5)


def test_sort_direction_must_be_ascending_or_descending(setup):
    with pytest.raises(ValueError, match="ASCENDING"):
        setup.like().sort("i", "text")


@pytest.mark.parametrize("projection", [{"_id": 0}, {"i": 1, "_id": 0}, {"i": 1}, ["i", "group"],
                                        {"x": 0, "_id": False}, {"name": 0}], ids=str)
def test_projections_with_and_without_id(setup, projection):
    order = [d["i"] for d in setup.like()]
    extra = set(next(setup.like())) - set(setup.raw.find_one()) - {"_score"}  # x, _outputs ...
    copy = (lambda: dict(projection)) if isinstance(projection, dict) else (lambda: list(projection))
    plain = list(setup.raw.find({}, copy()).sort("i", 1))  # (stores may add _id to the projection given)
    docs = list(setup.like({}, copy()))
    assert len(docs) == N
    assert [d["i"] for d in docs] == order  # every projection here keeps i
    for doc, want in zip(docs, [plain[i] for i in order]):
        assert "_score" in doc
        assert set(doc) - extra - {"_score"} == set(want)
    scores = [d["_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)


def test_projection_without_id_with_filter_sort_and_limit(setup):
    docs = list(setup.like({"group": 1}, {"_id": 0, "i": 1}, sort=[("i", -1)], limit=3))
    expected = ids(setup.raw.find({"group": 1}, {"_id": 0, "i": 1}).sort("i", -1).limit(3))
    assert [d["i"] for d in docs] == expected
    assert all(set(d) == {"i", "_score"} for d in docs)


def test_indexing_cloning_and_chaining_after_use(setup):
    order = [d["i"] for d in setup.like()]
    cursor = setup.like().sort("i", 1)
    assert cursor[0]["i"] == min(order) and cursor[2]["i"] == sorted(order)[2]
    with pytest.raises(IndexError):
        cursor[-1]  # as pymongo: no negative indices
    with pytest.raises(IndexError):
        cursor[N]
    clone = cursor.clone().limit(2)
    assert ids(clone) == sorted(order)[:2]
    assert len(ids(cursor)) == N  # the clone's limit is its own
    with pytest.raises(InvalidOperation):
        cursor.skip(1)
    assert ids(cursor.rewind().limit(1)) == [min(order)]
