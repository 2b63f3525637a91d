"""Every failure a user can cause is typed, checked before anything is stored, and leaves the
database as it was; one bad document does not break reads (issue 12).

Each test compares a snapshot of the whole database (data, metadata rows, GridFS artifacts, job
records: every collection, every document undecoded) before and after the bad call. Tests that
touch a store run on both stand-ins (the ``backend`` fixture).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import testmodels
from bson import Binary, ObjectId

import superduperdb
from superduperdb.errors import (
    AlreadyRegisteredError,
    DecodingError,
    EncodingError,
    JobNotFoundError,
    ModelError,
    NotRegisteredError,
    QueryError,
    SemanticIndexError,
    SuperDuperError,
    UnregisteredTypeError,
)

pytestmark = pytest.mark.integration
WAIT = 120


@pytest.fixture
def db(backend) -> Iterator[Any]:
    uri, dbname = backend
    client = superduperdb.connect(uri, cluster=None, config={"master.warm_up": False})
    yield client[dbname]
    client.drop_database(dbname)
    client.close()


@pytest.fixture
def docs(db) -> Any:
    coll = db["docs"]
    coll.insert_many([{"k": i, "a": {"b": i * 10}, "text": "abc" * (i + 1), "x": np.arange(3) + i}
                      for i in range(4)])
    coll.create_model("ident", testmodels.identity)
    return coll


def snapshot(db: Any) -> dict[str, list]:
    """Every collection of the database (metadata, GridFS and jobs included), undecoded."""
    raw = db.client.raw[db.name]
    return {name: sorted(repr(sorted(doc.items())) for doc in raw[name].find())
            for name in sorted(raw.list_collection_names())}


class Embed:
    """An object with a batched method (kind 'method')."""

    def encode(self, texts: list) -> list:
        return [testmodels.letter_counts(t) for t in texts]


# -- documents that cannot be encoded -----------------------------------------------------------------


def test_self_referencing_document_is_refused_and_nothing_inserted(docs) -> None:
    before = snapshot(docs.database)
    doc: dict = {"k": 99}
    doc["self"] = doc
    with pytest.raises(EncodingError) as info:
        docs.insert_one(doc)
    assert isinstance(info.value, TypeError) and info.value.path == "document.self"
    assert "contains itself" in str(info.value)
    looped: list = [1]
    looped.append(looped)
    with pytest.raises(EncodingError):
        docs.insert_many([{"k": 100}, {"k": 101, "l": looped}])
    with pytest.raises(EncodingError):
        docs.update_one({"k": 1}, {"$set": {"l": looped}})
    deep: dict = {"k": 102}
    node = deep
    for _ in range(150):
        node["n"] = {}
        node = node["n"]
    with pytest.raises(EncodingError, match="nests deeper than 100"):
        docs.insert_one(deep)
    assert snapshot(docs.database) == before


# -- model registration --------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [0, -1, "x", None, 1.5, True])
def test_bad_batch_size_is_refused_at_registration(docs, batch_size) -> None:
    before = snapshot(docs.database)
    with pytest.raises(ModelError) as info:
        docs.create_model("m", Embed(), method="encode", batch_size=batch_size, key="text")
    assert isinstance(info.value, ValueError) and "batch_size must be a positive integer" in str(info.value)
    assert snapshot(docs.database) == before
    docs.create_model("m", Embed(), method="encode", batch_size=2, key="text").wait(WAIT)  # a retry works
    assert docs.find_one({"k": 3}, {"_outputs": 1})["_outputs"]["text"]["m"].shape == (26,)


def test_unknown_method_is_refused_at_registration(docs) -> None:
    before = snapshot(docs.database)
    with pytest.raises(ModelError) as info:
        docs.create_model("m", Embed(), method="encod")
    assert "Unknown method 'encod'" in str(info.value) and "Did you mean 'encode'?" in str(info.value)
    with pytest.raises(ModelError, match="Unknown method 'nope'"):
        docs.create_model("m", testmodels.identity, method="nope")
    from sklearn.linear_model import LinearRegression

    fitted = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    with pytest.raises(ModelError, match="Did you mean 'predict'"):
        docs.create_model("m", fitted, method="predictt")
    assert snapshot(docs.database) == before


@pytest.mark.parametrize("key", [5, "", "$x", "_outputs.x", "a..b", None])
def test_create_model_with_a_bad_key_registers_nothing(docs, key) -> None:
    """Raised, but left the model registered, so that the retry failed with AlreadyRegisteredError."""
    before = snapshot(docs.database)
    with pytest.raises((ModelError, QueryError)):
        docs.create_model("m", Embed(), method="encode", key=key if key is not None else 5)
    assert snapshot(docs.database) == before
    assert "m" not in docs.list_models()
    docs.create_model("m", Embed(), method="encode", key="text").wait(WAIT)
    assert docs.list_watchers() == ["m/text"]


def test_create_model_with_bad_watcher_arguments_registers_nothing(docs) -> None:
    before = snapshot(docs.database)
    bad = [{"filter": {"$foo": 1}}, {"filter": {"k": {"$bad": 1}}}, {"filter": {"$and": 1}},
           {"filter": {"k": {"$in": 3}}}, {"features": ["text"]}, {"features": {"text": 1}},
           {"features": {"text": "nosuch"}}, {"filter": {"k": object()}}, {"active": "yes"}]
    for kwargs in bad:
        with pytest.raises(SuperDuperError) as info:
            docs.create_model("m", Embed(), method="encode", key="text", **kwargs)
        assert isinstance(info.value, (TypeError, ValueError, KeyError)), kwargs
        assert snapshot(docs.database) == before, kwargs


# -- watcher registration ------------------------------------------------------------------------------


@pytest.mark.parametrize("filter, operator", [
    ({"$foo": 1}, "$foo"),
    ({"k": {"$bad": 1}}, "$bad"),
    ({"$or": [{"k": 1}, {"k": {"$gt3": 1}}]}, "$gt3"),
    ({"k": {"$not": {"$nope": 1}}}, "$nope"),
])
def test_watcher_filter_with_unknown_operators_is_refused(docs, filter, operator) -> None:
    """Accepted before, then every job failed with the store's OperationFailure."""
    before = snapshot(docs.database)
    with pytest.raises(QueryError) as info:
        docs.create_watcher("ident", "x", filter=filter)
    assert info.value.operator == operator and operator in str(info.value)
    assert snapshot(docs.database) == before


def test_watcher_filter_the_embedded_store_cannot_evaluate_is_refused(docs, backend) -> None:
    if not backend[0].startswith("mongomock://"):
        pytest.skip("about the embedded store")
    before = snapshot(docs.database)
    for filter in ({"$where": "this.k > 1"}, {"$text": {"$search": "abc"}}, {"x": {"$near": [0, 0]}}):
        with pytest.raises(QueryError, match="cannot evaluate"):
            docs.create_watcher("ident", "x", filter=filter)
    assert snapshot(docs.database) == before


def test_watcher_filter_with_typed_values_and_good_operators_works(docs) -> None:
    docs.create_watcher("ident", "x", filter={"k": {"$gte": 2}, "$or": [{"a.b": {"$in": [20, 30]}}]}).wait(WAIT)
    done = {d["k"] for d in docs.find({"_outputs.x.ident": {"$exists": True}}, raw=True)}
    assert done == {2, 3}


# -- jobs ----------------------------------------------------------------------------------------------------


def test_missing_job_records_raise_job_not_found(docs) -> None:
    with pytest.raises(JobNotFoundError) as info:
        docs.get_job(str(ObjectId()))
    assert isinstance(info.value, KeyError) and "list_jobs()" in str(info.value)
    with pytest.raises(JobNotFoundError, match="not a job id"):
        docs.get_job("nope")
    job = docs.create_watcher("ident", "x")[0]
    job.wait(WAIT)
    docs["_jobs"].delete_one({"_id": ObjectId(job.id)})  # someone deleted the record
    with pytest.raises(JobNotFoundError) as info:
        job.status  # noqa: B018
    assert info.value.job_id == job.id
    with pytest.raises(JobNotFoundError):
        job.wait(5)
    with pytest.raises(JobNotFoundError):
        docs.get_job(job.id)


# -- apply_model ---------------------------------------------------------------------------------------------


def test_apply_model_reads_dotted_keys(docs) -> None:
    raw_docs = list(docs.find({}, sort=[("k", 1)]))
    assert docs.apply_model("ident", raw_docs, key="a.b") == [np.float32(v) for v in (0, 10, 20, 30)]
    assert [v.tolist() for v in docs.apply_model("ident", raw_docs, key="x")][1] == [1, 2, 3]
    with pytest.raises(ModelError, match=r"inputs\[0\] has no field 'a.c'"):
        docs.apply_model("ident", raw_docs, key="a.c")
    with pytest.raises(ModelError, match="list of inputs"):
        docs.apply_model("ident", 5)
    with pytest.raises(ModelError, match="list of inputs"):
        docs.apply_model("ident", {"k": 1}, key="k")


# -- semantic indexes -----------------------------------------------------------------------------------


def test_create_semantic_index_with_bad_arguments_registers_nothing(docs) -> None:
    before = snapshot(docs.database)
    for models, keys, measure, name in [(["ident"], [5], "cosine", "i"), (["ident"], ["$x"], "cosine", "i"),
                                        (["ident"], ["x"], "cosin", "i"), (["ident"], ["x"], "cosine", None),
                                        (["ident"], ["x"], ["cosine"], "i"), ([1], ["x"], "cosine", "i"),
                                        (["nosuch"], ["x"], "cosine", "i")]:
        with pytest.raises((SemanticIndexError, ModelError, NotRegisteredError)):
            docs.create_semantic_index(name, models, keys, measure=measure)
        assert snapshot(docs.database) == before, (models, keys, measure, name)
    with pytest.raises(NotRegisteredError) as info:
        docs.delete_semantic_index("i")
    assert "Registered semantic indexes: none." in str(info.value)  # was "semantic indeices"
    docs.create_semantic_index("i", ["ident"], ["x"]).wait(WAIT)
    docs.create_neighbourhood("nb", n=2).wait(WAIT)
    with pytest.raises(AlreadyRegisteredError):
        docs.create_neighbourhood("nb", n=2)
    for n in (0, True, 1.5):
        with pytest.raises(SemanticIndexError):
            docs.create_neighbourhood("nb2", n=n)


def test_like_with_a_url_is_downloaded(db, tmp_path) -> None:
    """A URL in a like document raised TypeError (the model got the {'_content': {'url'}} dict)."""
    coll = db["texts"]
    coll.insert_many([{"text": t} for t in ("apple", "banana", "cherry", "zzz")])
    coll.create_model("letters", testmodels.letter_counts)
    coll.create_semantic_index("t", ["letters"], ["text"]).wait(WAIT)
    path = tmp_path / "query.txt"
    path.write_bytes(b"bananas")
    by_url = coll.find(like={"text": {"_content": {"url": path.as_uri(), "type": "bytes"}}}, n=2)
    by_value = coll.find(like={"text": b"bananas"}, n=2)
    assert [d["text"] for d in by_url] == [d["text"] for d in by_value]
    with pytest.raises(SemanticIndexError, match="Could not download") as info:
        coll.find(like={"text": {"_content": {"url": "https://u:PlantedPw@127.0.0.1:1/x", "type": "bytes"}}})
    assert "PlantedPw" not in str(info.value)


# -- reading past documents that cannot be decoded ------------------------------------------------------


@pytest.fixture
def broken(docs) -> Any:
    """``docs`` with two documents that cannot be decoded: crafted array bytes, an unknown type."""
    docs.raw.insert_one({"_id": "bad-bytes", "k": 10, "v": {"w": [1, {"_content": {"bytes": Binary(b"\x93NUMPY junk"),
                                                                                     "type": "array"}}]}})
    docs.raw.insert_one({"_id": "bad-type", "k": 11, "v": {"_content": {"bytes": Binary(b"?"), "type": "gone"}}})
    return docs


def test_undecodable_document_raises_decoding_error_naming_it(broken) -> None:
    before = snapshot(broken.database)
    with pytest.raises(DecodingError) as info:
        broken.find_one({"_id": "bad-bytes"})
    err = info.value
    assert (err.document_id, err.field, err.type) == ("bad-bytes", "v.w.1", "array")
    assert "'bad-bytes'" in str(err) and "'v.w.1'" in str(err) and "decode_errors='skip'" in str(err)
    with pytest.raises(UnregisteredTypeError) as info:  # also a NotRegisteredError (KeyError) and a DecodingError
        broken.find_one({"_id": "bad-type"})
    assert isinstance(info.value, DecodingError) and isinstance(info.value, KeyError)
    assert (info.value.document_id, info.value.field) == ("bad-type", "v")
    with pytest.raises(DecodingError):
        list(broken.find())
    assert snapshot(broken.database) == before


def test_decode_errors_skip_and_raw_read_past_bad_documents(broken) -> None:
    before = snapshot(broken.database)
    good = sorted(d["k"] for d in broken.find({}, decode_errors="skip"))
    assert good == [0, 1, 2, 3]
    raw = {d["_id"]: d for d in broken.find({"k": {"$gte": 10}}, decode_errors="raw")}
    assert raw["bad-bytes"]["v"]["w"][0] == 1
    assert raw["bad-bytes"]["v"]["w"][1]["_content"]["type"] == "array"
    assert raw["bad-type"]["v"]["_content"]["type"] == "gone"
    assert broken.find_one({"k": {"$gte": 2}}, sort=[("k", -1)], decode_errors="skip")["k"] == 3
    assert broken.find_one({"k": 11}, decode_errors="skip") is None
    assert len(broken.aggregate([{"$match": {}}], decode_errors="skip").to_list()) == 4
    with pytest.raises(QueryError, match="decode_errors"):
        broken.find({}, decode_errors="ignore")
    assert snapshot(broken.database) == before


def test_decode_errors_on_like_queries(broken) -> None:
    broken.create_model("letters", testmodels.letter_counts)
    broken.create_semantic_index("i", ["letters"], ["k"]).wait(WAIT)  # every document has a vector of k
    with pytest.raises(DecodingError):
        broken.find(like={"k": 10}, n=6).to_list()
    found = broken.find(like={"k": 10}, n=6, decode_errors="skip").to_list()
    assert {d["k"] for d in found} == {0, 1, 2, 3}
    assert {d["k"] for d in broken.find(like={"k": 10}, n=6, decode_errors="raw")} == {0, 1, 2, 3, 10, 11}


def test_bad_features_argument_is_a_query_error(docs) -> None:
    docs.raw.insert_one({"k": 20, "_outputs": "not a dict"})
    docs.raw.insert_one({"k": 21, "_outputs": {"text": 5}})
    with pytest.raises(QueryError, match="features"):
        docs.find({}, features=["text"])
    assert [d["text"] if "text" in d else None for d in docs.find({"k": {"$gte": 20}}, features={"text": "m"})] == [
        None, None]


# -- credentials and messages -----------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_download_urls_are_logged_and_recorded_redacted(inline_client, unique_name, caplog) -> None:
    coll = inline_client[unique_name].docs
    url = f"https://bob:PlantedUrlPw@127.0.0.1:{_closed_port()}/a.png?X-Amz-Signature=PlantedSig"
    with caplog.at_level(logging.DEBUG):
        result = coll.insert_one({"img": {"_content": {"url": url, "type": "bytes"}}})
        result.jobs.wait(WAIT)
    stored = repr(list(coll["_jobs"].find()))  # the job records, with the download's result
    stored += repr(coll.find_one({}, raw=True)["img"]["_content"]["error"])  # the document keeps its own URL
    for text in (caplog.text, stored):
        assert "PlantedUrlPw" not in text and "PlantedSig" not in text
    assert "bob:***@127.0.0.1" in caplog.text


def test_master_unavailable_says_what_to_check(unique_name) -> None:
    """A cluster whose workers are gone (restarting): the message does not say "Start a worker"."""
    import distributed

    from superduperdb.errors import MasterUnavailableError

    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        client = superduperdb.connect(f"mongomock://{unique_name}", cluster=cluster.scheduler_address,
                                      config={"master.warm_up": False})
        try:
            coll = client[unique_name].docs
            coll.create_model("ident", testmodels.identity)
            before = snapshot(coll.database)
            with pytest.raises(MasterUnavailableError) as info:
                coll.create_semantic_index("i", ["ident"], ["x"])
            assert snapshot(coll.database) == before  # neither the index nor its watcher is left
        finally:
            client.close()
    message = str(info.value)
    assert "Start a worker" not in message and "restarting" in message and "superduperdb info" in message


def test_a_model_job_names_the_document_it_cannot_decode(broken) -> None:
    """A watcher over a field holding undecodable bytes records a failure naming the document, not only
    the value; the other documents get their outputs."""
    broken.raw.insert_one({"_id": "bad-input", "k": 12, "x": {"_content": {"bytes": Binary(b"\x93NUMPY junk"),
                                                                             "type": "array"}}})
    (job,) = broken.create_watcher("ident", "x").wait(WAIT)
    assert job.result()["failed"] == 1 and job.result()["computed"] >= 1
    (error,) = broken.list_errors("ident")
    assert error["document"] == "bad-input" and error["error"] == "DecodingError"
    assert "'bad-input'" in error["message"]
