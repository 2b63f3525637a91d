"""Models as big as real ones, stored in GridFS on the TCP server and loaded by worker processes.

The README's model (all-MiniLM-L6-v2) is a 91 MB artifact. Stock CongoDB could not read a file
that size back (a reply over 17 MB failed to encode and was answered to request 0:
``ProtocolError: Got response id 0 but expected ...``); tests/congodb/patches/0002 fixes it.
Both tests run a local cluster of worker processes, so the workers load the model from the
server, not from the client's memory.
"""

from __future__ import annotations

import pytest
import testmodels

import superduperdb

pytestmark = [pytest.mark.slow, pytest.mark.integration]

WAIT = 300
MINILM_BYTES = 91_000_000


@pytest.fixture(scope="module")
def cluster_client(server_uri):
    client = superduperdb.connect(server_uri, cluster="local", config={"master.warm_up": False})
    yield client
    client.close()


def test_a_91_mb_model_is_stored_once_and_loaded_by_the_workers(cluster_client, unique_name) -> None:
    docs = cluster_client[unique_name].docs
    ballast = testmodels.Ballast(MINILM_BYTES)
    docs.insert_many([{"x": i} for i in range(3)])

    docs.create_model("ballast", ballast, key="x").wait(WAIT)

    outputs = {d["x"]: d["_outputs"]["x"]["ballast"] for d in docs.find({}, {"x": 1, "_outputs": 1})}
    assert outputs == {i: f"{i}:{ballast.digest()}" for i in range(3)}
    chunks = cluster_client.raw[unique_name]["docs._artifacts.chunks"]
    assert chunks.count_documents({}) >= MINILM_BYTES // (255 * 1024)


def test_the_readme_model_on_a_cluster_of_processes(cluster_client, unique_name) -> None:
    pytest.importorskip("sentence_transformers", reason="the text extra is not installed")
    from superduperdb.models.text import load_minilm

    docs = cluster_client[unique_name].documents
    docs.insert_many([{"text": "Arrays of numbers", "lang": "en"},
                      {"text": "Tableaux de nombres", "lang": "fr"},
                      {"text": "A recipe for onion soup", "lang": "en"}])
    docs.create_model("minilm", load_minilm(), key="text").wait(WAIT)
    docs.create_semantic_index("text", models=["minilm"], keys=["text"]).wait(WAIT)
    docs.insert_one({"text": "Matrices and vectors", "lang": "en"}).jobs.wait(WAIT)

    found = list(docs.find({"lang": "en"}, like={"text": "linear algebra"}, n=2))

    assert [d["text"] for d in found] == ["Matrices and vectors", "Arrays of numbers"]
    assert found[0]["_score"] > found[1]["_score"] > 0
