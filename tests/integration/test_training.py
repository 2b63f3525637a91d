"""Training on the cluster through the public API, in every cluster mode (see test_jobs.py).

Imputations (scikit-learn and torch) on sklearn's digits stored as arrays, a
text encoder fine-tuned contrastively for a semantic index, versions (new
version serving, outputs and index following it, rollback), and trainings
that fail or are cancelled leaving the previous version serving.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import trainmodels
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

import superduperdb
from superduperdb.errors import (
    InUseError,
    JobCancelledError,
    JobFailedError,
    NotRegisteredError,
    TrainingError,
)

WAIT = 300
N_DIGITS = 600


def insert_digits(coll, n):
    data = load_digits()
    coll.insert_many([{"img": x.reshape(8, 8), "label": int(y), "_fold": "valid" if i % 5 == 0 else "train"}
                      for i, (x, y) in enumerate(zip(data.data[:n], data.target[:n]))])
    return coll


@pytest.fixture
def digits(coll):
    insert_digits(coll, N_DIGITS).create_validation_set("valid", sample_size=100)
    return coll


def outputs(coll, key, model):
    return {d["_id"]: d["_outputs"][key][model] for d in coll.find({}, {"_outputs": 1, key: 1})}


def serving(coll, name):
    return [v["version"] for v in coll.list_model_versions(name) if v["serving"]]


def assert_outputs_follow(coll, key, model, inputs_key):
    """Every document's output equals the serving version's prediction, and nothing is left staged."""
    docs = list(coll.find({}))
    expected = coll.apply_model(model, [d[inputs_key] for d in docs])
    for doc, y in zip(docs, expected):
        assert set(doc["_outputs"]) == {key} and set(doc["_outputs"][key]) >= {model}
        np.testing.assert_allclose(np.asarray(doc["_outputs"][key][model]), np.asarray(y), rtol=1e-5, atol=1e-6)


# -- folds and validation sets --------------------------------------------------------------------


def test_folds_and_frozen_validation_sets(coll):
    coll.insert_many([{"i": i} for i in range(1000)])
    coll.insert_one({"i": -1, "_fold": "valid"})
    # Nothing trains yet: the documents are as written, in the store and in a DataFrame.
    assert coll.count_documents({"_fold": {"$exists": True}}) == 1
    assert coll.raw.count_documents({"_fold": {"$exists": True}}) == 1
    assert "_fold" not in coll.to_pandas({"i": -1}).columns
    assert coll.to_pandas({"i": -1}, bookkeeping=True)["_fold"].tolist() == ["valid"]
    assert "_fold" not in coll.find({"i": -1})._repr_html_()
    row = coll.create_validation_set("some", sample_size=10)  # the first need of the split
    folds = {d["i"]: d["_fold"] for d in coll.find({})}
    assert set(folds.values()) == {"train", "valid"} and 15 < list(folds.values()).count("valid") < 100  # p=0.05
    assert folds[-1] == "valid"  # kept when given
    frozen = coll.get_validation_set("some")
    assert row["size"] == 10 == len(frozen) and {d["_fold"] for d in frozen} == {"valid"}
    # Stable: another need of the split changes no fold; only new documents get one.
    coll.insert_one({"i": 1000})
    assert "_fold" not in coll.find_one({"i": 1000})
    coll.create_validation_set("again", sample_size=5)
    again = {d["i"]: d["_fold"] for d in coll.find({})}
    assert {i: f for i, f in again.items() if i != 1000} == folds and again[1000] in ("train", "valid")
    coll.delete_validation_set("again")
    coll.delete_many({})
    assert len(coll.get_validation_set("some")) == 10  # frozen: survives changes to the collection
    with pytest.raises(TrainingError, match="No documents match"):
        coll.create_validation_set("empty", {"i": 10**6})
    assert coll.list_validation_sets() == ["some"]


# -- supervised -------------------------------------------------------------------------------------


def test_sklearn_classifier_on_digits(digits):
    coll = digits
    coll.create_model("clf", LogisticRegression(max_iter=2000))
    jobs = coll.create_imputation("digits", "clf", "img", "label", metrics=["accuracy", "f1"],
                                  validation_sets=["valid"])
    jobs.wait(WAIT)
    result = jobs[0].result()
    assert result["versions"] == {"clf": 2}
    assert result["metrics"]["valid/accuracy"] >= 0.9 and result["metrics"]["valid/f1"] >= 0.85
    versions = coll.list_model_versions("clf")
    assert [(v["version"], v["serving"]) for v in versions] == [(1, False), (2, True)]
    assert versions[1]["metrics"]["valid/accuracy"] == result["metrics"]["valid/accuracy"]
    assert_outputs_follow(coll, "img", "clf", "img")
    # the watcher created by the imputation is active: new documents get outputs
    new = coll.insert_one({"img": load_digits().data[-1].reshape(8, 8), "label": 8})
    new.jobs.wait(WAIT)
    assert coll.find_one({"_id": new.inserted_id})["_outputs"]["img"]["clf"] in range(10)
    assert coll.list_imputations() == ["digits"]
    with pytest.raises(InUseError):
        coll.delete_validation_set("valid")


def test_torch_mlp_on_digits_with_curves(digits):
    coll = digits
    coll.create_model("mlp", trainmodels.DigitsMLP(), batch_size=64)
    jobs = coll.create_imputation("digits_mlp", "mlp", "img", "label", metrics=["accuracy"],
                                  validation_sets=["valid"], n_epochs=12, batch_size=32, lr=1e-2)
    data = load_digits()  # documents arriving while it trains get the new version's outputs too
    during = coll.insert_many([{"img": x.reshape(8, 8), "label": int(y)}
                               for x, y in zip(data.data[N_DIGITS:N_DIGITS + 20], data.target[N_DIGITS:N_DIGITS + 20])])
    jobs.wait(WAIT)
    during.jobs.wait(WAIT)
    result = jobs[0].result()
    assert result["metrics"]["valid/accuracy"] >= 0.9
    record = jobs[0].record()
    steps = [m for m in record["metrics"] if not m.get("validation")]
    validations = [m for m in record["metrics"] if m.get("validation")]
    assert len(steps) > 100 and len(validations) >= 3
    assert np.mean([m["loss"] for m in steps[-20:]]) < np.mean([m["loss"] for m in steps[:20]])
    assert serving(coll, "mlp") == [2]
    assert_outputs_follow(coll, "img", "mlp", "img")
    import matplotlib

    matplotlib.use("Agg")
    fig = coll.plot_training(jobs)
    assert {line.get_label() for ax in fig.axes for line in ax.get_lines()} >= {"train/loss", "valid/loss",
                                                                                  "valid/accuracy"}


def test_features_model_targets_and_downstream_watchers(client, coll):
    if client.mode == "processes":
        pytest.skip("mode-independent logic (five models' backfills are slow on the TCP server); "
                    "the other tests cover training in worker processes")
    insert_digits(coll, 300)
    X = np.stack([d["img"].reshape(-1) for d in coll.find({})])
    coll.create_model("pca", PCA(n_components=12).fit(X), method="transform", key="img").wait(WAIT)
    coll.create_model("even", trainmodels.is_even, key="label").wait(WAIT)
    coll.create_model("clf", LogisticRegression(max_iter=2000))
    # input: the stored PCA outputs; target: another model's stored outputs; validation: the live 'valid' fold
    jobs = coll.create_imputation("parity", "clf", "img", {"label": "even"}, features={"img": "pca"},
                                  metrics=["accuracy"])
    jobs.wait(WAIT)
    assert jobs[0].result()["metrics"]["valid/accuracy"] >= 0.8
    docs = list(coll.find({}))
    expected = coll.apply_model("clf", [d["_outputs"]["img"]["pca"] for d in docs])
    assert [d["_outputs"]["img"]["clf"] for d in docs] == expected
    # a watcher that reads a trained model's outputs is recomputed after each new version
    coll.create_model("mlp", trainmodels.DigitsMLP(), batch_size=64)
    coll.create_imputation("digits_mlp", "mlp", "img", "label", n_epochs=1).wait(WAIT)
    coll.create_model("double", trainmodels.double)
    coll.create_watcher("double", "img", features={"img": "mlp"}).wait(WAIT)
    first = outputs(coll, "img", "mlp")
    jobs = coll.train_imputation("digits_mlp", n_epochs=4, lr=1e-2)
    assert [j.record()["kind"] for j in jobs] == ["train", "promote", "model"]
    jobs.wait(WAIT)
    after = {d["_id"]: d["_outputs"]["img"] for d in coll.find({})}
    assert any(first[i] != out["mlp"] for i, out in after.items())  # the new version predicts differently
    assert all(out["double"] == 2 * out["mlp"] for out in after.values())


def test_failing_training_leaves_previous_version_serving(digits):
    coll = digits
    coll.create_model("mlp", trainmodels.DigitsMLP(), batch_size=64)
    # chunk_size=100: the training streams its documents from MongoDB, 100 at a time, every epoch
    jobs = coll.create_imputation("digits_mlp", "mlp", "img", "label", metrics=["accuracy"], n_epochs=3, lr=1e-2,
                                  chunk_size=100)
    jobs.wait(WAIT)
    assert jobs[0].result()["metrics"]["valid/accuracy"] > 0.5
    before = outputs(coll, "img", "mlp")
    coll.create_loss("boom", trainmodels.exploding_loss)
    jobs = coll.create_imputation("bad", "mlp", "img", "label", loss="boom", n_epochs=2)
    with pytest.raises(JobFailedError, match="the loss exploded"):
        jobs[0].wait(WAIT)
    with pytest.raises((JobFailedError, JobCancelledError)):
        jobs[1].wait(WAIT)  # the switch never ran
    assert serving(coll, "mlp") == [2] and len(coll.list_model_versions("mlp")) == 2
    assert outputs(coll, "img", "mlp") == before
    with pytest.raises(InUseError):
        coll.delete_loss("boom")
    # bad input is refused before anything is submitted
    with pytest.raises(TrainingError, match="Unknown training option 'n_epoch'"):
        coll.train_imputation("digits_mlp", n_epoch=3)
    with pytest.raises(NotRegisteredError):
        coll.create_imputation("x", "mlp", "img", "label", metrics=["acuracy"])
    assert coll.list_imputations() == ["bad", "digits_mlp"]


def test_cancelled_training_leaves_previous_version_serving(client, digits):
    if client.mode == "inline":
        pytest.skip("inline jobs finish before the call returns")
    coll = digits
    coll.create_model("mlp", trainmodels.DigitsMLP(), batch_size=64)
    coll.create_imputation("digits_mlp", "mlp", "img", "label", n_epochs=1).wait(WAIT)
    before = outputs(coll, "img", "mlp")
    jobs = coll.train_imputation("digits_mlp", n_epochs=10_000, batch_size=4)
    deadline = time.monotonic() + WAIT
    while not jobs[0].record().get("metrics"):  # wait until it is really training
        assert time.monotonic() < deadline and jobs[0].status in ("pending", "running")
        time.sleep(0.05)
    jobs[0].cancel()
    with pytest.raises(JobCancelledError):
        jobs.wait(WAIT)
    while not any("cancelled" in line for line in jobs[0].logs()):  # the worker noticed and stopped
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert jobs[0].status == "cancelled"
    assert serving(coll, "mlp") == [2] and len(coll.list_model_versions("mlp")) == 2
    assert outputs(coll, "img", "mlp") == before


# -- semantic indexes and versions -------------------------------------------------------------------


def search_matches_stored_outputs(coll, titles):
    """``find(like=...)`` equals exact cosine search over the stored outputs, with the serving encoder."""
    docs = list(coll.find({}, {"_outputs": 1}))
    ids = [d["_id"] for d in docs]
    X = np.stack([d["_outputs"]["body"]["enc"] for d in docs])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    queries = coll.apply_model("enc", titles)
    for title, q in zip(titles, queries):
        found = list(coll.find(like={"title": title}, n=5))
        scores = X @ (q / np.linalg.norm(q))
        assert [d["_id"] for d in found] == [ids[i] for i in np.argsort(-scores, kind="stable")[:5]]
        np.testing.assert_allclose([d["_score"] for d in found], np.sort(scores)[::-1][:5], rtol=1e-4, atol=1e-5)


def test_contrastive_encoder_improves_recall_then_rolls_back(coll):
    coll.insert_many([{**d, "_fold": "valid" if i % 5 == 0 else "train"}
                      for i, d in enumerate(trainmodels.paired_texts(500))])
    coll.create_validation_set("valid", sample_size=80)
    coll.create_model("enc", trainmodels.BagEncoder())
    coll.create_semantic_index("qa", models=["enc", "enc"], keys=["body", "title"]).wait(WAIT)
    v1_outputs = outputs(coll, "body", "enc")
    jobs = coll.train_semantic_index("qa", metrics=["recall@5", "mrr"], validation_sets=["valid"],
                                     n_epochs=10, batch_size=32, lr=0.05)
    jobs.wait(WAIT)
    metrics = jobs[0].result()["metrics"]
    assert metrics["before/valid/recall@5"] < 0.3
    assert metrics["valid/recall@5"] >= 0.8 and metrics["valid/mrr"] > metrics["before/valid/mrr"] + 0.4
    assert serving(coll, "enc") == [2]
    assert_outputs_follow(coll, "body", "enc", "body")
    titles = [d["title"] for d in coll.get_validation_set("valid")[:10]]
    search_matches_stored_outputs(coll, titles)
    hits = [d["_source_id"] in [x["_id"] for x in coll.find(like={"title": d["title"]}, n=5)]
            for d in coll.get_validation_set("valid")]
    assert np.mean(hits) >= 0.5  # the index over all documents really serves the trained encoder
    # roll back to the untrained version: outputs and index follow
    coll.restore_model_version("enc", 1).wait(WAIT)
    assert serving(coll, "enc") == [1]
    assert outputs(coll, "body", "enc").keys() == v1_outputs.keys()
    for _id, y in outputs(coll, "body", "enc").items():
        np.testing.assert_allclose(y, v1_outputs[_id], rtol=1e-6)
    search_matches_stored_outputs(coll, titles)
    with pytest.raises(superduperdb.errors.ModelError, match="no version 7"):
        coll.restore_model_version("enc", 7)
