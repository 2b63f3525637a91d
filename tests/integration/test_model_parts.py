"""Attribute models (``parent.attr``) and models assembled from registered parts, through the public API.

The attribute-model scenario is the original's two-tower one: the image tower
of a stored model feeds a semantic index, its text tower encodes the queries.
"""

from __future__ import annotations

import numpy as np
import pytest
import testmodels
import twotower

from superduperdb.errors import AlreadyRegisteredError, InUseError, ModelError, NotRegisteredError

WAIT = 120


@pytest.fixture(scope="module")
def client(mode_client):
    return mode_client


def _towers():
    import torch

    model = twotower.TwoTower()

    def image(x):
        return model.image(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()

    def text(t):
        return model.text(torch.as_tensor(testmodels.letter_counts(t))).detach().numpy()

    return model, image, text


def test_two_tower_attribute_models_index_and_query(client, unique_name):
    coll = client[unique_name].docs
    X = np.random.default_rng(3).normal(size=(30, 8)).astype("float32")
    coll.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    model, image, text = _towers()
    coll.create_model("tt", model)
    coll.create_semantic_index("towers", models=["tt.image", "tt.text"], keys=["x", "text"]).wait(WAIT)
    assert {"tt", "tt.image", "tt.text"} <= set(coll.list_models())

    # Outputs of tt.image live at _outputs.x.tt/image (not nested inside tt's own outputs), computed by the tower.
    doc = coll.find_one({"i": 4})
    np.testing.assert_allclose(doc["_outputs"]["x"]["tt/image"], image(X[4]), rtol=1e-5, atol=1e-6)
    # The parent itself on the same key: both outputs side by side, no collision.
    coll.create_watcher("tt", "x").wait(WAIT)
    doc = coll.find_one({"i": 4})
    assert set(doc["_outputs"]["x"]) == {"tt", "tt/image"}
    np.testing.assert_allclose(doc["_outputs"]["x"]["tt"], doc["_outputs"]["x"]["tt/image"], rtol=1e-5, atol=1e-6)

    # The text tower encodes the query: results are the brute-force top 3 in the shared space.
    H = np.stack([image(x) for x in X])
    q = text("a query about towers")
    scores = (H / np.linalg.norm(H, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    expected = [int(i) for i in np.argsort(-scores)[:3]]
    assert [d["i"] for d in coll.find(like={"text": "a query about towers"}, n=3)] == expected
    assert [d["i"] for d in coll.find({"i": {"$in": expected}}, features={"x": "tt.image"})] == sorted(expected)

    # Fingerprints, the reconciler and the layout agree: nothing is stale after the backfill.
    coll.insert_one({"x": X[0], "i": 99}).jobs.wait(WAIT)
    assert coll.reconcile(wait=True, timeout=WAIT).result()["outputs_computed"] == 0

    # Deleting the parent is refused while attribute models use it; force removes them, with their outputs.
    with pytest.raises(InUseError, match="tt.image"):
        coll.delete_model("tt")
    coll.delete_model("tt", force=True)
    assert not {"tt", "tt.image", "tt.text"} & set(coll.list_models())
    assert coll.count_documents({"_outputs.x.tt/image": {"$exists": True}}) == 0


def test_attribute_watcher_and_method(docs):
    model, _, text = _towers()
    docs.insert_many([{"text": "hello"}, {"text": "two towers"}])
    docs.create_model("tt", model)
    docs.create_watcher("tt.text", "text").wait(WAIT)
    for doc in docs.find({}):
        np.testing.assert_allclose(doc["_outputs"]["text"]["tt/text"], text(doc["text"]), rtol=1e-5, atol=1e-6)
    # A method of the parent: called with the batch, as any method= model.
    out = docs.apply_model("tt.encode_text", ["hello", "abc"])
    np.testing.assert_allclose(out[1], text("abc"), rtol=1e-5, atol=1e-6)
    # Explicit registration with options; deleting an attribute model leaves the parent alone.
    docs.create_model("tt.image", batch_size=2)
    assert docs.models["tt.image"] is not None
    docs.delete_model("tt.image")
    assert "tt" in docs.list_models()


def test_attribute_model_bad_input_is_refused_clearly(docs):
    docs.create_model("tt", twotower.TwoTower())
    before = docs.list_models()
    with pytest.raises(ModelError, match="has no attribute 'nope'.*image"):
        docs.apply_model("tt.nope", [1])
    with pytest.raises(NotRegisteredError, match="ghost"):
        docs.create_watcher("ghost.text", "text")
    with pytest.raises(ModelError, match="give no object"):
        docs.create_model("tt.text", testmodels.identity)
    with pytest.raises(ModelError, match="names must be"):
        docs.create_model("a/b", testmodels.identity)
    assert docs.list_models() == before


def test_attribute_models_request_their_parents_resources(docs):
    """A tower of a model on a GPU runs where its parent does: its jobs request the same resources."""
    docs.create_model("tt", twotower.TwoTower(), resources={"GPU": 1})
    docs.create_model("tt.text")
    assert docs._metadata.get("models", "tt.text")["resources"] == {"GPU": 1}
    docs.create_model("plain", twotower.TwoTower())
    docs.create_model("plain.text")
    assert "resources" not in docs._metadata.get("models", "plain.text")
    with pytest.raises(ModelError, match="public attribute"):
        docs.apply_model("plain.__init__", [1])


def test_models_assembled_from_shared_parts(docs):
    docs.insert_many([{"x": i} for i in range(5)])
    docs.create_preprocessor("inc", testmodels.increment)
    docs.create_forward("square", testmodels.square)
    docs.create_forward("negate", testmodels.negate)
    docs.create_postprocessor("halve", testmodels.halve)
    docs.create_model("sq", preprocessor="inc", forward="square", key="x").wait(WAIT)
    docs.create_model("neg", preprocessor="inc", forward="negate", postprocessor="halve")
    assert docs.apply_model("neg", [1, 3]) == [-1.0, -2.0]
    assert [d["_outputs"]["x"]["sq"] for d in docs.find({}, sort=[("x", 1)])] == [1, 4, 9, 16, 25]
    assert docs.list_preprocessors() == ["inc"]
    assert docs.list_forwards() == ["negate", "square"]
    assert docs.list_postprocessors() == ["halve"]
    # One stored preprocessor serves both models.
    rows = {r["name"]: r for r in docs["_models"].find({"name": {"$in": ["sq", "neg"]}})}
    assert rows["sq"]["artifact"]["preprocess"] == rows["neg"]["artifact"]["preprocess"]
    assert docs.count_documents({}) == 5 and docs["_artifacts.files"].count_documents({}) == 4

    # A part in use cannot be deleted; unused ones can, and force deletes the models too.
    with pytest.raises(InUseError, match="'neg'.*'sq'|'sq'.*'neg'"):
        docs.delete_preprocessor("inc")
    docs.delete_postprocessor("halve", force=True)
    assert "neg" not in docs.list_models() and docs.list_postprocessors() == []
    docs.delete_forward("negate")
    assert docs.list_forwards() == ["square"]


def test_parts_bad_input_is_refused_clearly(docs):
    docs.create_preprocessor("inc", testmodels.increment)
    with pytest.raises(AlreadyRegisteredError):
        docs.create_preprocessor("inc", testmodels.increment)
    with pytest.raises(ModelError, match="must be callable"):
        docs.create_postprocessor("nope", 3)
    with pytest.raises(ModelError, match="Cannot use"):
        docs.create_forward("nope", 3)
    with pytest.raises(NotRegisteredError, match="Register it with create_forward"):
        docs.create_model("m", preprocessor="inc", forward="missing")
    with pytest.raises(ModelError, match="not both"):
        docs.create_model("m", testmodels.square, preprocess=testmodels.increment, preprocessor="inc")
    assert docs.list_models() == [] and docs.list_forwards() == [] and docs.list_postprocessors() == []
