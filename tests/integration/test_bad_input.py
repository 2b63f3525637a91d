"""Bad input gets a clear SuperDuperError subclass, and the database is left as it was.

Each test takes a snapshot of the whole database (every collection, metadata collections
included, every document in raw form) before the bad call and compares it afterwards. Tests run
on both stand-ins (the ``backend`` fixture) unless the input never reaches a database.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from bson import Binary
from PIL import Image

import superduperdb
from superduperdb.errors import (
    ConfigError,
    ConnectionFailure,
    EncodingError,
    InUseError,
    InvalidURIError,
    NotRegisteredError,
    QueryError,
    SuperDuperError,
)

pytestmark = pytest.mark.integration


class Point:
    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y


class PointType:
    types = (Point,)

    def encode(self, p: Point) -> bytes:
        return f"{p.x},{p.y}".encode()

    def decode(self, data: bytes) -> Point:
        return Point(*map(float, data.decode().split(",")))


class Opaque:
    """No type stores this."""


class Exploding:
    pass


class ExplodingType:
    types = (Exploding,)

    def encode(self, x: Exploding) -> bytes:
        raise RuntimeError("cannot encode this one")

    def decode(self, data: bytes) -> Exploding:
        return Exploding()


@pytest.fixture
def db(backend) -> Iterator[Any]:
    uri, dbname = backend
    client = superduperdb.connect(uri, cluster=None)
    yield client[dbname]
    client.drop_database(dbname)
    client.close()


@pytest.fixture
def docs(db) -> Any:
    """A collection with a registered type in use and a few documents."""
    coll = db["docs"]
    coll.create_type("point", PointType())
    coll.insert_many([{"k": i, "x": np.arange(i + 1), "p": Point(i, -i)} for i in range(3)])
    return coll


def snapshot(db: Any) -> dict[str, list]:
    """Every collection of the database, every document undecoded, in a stable order."""
    raw = db.client.raw[db.name]
    return {
        name: sorted(repr(sorted(doc.items())) for doc in raw[name].find())
        for name in sorted(raw.list_collection_names())
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- connecting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["postgres://localhost/db", "mongo://localhost:27017", "redis://localhost:6379",
                                 "sqlite:///tmp/db"])
def test_unknown_uri_scheme(docs, uri: str) -> None:
    before = snapshot(docs.database)
    with pytest.raises(InvalidURIError) as info:
        superduperdb.connect(uri, cluster=None)
    err = info.value
    assert isinstance(err, ConfigError) and isinstance(err, SuperDuperError)
    assert err.uri == uri and {"mongodb", "mongodb+srv", "mongomock"} <= set(err.valid)
    assert "mongodb://" in str(err) and "mongomock://" in str(err) and "file://" in str(err)  # says what would work
    assert snapshot(docs.database) == before


def test_unreachable_server_fails_within_the_timeout(docs) -> None:
    before = snapshot(docs.database)
    uri = f"mongodb://127.0.0.1:{_closed_port()}/"
    start = time.monotonic()
    with pytest.raises(ConnectionFailure) as info:
        superduperdb.connect(uri, cluster=None, config={"mongodb.timeout_ms": 300})
    elapsed = time.monotonic() - start
    assert elapsed < 2.5, f"took {elapsed:.2f} s with a 300 ms timeout"
    err = info.value
    assert isinstance(err, ConnectionError) and (err.uri, err.timeout_ms) == (uri, 300)
    assert "300 ms" in str(err) and "mongodb.timeout_ms" in str(err)
    assert snapshot(docs.database) == before


def test_silent_server_does_not_hang(docs) -> None:
    """A server that accepts connections but never answers: still fails within the timeout."""
    before = snapshot(docs.database)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # ... and never reply
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        uri = f"mongodb://127.0.0.1:{listener.getsockname()[1]}/"
        start = time.monotonic()
        with pytest.raises(ConnectionFailure):
            superduperdb.connect(uri, cluster=None, config={"mongodb.timeout_ms": 300})
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
    assert elapsed < 2.5, f"took {elapsed:.2f} s with a 300 ms timeout (the default is 5 s)"
    assert snapshot(docs.database) == before


def test_unknown_config_key(docs, backend) -> None:
    before = snapshot(docs.database)
    with pytest.raises(ConfigError) as info:
        superduperdb.connect(backend[0], cluster=None, config={"mongodb.timout_ms": 300})
    assert info.value.key == "mongodb.timout_ms" and "mongodb.timeout_ms" in info.value.valid
    assert "Did you mean 'mongodb.timeout_ms'?" in str(info.value)
    with pytest.raises(ConfigError):
        superduperdb.connect(backend[0], cluster="scheduler:8786")  # not an address
    assert snapshot(docs.database) == before


# -- types ------------------------------------------------------------------------------------------


def test_unregistered_type_when_decoding(docs) -> None:
    docs.raw.insert_one({"k": 99, "v": {"_content": {"bytes": Binary(b"?"), "type": "poin"}}})
    before = snapshot(docs.database)
    with pytest.raises(NotRegisteredError) as info:
        docs.find_one({"k": 99})
    err = info.value
    assert isinstance(err, KeyError) and err.name == "poin" and "point" in err.available
    assert "Did you mean 'point'?" in str(err) and "create_type" in str(err)
    with pytest.raises(NotRegisteredError):
        list(docs.find())
    assert docs.find_one({"k": 99}, raw=True)["v"]["_content"]["type"] == "poin"  # still readable raw
    assert snapshot(docs.database) == before


def test_deleting_a_type_in_use(docs) -> None:
    before = snapshot(docs.database)
    with pytest.raises(InUseError) as info:
        docs.delete_type("point")
    assert info.value.name == "point" and info.value.users == [f"documents in {docs.name!r}"]
    assert f"documents in {docs.name!r}" in str(info.value) and "force=True" in str(info.value)
    assert snapshot(docs.database) == before
    assert "point" in docs.list_types() and docs.find_one({"k": 1})["p"].x == 1.0


def test_deleting_an_unknown_type(docs) -> None:
    before = snapshot(docs.database)
    with pytest.raises(NotRegisteredError) as info:
        docs.delete_type("pont")
    assert "Did you mean 'point'?" in str(info.value)
    assert snapshot(docs.database) == before


def test_document_that_cannot_be_encoded(docs) -> None:
    docs.create_type("exploding", ExplodingType())
    before = snapshot(docs.database)
    with pytest.raises(EncodingError) as info:
        docs.insert_one({"k": 10, "sub": {"list": [1, Opaque()]}})
    err = info.value
    assert isinstance(err, TypeError) and err.path == "document.sub.list[1]" and err.value_type == "Opaque"
    assert "create_type" in str(err) and "pickle_fallback" in str(err)
    with pytest.raises(EncodingError) as info:  # one bad document: none is inserted
        docs.insert_many([{"k": 10, "p": Point(1, 1)}, {"k": 11, "bad": Opaque()}, {"k": 12}])
    assert info.value.path == "documents[1].bad"
    with pytest.raises(EncodingError) as info:  # the type itself fails
        docs.insert_many([{"k": 13}, {"k": 14, "e": Exploding()}])
    assert "cannot encode this one" in str(info.value) and info.value.path == "documents[1].e"
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(EncodingError) as info:  # an image mode that PNG cannot hold
        docs.insert_one({"k": 15, "img": Image.new("F", (2, 2))})
    assert "'image'" in str(info.value) and info.value.path == "document.img"
    with pytest.raises(EncodingError):  # object arrays are not stored (they would need pickle)
        docs.insert_one({"k": 15, "x": np.array([object()])})
    with pytest.raises(EncodingError):
        docs.update_one({"k": 1}, {"$set": {"bad": Opaque()}})
    with pytest.raises(EncodingError):
        docs.replace_one({"k": 1}, {"k": 1, "bad": Opaque()})
    assert snapshot(docs.database) == before
    docs.delete_type("exploding")  # never stored: deleting needs no force


# -- queries ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda c: c.find("k"),
    lambda c: c.find([("k", 1)]),
    lambda c: c.count_documents("k"),
    lambda c: c.distinct("k", "filter"),
    lambda c: c.update_one("k", {"$set": {"k": 0}}),
    lambda c: c.update_many(["k"], {"$set": {"k": 0}}),
    lambda c: c.replace_one(1, {"k": 0}),
    lambda c: c.delete_one("k"),
    lambda c: c.delete_many(0),
    lambda c: c.find_one_and_delete("k"),
    lambda c: c.find_one_and_update(("k", 1), {"$set": {"k": 0}}),
], ids=["find", "find-list", "count", "distinct", "update_one", "update_many", "replace_one",
        "delete_one", "delete_many", "find_one_and_delete", "find_one_and_update"])
def test_non_dict_filter(docs, call) -> None:
    before = snapshot(docs.database)
    with pytest.raises(QueryError) as info:
        call(docs)
    assert isinstance(info.value, TypeError)
    assert "must be a dict" in str(info.value) and "{'_id': value}" in str(info.value)
    assert snapshot(docs.database) == before


@pytest.mark.parametrize("update", [{"k": 5}, {"$set": {"k": 5}, "k": 5}, {}, "k", None])
@pytest.mark.parametrize("method", ["update_one", "update_many", "find_one_and_update"])
def test_update_without_operators(docs, method: str, update: Any) -> None:
    before = snapshot(docs.database)
    with pytest.raises(QueryError) as info:
        getattr(docs, method)({"k": 1}, update)
    assert isinstance(info.value, TypeError) and "$set" in str(info.value)
    if isinstance(update, dict) and update:
        assert "replace_one" in str(info.value)  # says what to use instead
    assert snapshot(docs.database) == before


def test_replacement_with_operators(docs) -> None:
    before = snapshot(docs.database)
    with pytest.raises(QueryError):
        docs.replace_one({"k": 1}, {"$set": {"k": 5}})
    assert snapshot(docs.database) == before


@pytest.mark.parametrize("documents", [[], {"k": 1}, "k", [{"k": 5}, "not a dict"], [{"k": 5}, 3]])
def test_bad_insert_many_argument(docs, documents: Any) -> None:
    before = snapshot(docs.database)
    with pytest.raises(QueryError):
        docs.insert_many(documents)
    assert snapshot(docs.database) == before


def test_bad_insert_one_argument(docs) -> None:
    before = snapshot(docs.database)
    with pytest.raises(QueryError):
        docs.insert_one([("k", 1)])
    assert snapshot(docs.database) == before


def test_misspelled_method(docs) -> None:
    before = snapshot(docs.database)
    with pytest.raises(AttributeError) as info:
        docs.insert_on({"k": 5})
    assert "insert_one" in str(info.value) and "Did you mean 'insert_one'?" in str(info.value)
    with pytest.raises(AttributeError, match="Did you mean 'find_one'"):
        docs.findone({})
    with pytest.raises(AttributeError, match="Did you mean 'count_documents'"):
        docs.count_document({})
    assert snapshot(docs.database) == before


def test_bad_pipeline(docs) -> None:
    before = snapshot(docs.database)
    with pytest.raises(QueryError):
        docs.aggregate({"$match": {}})
    assert snapshot(docs.database) == before
