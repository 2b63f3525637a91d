"""Property-based bad input (hypothesis): generated filters, documents, registrations and queries.

Against the embedded store and the CongoDB wire server, every call either succeeds or raises

* a :class:`~superduperdb.errors.SuperDuperError`, or pymongo's / bson's own error, or
* an exception raised inside the store's own code (mongomock: not ours, counted apart),

never a bare Python exception raised by superduperdb's code; and when it raises, the
collection, its metadata, artifacts and job records are exactly as they were (a snapshot of
every raw document before and after). Every call also returns within a bound.

Each example works on a fresh collection (a few documents, a registered type, a model), so
that a bad document one example stored does not decide the next. The default profile is
small, for CI; ``SDDB_TEST_HYPOTHESIS_PROFILE=long`` runs many more examples locally.
"""

from __future__ import annotations

import datetime
import inspect
import itertools
import os
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bson
import numpy as np
import pymongo.errors
import pytest
import testmodels
from bson import Binary, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import superduperdb
from superduperdb.errors import SuperDuperError

pytestmark = pytest.mark.integration

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("long", max_examples=int(os.environ.get("SDDB_TEST_HYPOTHESIS_EXAMPLES", "500")), deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PROFILE = os.environ.get("SDDB_TEST_HYPOTHESIS_PROFILE", "ci")
# =1: only count what each call did (to measure a version of the library), never fail.
COUNT_ONLY = os.environ.get("SDDB_TEST_PROPERTY_COUNT_ONLY") == "1"
CALL_BOUND = 30.0  # seconds: no call may block longer
PACKAGE = str(Path(superduperdb.__file__).parent)
TESTS = str(Path(__file__).parents[1])
_COUNTER = itertools.count()


class Point:
    def __init__(self, x: float) -> None:
        self.x = x


class PointType:
    types = (Point,)

    def encode(self, p: Point) -> bytes:
        return str(p.x).encode()

    def decode(self, data: bytes) -> Point:
        return Point(float(data.decode()))


class Opaque:
    """No type stores it."""


class Embed:
    def encode(self, texts: list) -> list:
        return [testmodels.letter_counts(t) for t in texts]


# -- strategies ----------------------------------------------------------------------------------------------

FIELDS = st.sampled_from(["k", "text", "a", "a.b", "x", "p", "", "_outputs", "_outputs.text.m", "_content", "b.0",
                          "$foo", "$set", "$in", "$gt", "$and", "$where", "$expr", "$text", "\x00", "é"])
OPERATORS = st.sampled_from(["$eq", "$ne", "$gt", "$in", "$nin", "$exists", "$type", "$regex", "$options", "$not",
                             "$elemMatch", "$size", "$all", "$mod", "$foo", "$bad", "$and", "$near", "$where",
                             "$text", "$expr", "$comment", "$jsonSchema"])
CONTENT = st.fixed_dictionaries({"_content": st.fixed_dictionaries(
    {"bytes": st.binary(max_size=24).map(Binary)},
    optional={"type": st.one_of(st.sampled_from(["array", "tensor", "image", "bytes", "pickle", "point", "gone"]),
                                st.integers()),
              "url": st.one_of(st.text(max_size=10), st.just("file:///nonexistent/x"), st.integers())})})
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=8), st.binary(max_size=8), st.just(ObjectId("6b0d00000000000000000000")),
    st.datetimes(min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2200, 1, 1)),
    st.builds(lambda n: np.arange(n, dtype="float32"), st.integers(0, 4)),
    st.builds(Point, st.floats(-5, 5)), st.builds(Opaque), st.just({1, 2}), st.just(b"\x00" * 3),
)
VALUES = st.recursive(
    st.one_of(SCALARS, CONTENT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(FIELDS, inner, max_size=3),
                            st.dictionaries(OPERATORS, inner, max_size=2)),
    max_leaves=8,
)


def _self_referencing(value: Any) -> dict:
    doc = {"v": value}
    doc["me"] = doc
    return doc


DOCUMENTS = st.one_of(
    st.dictionaries(FIELDS, VALUES, max_size=4),
    st.builds(_self_referencing, VALUES),
    st.dictionaries(st.one_of(st.integers(), st.none()), VALUES, max_size=2),  # non-string keys
    VALUES,  # not a document at all
)
FILTERS = st.one_of(
    st.dictionaries(st.one_of(FIELDS, OPERATORS), VALUES, max_size=3),
    st.dictionaries(FIELDS, st.dictionaries(OPERATORS, VALUES, min_size=1, max_size=2), max_size=2),
    VALUES,
)
UPDATES = st.one_of(
    st.dictionaries(st.sampled_from(["$set", "$unset", "$inc", "$push", "$foo", "k", "$rename"]),
                    st.dictionaries(FIELDS, VALUES, max_size=2), max_size=2),
    VALUES,
)
ANY = st.one_of(VALUES, st.text(max_size=6), st.lists(st.text(max_size=4), max_size=3))
NAMES = st.one_of(st.sampled_from(["m", "ident", "embed", "i", "w"]), ANY)
BATCH = st.one_of(st.integers(-2, 3), st.sampled_from(["x", None, 1.5, True]), ANY)


def _call(_op: str, **arguments: Any) -> tuple[str, dict]:
    return _op, arguments


CALLS = st.one_of(
    st.builds(_call, st.just("insert_one"), document=DOCUMENTS),
    st.builds(_call, st.just("insert_many"), documents=st.one_of(st.lists(DOCUMENTS, max_size=3), ANY)),
    st.builds(_call, st.just("find"), filter=FILTERS, projection=st.one_of(st.none(), VALUES),
              decode_errors=st.one_of(st.sampled_from(["raise", "skip", "raw"]), ANY),
              features=st.one_of(st.none(), st.just({"text": "ident"}), ANY)),
    st.builds(_call, st.just("find_one"), filter=FILTERS, decode_errors=st.sampled_from(["raise", "skip", "raw"])),
    st.builds(_call, st.just("count_documents"), filter=FILTERS),
    st.builds(_call, st.just("update_one"), filter=FILTERS, update=UPDATES),
    st.builds(_call, st.just("update_many"), filter=FILTERS, update=UPDATES),
    st.builds(_call, st.just("replace_one"), filter=FILTERS, replacement=DOCUMENTS),
    st.builds(_call, st.just("delete_one"), filter=FILTERS),
    st.builds(_call, st.just("create_model"), name=NAMES, batch_size=BATCH,
              method=st.one_of(st.none(), st.sampled_from(["encode", "nope", "predict"]), ANY),
              key=st.one_of(st.none(), FIELDS, ANY), filter=st.one_of(st.none(), FILTERS),
              features=st.one_of(st.none(), st.just({"x": "ident"}), ANY)),
    st.builds(_call, st.just("create_watcher"), model=NAMES, key=st.one_of(FIELDS, ANY),
              filter=st.one_of(st.none(), FILTERS), features=st.one_of(st.none(), ANY)),
    st.builds(_call, st.just("create_semantic_index"), name=NAMES, models=st.one_of(st.just(["ident"]), ANY),
              keys=st.one_of(st.just(["x"]), st.lists(FIELDS, max_size=2), ANY),
              measure=st.one_of(st.sampled_from(["cosine", "l2", "cosin"]), ANY)),
    st.builds(_call, st.just("create_type"), name=NAMES, object=st.one_of(st.just(PointType()), ANY)),
    st.builds(_call, st.just("apply_model"), name=NAMES, inputs=st.one_of(st.lists(DOCUMENTS, max_size=2), ANY),
              key=st.one_of(st.none(), FIELDS, ANY)),
    st.builds(_call, st.just("get_job"), job_id=st.one_of(st.text(max_size=24), st.just(str(ObjectId())), ANY)),
    st.builds(_call, st.just("like"), like=st.one_of(st.dictionaries(FIELDS, VALUES, max_size=2), VALUES),
              n=st.one_of(st.integers(-1, 5), ANY), filter=st.one_of(st.none(), FILTERS)),
)


# -- running one call -----------------------------------------------------------------------------------------


def run(coll: Any, name: str, arguments: dict) -> Any:
    """Make the call (see :func:`check_binds`: every generated call reaches the method's own code)."""
    a = arguments
    if name == "find":
        return list(coll.find(a["filter"], a["projection"], decode_errors=a["decode_errors"], features=a["features"]))
    if name == "find_one":
        return coll.find_one(a["filter"], decode_errors=a["decode_errors"])
    if name == "create_model":
        obj = Embed() if a["method"] == "encode" else testmodels.identity
        return coll.create_model(a["name"], obj, batch_size=a["batch_size"], method=a["method"], key=a["key"],
                                 filter=a["filter"], features=a["features"])
    if name == "create_semantic_index":
        return coll.create_semantic_index(a["name"], a["models"], a["keys"], measure=a["measure"])
    if name == "create_type":
        return coll.create_type(a["name"], a["object"])
    if name == "apply_model":
        return coll.apply_model(a["name"], a["inputs"], key=a["key"])
    if name == "like":
        return list(coll.find(a["filter"], like=a["like"], n=a["n"]))
    if name == "insert_many":
        return coll.insert_many(a["documents"])
    return getattr(coll, name)(**a)


def check_binds(coll: Any, name: str, arguments: dict) -> None:
    """Fail the test (not the library) where a generated call cannot bind to the method's signature:
    such a call stops at Python's own TypeError and never reaches the code under test (the
    ``create_watcher`` examples once did: its filter and features are keyword-only)."""
    if name in ("find", "find_one", "create_model", "create_semantic_index", "create_type", "apply_model", "like",
                "insert_many"):
        return  # called explicitly in run(), argument by argument
    try:
        inspect.signature(getattr(coll, name)).bind(**arguments)
    except TypeError as exc:
        raise AssertionError(f"the test calls {name}({', '.join(arguments)}), which its signature refuses: {exc}") from None


def snapshot(coll: Any) -> dict[str, list]:
    """The collection and everything beside it (``<name>._*``: metadata, GridFS, jobs), undecoded."""
    raw = coll.raw.database
    names = sorted(n for n in raw.list_collection_names() if n == coll.name or n.startswith(coll.name + "."))
    return {n: sorted(repr(sorted(d.items())) for d in raw[n].find()) for n in names}


def origin(exc: BaseException) -> str:
    """Whose code raised ``exc``: ``'user'`` (a model or type of these tests, called by
    superduperdb), ``'store'`` (mongomock, pymongo, bson), or ``'superduperdb'`` (its own code, or
    a library such as numpy that it called with what it did not check)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [i for i, f in enumerate(frames) if f.filename.startswith(PACKAGE)]
    if not ours:
        return "store"
    below = frames[ours[-1] + 1:]
    if any(f.filename.startswith(TESTS) for f in below):
        return "user"
    if below and any(f"{os.sep}{lib}{os.sep}" in below[-1].filename for lib in ("mongomock", "pymongo", "bson")):
        return "store"
    return "superduperdb"


def raised_in_our_code(exc: BaseException) -> bool:
    return origin(exc) == "superduperdb"


def allowed(exc: BaseException) -> bool:
    return isinstance(exc, (SuperDuperError, pymongo.errors.PyMongoError, bson.errors.BSONError))


class Tally:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


@pytest.fixture(scope="module")
def tallies() -> Iterator[dict[str, Tally]]:
    found: dict[str, Tally] = {}
    yield found
    for backend, tally in found.items():
        print(f"\nproperty suite on {backend}: {dict(sorted(tally.counts.items()))}")


@pytest.fixture
def fresh(backend) -> Iterator[Callable[[], Any]]:
    uri, dbname = backend
    client = superduperdb.connect(uri, cluster=None, config={"master.warm_up": False, "mongodb.timeout_ms": 5000})

    def make() -> Any:
        coll = client[dbname][f"c{next(_COUNTER)}"]
        coll.create_type("point", PointType())
        coll.insert_many([{"k": i, "text": "abc" * i, "a": {"b": i}, "x": np.arange(3) + i, "p": Point(i)}
                          for i in range(3)])
        coll.create_model("ident", testmodels.identity)
        return coll

    yield make
    client.drop_database(dbname)
    client.close()


@settings(settings.get_profile(PROFILE))
@given(call=CALLS)
def test_bad_input_is_typed_and_changes_nothing(fresh, backend, tallies, call) -> None:
    name, arguments = call
    tally = tallies.setdefault("embedded" if backend[0].startswith("mongomock") else "server", Tally())
    coll = fresh()
    check_binds(coll, name, arguments)
    before = snapshot(coll)
    start = time.monotonic()
    try:
        run(coll, name, arguments)
    except BaseException as exc:  # noqa: BLE001 - classified below
        elapsed = time.monotonic() - start
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if allowed(exc):
            tally.add("SuperDuperError" if isinstance(exc, SuperDuperError) else "pymongo/bson error")
        elif raised_in_our_code(exc):
            tally.add("untyped from superduperdb")
            if COUNT_ONLY:
                tally.add(f"untyped from superduperdb: {name} {type(exc).__name__}")
                return
            raise AssertionError(f"{name}({arguments!r}) raised a bare {type(exc).__name__} from superduperdb: "
                                 f"{exc}") from exc
        else:
            tally.add(f"untyped from the {origin(exc)} ({type(exc).__name__})")
            if COUNT_ONLY:
                tally.add(f"untyped from the {origin(exc)}: {name} {type(exc).__name__}: {str(exc)[:80]}")
        changed = snapshot(coll) != before
        # pymongo's own write errors may leave what pymongo leaves (an ordered insert_many writes the
        # documents before the failing one): only changes with superduperdb's errors are ours.
        if changed and (isinstance(exc, SuperDuperError) or raised_in_our_code(exc)):
            tally.add("changed on error")
            if COUNT_ONLY:
                tally.add(f"changed on error: {name} {type(exc).__name__}")
                return
            raise AssertionError(f"{name}({arguments!r}) raised {type(exc).__name__} ({exc}) and changed the "
                                 "database") from exc
    else:
        elapsed = time.monotonic() - start
        tally.add("accepted")
    assert elapsed < CALL_BOUND, f"{name} took {elapsed:.1f} s"


def test_generated_calls_reach_the_code_under_test(fresh) -> None:
    """Each generic call binds by keyword; the positional form the suite once used stopped every
    ``create_watcher`` example at Python's own TypeError (its filter and features are keyword-only)."""
    coll = fresh()
    arguments = {"model": "ident", "key": "x", "filter": {"k": 1}, "features": None}
    check_binds(coll, "create_watcher", arguments)
    assert run(coll, "create_watcher", arguments) is not None  # it reached create_watcher and registered
    assert coll.list_watchers() == ["ident/x"]
    with pytest.raises(TypeError):
        coll.create_watcher(*arguments.values())
    with pytest.raises(AssertionError, match="which its signature refuses"):
        check_binds(coll, "create_watcher", {**arguments, "fitler": {}})
