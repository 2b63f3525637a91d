"""The original SuperDuperDB API's remaining names, through the public API (issue 14).

Query encoding along ``features`` chains and custom measures run in every
cluster mode (the master loads the measure in its own process there); the
rest runs inline.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import testmodels

from superduperdb.errors import (
    AlreadyRegisteredError,
    ConfigError,
    InUseError,
    ModelError,
    NotRegisteredError,
    SemanticIndexError,
)

WAIT = 120


def vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


# -- 1. query encoding follows features chains (every mode) ---------------------------------------
def test_like_applies_upstream_models_of_a_features_chain(coll):
    """The issue's scenario: b reads a's output; a raw 32-d query is encoded by a, then b."""
    X = vectors(40, 32)
    coll.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    a, b = testmodels.Projection(32, 16, seed=1), testmodels.Projection(16, 8, seed=2)
    coll.create_model("a", a, key="x").wait(WAIT)
    coll.create_model("b", b, key="x", features={"x": "a"}).wait(WAIT)
    coll.create_semantic_index("chain", ["b"], ["x"]).wait(WAIT)
    stored = coll.find_one({"i": 7})["_outputs"]["x"]["b"]
    np.testing.assert_allclose(stored, b(a(X[7])), rtol=1e-5)
    found = coll.find_one(like={"x": X[7]}, semantic_index="chain")
    assert found["i"] == 7 and found["_score"] == pytest.approx(1.0, abs=1e-5)
    assert [d["i"] for d in coll.find({"i": {"$gte": 20}}, like={"x": X[7] + 0.01}, n=1)] != [7]


def test_like_follows_a_chain_of_three_models(docs):
    X = vectors(20, 12, seed=4)
    docs.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    m1, m2, m3 = (testmodels.Projection(12, 10, 1), testmodels.Projection(10, 6, 2), testmodels.Projection(6, 4, 3))
    docs.create_model("m1", m1, key="x")
    docs.create_model("m2", m2, key="x", features={"x": "m1"})
    docs.create_model("m3", m3, key="x", features={"x": "m2"}, semantic_index=True)
    hit = docs.find_one(like={"x": X[11]}, semantic_index="m3")
    assert hit["i"] == 11 and hit["_score"] == pytest.approx(1.0, abs=1e-5)


# -- 3. custom measures (every mode: the master loads the callable) ---------------------------------
def test_custom_measure_ranks_by_the_callable(coll):
    X = vectors(60, 6, seed=5)
    coll.insert_many([{"x": x, "i": i, "odd": i % 2} for i, x in enumerate(X)])
    coll.create_measure("l1", testmodels.neg_l1)
    assert coll.list_measures() == ["cosine", "dot", "l1", "l2"]
    coll.create_model("ident", testmodels.identity)
    coll.create_semantic_index("manhattan", ["ident"], ["x"], measure="l1").wait(WAIT)
    q = X[3] * 1.5 + 0.2
    expected = np.argsort(np.abs(X - q).sum(1), kind="stable")[:5].tolist()
    docs = list(coll.find(like={"x": q}, n=5, semantic_index="manhattan"))
    assert [d["i"] for d in docs] == expected
    assert docs[0]["_score"] == pytest.approx(-float(np.abs(X[expected[0]] - q).sum()), rel=1e-5)
    # filter first, and a document inserted later is found too
    rows = [i for i in range(60) if i % 2]
    want = sorted(rows, key=lambda i: float(np.abs(X[i] - q).sum()))[:3]
    assert [d["i"] for d in coll.find({"odd": 1}, like={"x": q}, n=3)] == want
    coll.insert_one({"x": q, "i": 99}).jobs.wait(WAIT)
    assert coll.find_one(like={"x": q}, semantic_index="manhattan")["i"] == 99


def test_measures_registry_and_mapping(docs):
    docs.create_measure("l1", testmodels.neg_l1)
    Q, X = np.zeros((1, 2), np.float32), np.array([[1, 2], [0, 1]], np.float32)
    assert docs.measures["l1"](Q, X).tolist() == [[-3.0, -1.0]]
    assert docs.measures["dot"](np.ones((1, 2), np.float32), X).tolist() == [[3.0, 1.0]]
    assert set(docs.measures) == {"cosine", "dot", "l1", "l2"}
    with pytest.raises(AlreadyRegisteredError):
        docs.create_measure("l1", testmodels.neg_l1)
    with pytest.raises(SemanticIndexError, match="built-in"):
        docs.create_measure("cosine", testmodels.neg_l1)
    with pytest.raises(SemanticIndexError, match="callable"):
        docs.create_measure("nope", 3)
    with pytest.raises(SemanticIndexError, match="Did you mean 'l1'"):
        docs.create_model("m", testmodels.identity)
        docs.create_semantic_index("s", ["m"], ["x"], measure="l11")
    assert docs.list_semantic_indexes() == []
    docs.create_semantic_index("s", ["m"], ["x"], measure="l1")
    with pytest.raises(InUseError, match="semantic index 's'"):
        docs.delete_measure("l1")
    with pytest.raises(SemanticIndexError, match="built-in"):
        docs.delete_measure("dot")
    docs.delete_measure("l1", force=True)
    assert docs.list_measures() == ["cosine", "dot", "l2"] and docs.list_semantic_indexes() == []
    with pytest.raises(NotRegisteredError):
        docs.measures["l1"]


def test_custom_measure_neighbourhoods(docs):
    X = np.array([[0, 0], [0, 1], [5, 5], [5, 6]], np.float32)
    docs.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    docs.create_measure("l1", testmodels.neg_l1)
    docs.create_model("ident", testmodels.identity, key="x", semantic_index="near", measure="l1",
                      neighbourhoods=[("pair", 1)])
    pairs = {d["i"]: [n["i"] for n in d["_like"]["pair"]] for d in docs.find({}, similar_join="pair")}
    assert pairs == {0: [1], 1: [0], 2: [3], 3: [2]}


# -- 2. mappings ----------------------------------------------------------------------------------------
def test_metrics_losses_splitters_mappings(docs):
    def within_one(predictions, targets):
        return sum(abs(p - t) <= 1 for p, t in zip(predictions, targets)) / len(targets)

    def halves(doc):
        return {"text": doc["text"][:2]}, {"text": doc["text"][2:]}

    docs.create_metric("within_one", within_one)
    docs.create_splitter("halves", halves)
    assert docs.metrics["within_one"]([1, 5], [2, 2]) == 0.5
    assert docs.metrics["accuracy"]([1, 0], [1, 1]) == 0.5
    assert docs.metrics["recall@1"]([[0, 1], [1, 0]], [0, 0]) == 0.5
    assert "within_one" in docs.metrics and "accuracy" in docs.metrics
    assert docs.splitters["halves"]({"text": "abcd"}) == ({"text": "ab"}, {"text": "cd"})
    assert list(docs.splitters) == ["halves"]
    import torch

    loss = docs.losses["mse"](torch.zeros(2), torch.ones(2))
    assert float(loss) == 1.0 and "cross_entropy" in docs.losses
    with pytest.raises(NotRegisteredError, match="within_one"):
        docs.metrics["within_on"]
    with pytest.raises(KeyError):
        docs.splitters["nope"]


# -- 4, 5. downloads --------------------------------------------------------------------------------------
class _Server:
    """A local HTTP server: ``/echo`` returns the request's X-Token header, ``/hold`` answers once
    ``release`` is set, ``/count`` tracks how many requests run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Condition()
        self.active = self.max_active = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/hold"):
                    server.release.wait(30)
                    body = b"late"
                elif self.path.startswith("/count"):
                    with server.lock:
                        server.active += 1
                        server.max_active = max(server.max_active, server.active)
                        server.lock.notify_all()
                        server.lock.wait_for(lambda: server.active >= 2, timeout=2)
                    with server.lock:
                        server.active -= 1
                    body = self.path.encode()
                else:
                    body = (self.headers.get("X-Token") or "none").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http():
    server = _Server()
    yield server
    server.close()


def url_doc(url: str, **extra) -> dict:
    return {"f": {"_content": {"url": url, "type": "bytes"}}, **extra}


def test_find_download_fetches_and_stores_results(docs, http, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"alpha")
    ids = docs.insert_many([url_doc((tmp_path / "a.txt").as_uri(), i=0), url_doc(f"{http.url}/echo", i=1)],
                           refresh=False).inserted_ids
    assert "bytes" not in docs.find_one({"i": 0}, raw=True)["f"]["_content"]  # nothing downloaded yet
    got = {d["i"]: d["f"] for d in docs.find({}, download=True)}
    assert got == {0: b"alpha", 1: b"none"}
    stored = docs.find_one({"_id": ids[0]}, raw=True)["f"]["_content"]
    assert bytes(stored["bytes"]) == b"alpha"  # stored, as the download job would
    assert docs.find_one({"_id": ids[1]})["f"] == b"none"
    # a failing URL records its error; the read goes on
    bad = docs.insert_one(url_doc((tmp_path / "missing.txt").as_uri(), i=2), refresh=False).inserted_id
    doc = docs.find_one({"_id": bad}, download=True, raw=True)
    assert "error" in doc["f"]["_content"] and "error" in docs.find_one({"_id": bad}, raw=True)["f"]["_content"]


def test_showing_a_download_cursor_downloads_nothing(docs, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"alpha")
    docs.insert_one(url_doc((tmp_path / "a.txt").as_uri(), i=0), refresh=False)
    cursor = docs.find({}, download=True)
    assert "<table" in cursor._repr_html_()  # a notebook shows it
    assert "bytes" not in docs.find_one({"i": 0}, raw=True)["f"]["_content"]  # and nothing was fetched
    assert [d["f"] for d in cursor] == [b"alpha"]  # iterating it does fetch


def test_like_document_urls_are_downloaded_before_encoding(docs, tmp_path):
    X = vectors(10, 4, seed=9)
    docs.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    docs.create_model("ident", testmodels.identity, key="x", semantic_index=True)
    path = tmp_path / "q.npy"
    np.save(path, X[6])
    like = {"x": {"_content": {"url": path.as_uri(), "type": "array"}}}
    assert docs.find_one(like=like, download=True)["i"] == 6
    from superduperdb.errors import QueryError

    with pytest.raises(QueryError, match="download"):
        docs.find_one(like={"x": {"_content": {"url": (tmp_path / "no.npy").as_uri(), "type": "array"}}},
                      download=True)


def test_download_settings_per_collection(docs, http):
    docs.create_model("size", len, key="f")
    docs.set_meta("headers", {"X-Token": "secret"})
    result = docs.insert_one(url_doc(f"{http.url}/echo"))
    result.jobs.wait(WAIT)
    assert docs.find_one({"_id": result.inserted_id})["f"] == b"secret"
    # the timeout applies per URL: a URL that does not answer in time fails, the others complete
    docs.set_meta("download_timeout", 0.5)
    result = docs.insert_many([url_doc(f"{http.url}/hold"), url_doc(f"{http.url}/echo")])
    result.jobs.wait(WAIT)
    errors = result.jobs[0].result()["errors"]
    assert len(errors) == 1 and "timed out" in errors[0]["error"]
    # concurrency: n_download_workers URLs at once
    docs.set_meta("download_timeout", None)
    docs.set_meta("n_download_workers", 1)
    result = docs.insert_many([url_doc(f"{http.url}/count/{i}") for i in range(3)])
    result.jobs.wait(WAIT)
    assert http.max_active == 1
    docs.set_meta("n_download_workers", 3)
    result = docs.insert_many([url_doc(f"{http.url}/count/{i}") for i in range(3)])
    result.jobs.wait(WAIT)
    assert http.max_active >= 2
    for key, value in [("n_download_workers", 0), ("download_timeout", "30"), ("headers", {"a": 1})]:
        with pytest.raises(ConfigError, match=key):
            docs.set_meta(key, value)
    assert docs.get_meta("n_download_workers") == 3


def test_download_defaults_come_from_config(unique_name):
    import superduperdb
    from superduperdb.store.downloads import download_settings

    with superduperdb.connect(f"mongomock://{unique_name}", cluster=None,
                              config={"downloads.n_workers": 3, "downloads.timeout": 5}) as client:
        docs = client.db.docs
        settings = download_settings(docs._metadata, client.config)
        assert (settings.n_workers, settings.timeout, settings.headers) == (3, 5.0, {})
        docs.set_meta("n_download_workers", 2)
        assert download_settings(docs._metadata, client.config).n_workers == 2


# -- 6. create_model options ---------------------------------------------------------------------------------
def test_create_model_registers_index_and_neighbourhoods_in_one_call(docs):
    X = vectors(30, 5, seed=2)
    docs.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    jobs = docs.create_model("enc", testmodels.identity, key="x", semantic_index=True, measure="l2",
                             neighbourhoods=["near", {"name": "near3", "n": 3}], max_chunk_size=7)
    kinds = [j.record()["kind"] for j in jobs]
    assert kinds == ["model", "index", "neighbourhood", "neighbourhood"]
    assert docs.list_semantic_indexes() == ["enc"] and docs.semantic_index == "enc"
    assert docs.list_neighbourhoods() == ["near", "near3"]
    assert docs["_semantic_indexes"].find_one({"name": "enc"})["measure"] == "l2"
    assert docs["_watchers"].find_one({"name": "enc/x"})["chunk_size"] == 7
    doc = docs.find_one({"i": 4})
    assert len(doc["_like"]["near"]) == 10 and len(doc["_like"]["near3"]) == 3
    nearest = int(np.argsort(np.linalg.norm(X - X[4], axis=1))[1])
    assert docs.find_one({"_id": doc["_like"]["near3"][0]})["i"] == nearest
    # a named index
    docs.create_model("enc2", testmodels.identity, key="x", semantic_index="by_enc2")
    assert "by_enc2" in docs.list_semantic_indexes()


def test_max_chunk_size_sets_the_jobs_chunks(docs):
    docs.insert_many([{"v": i} for i in range(10)])
    job = docs.create_model("double", testmodels.Sleepy(0), key="v", max_chunk_size=3)[0]
    assert "10/10 documents" in job.logs()[-1] and len(job.logs()) == 4  # chunks of 3, 3, 3, 1


def test_process_docs_false_skips_the_backfill(docs):
    docs.insert_many([{"v": i} for i in range(3)])
    assert len(docs.create_model("double", testmodels.Sleepy(0), key="v", process_docs=False)) == 0
    assert docs.count_documents({"_outputs.v.double": {"$exists": True}}) == 0
    docs.insert_one({"v": 7})  # new documents are processed
    assert docs.find_one({"v": 7})["_outputs"]["v"]["double"] == 7.0
    docs.reconcile(wait=True)  # and the reconciler catches up with the old ones
    assert docs.count_documents({"_outputs.v.double": {"$exists": True}}) == 4


def test_loader_kwargs_batch_size(docs, caplog):
    docs.create_model("m", testmodels.identity, loader_kwargs={"batch_size": 5, "num_workers": 4})
    assert docs["_models"].find_one({"name": "m"})["batch_size"] == 5
    assert "num_workers" in caplog.text
    with pytest.raises(ModelError, match="Did you mean 'batch_size'"):
        docs.create_model("m2", testmodels.identity, loader_kwargs={"batch_sise": 5})


def test_create_model_option_errors_change_nothing(docs):
    docs.create_model("ident", testmodels.identity, key="x", semantic_index=True)
    cases = [
        ({"key": "x", "measure": "l2"}, SemanticIndexError, "semantic_index=True"),
        ({"semantic_index": True}, SemanticIndexError, "key"),
        ({"key": "x", "semantic_index": True, "measure": "manhattan"}, SemanticIndexError, "create_measure"),
        ({"key": "x", "semantic_index": "ident"}, AlreadyRegisteredError, "ident"),
        ({"key": "x", "semantic_index": True, "neighbourhoods": [("n", 0)]}, SemanticIndexError, "positive"),
        ({"max_chunk_size": 10}, ModelError, "key="),
        ({"key": "x", "max_chunk_size": 0}, ModelError, "max_chunk_size"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            docs.create_model("other", testmodels.identity, **kwargs)
        assert docs.list_models() == ["ident"] and docs.list_semantic_indexes() == ["ident"]


# -- 7. refresh_model, validate_semantic_index ---------------------------------------------------------------
def test_refresh_model_recomputes_current_outputs(docs, tmp_path):
    offset = tmp_path / "offset"
    offset.write_text("1")
    docs.insert_many([{"v": i} for i in range(4)])
    docs.create_model("shift", testmodels.Shift(str(offset)), key="v")
    docs.create_model("twice", lambda x: 2 * x, key="v", features={"v": "shift"})
    assert sorted(d["_outputs"]["v"]["shift"] for d in docs.find()) == [1, 2, 3, 4]
    docs.reconcile(wait=True)
    assert sorted(d["_outputs"]["v"]["shift"] for d in docs.find()) == [1, 2, 3, 4]  # current: left alone
    offset.write_text("10")
    jobs = docs.refresh_model("shift")
    jobs.wait(WAIT)
    assert [j.record()["kind"] for j in jobs] == ["model", "model"]
    assert sorted(d["_outputs"]["v"]["shift"] for d in docs.find()) == [10, 11, 12, 13]
    assert sorted(d["_outputs"]["v"]["twice"] for d in docs.find()) == [20, 22, 24, 26]  # downstream followed
    with pytest.raises(NotRegisteredError):
        docs.refresh_model("shfit")
    docs.create_model("idle", len)
    with pytest.raises(ModelError, match="no active watcher"):
        docs.refresh_model("idle")


def test_validate_semantic_index(docs):
    X = vectors(40, 8, seed=3)
    docs.insert_many([{"x": x, "q": [float(v) for v in x[:2]], "i": i, "_fold": "valid" if i < 20 else "train"}
                      for i, x in enumerate(X)])
    docs.create_model("ident", testmodels.identity)
    docs.create_model("q_enc", testmodels.first_two)
    docs.create_semantic_index("qa", ["ident", "q_enc"], ["x", "q"]).wait(WAIT)
    docs.create_validation_set("valid_set", sample_size=20)
    job = docs.validate_semantic_index("qa", ["valid_set"], ["recall@20", "mrr"], wait=True)
    metrics = job.result()["metrics"]
    assert metrics["valid_set/recall@20"] == 1.0 and 0 < metrics["valid_set/mrr"] <= 1.0
    # a perfect query encoder: every query ranks its own target first
    docs.create_semantic_index("self", ["ident", "ident"], ["x", "x"])
    perfect = docs.validate_semantic_index("self", ["valid_set"], ["recall@1"], wait=True).result()["metrics"]
    assert perfect == {"valid_set/recall@1": 1.0}
    assert docs["_semantic_indexes"].find_one({"name": "self"})["metrics"] == perfect
    # with a custom measure too
    docs.create_measure("l1", testmodels.neg_l1)
    docs.create_semantic_index("self_l1", ["ident", "ident"], ["x", "x"], measure="l1")
    assert docs.validate_semantic_index("self_l1", ["valid_set"], ["recall@1"], wait=True).result()["metrics"] == perfect
    from superduperdb.errors import TrainingError

    with pytest.raises(TrainingError, match="supervised"):
        docs.validate_semantic_index("qa", ["valid_set"], ["accuracy"])
    with pytest.raises(NotRegisteredError):
        docs.validate_semantic_index("qa", ["nope"], ["mrr"])
    docs.create_semantic_index("single", ["ident"], ["x"])
    with pytest.raises(TrainingError, match="splitter"):
        docs.validate_semantic_index("single", ["valid_set"], ["mrr"])


def test_training_an_index_with_a_custom_measure_is_refused_clearly(docs):
    from superduperdb.errors import TrainingError

    docs.create_measure("l1", testmodels.neg_l1)
    docs.create_model("ident", testmodels.identity)
    docs.create_semantic_index("s", ["ident", "ident"], ["x", "x"], measure="l1")
    with pytest.raises(TrainingError, match="custom measure 'l1'"):
        docs.train_semantic_index("s")
    assert docs.list_jobs() == [] or all(j["kind"] != "train" for j in docs.list_jobs())
