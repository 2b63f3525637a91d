"""Learning tasks (``create_learning_task``) through the public API, in every cluster mode."""

from __future__ import annotations

import numpy as np
import pytest
import trainmodels
import twotower
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from superduperdb.errors import AlreadyRegisteredError, JobFailedError, NotRegisteredError, TrainingError

WAIT = 300


@pytest.fixture(scope="module")
def client(mode_client):
    return mode_client


@pytest.fixture
def digits(client, unique_name):
    coll = client[unique_name].docs
    data = load_digits()
    coll.insert_many([{"img": x.reshape(8, 8), "label": int(y), "_fold": "valid" if i % 5 == 0 else "train"}
                      for i, (x, y) in enumerate(zip(data.data[:300], data.target[:300]))])
    coll.create_validation_set("valid", sample_size=50)
    yield coll
    client.drop_database(unique_name)


def test_custom_trainer_trains_promotes_and_watches(digits):
    digits.create_model("clf", LogisticRegression())
    jobs = digits.create_learning_task("fit", ["clf"], ["img", "label"], trainer=trainmodels.fit_digits,
                                       metrics=["accuracy"], validation_sets=["valid"], keys_to_watch=["img"],
                                       options={"C": 0.5})
    jobs.wait(WAIT)
    assert digits.list_learning_tasks() == ["fit"]
    versions = digits.list_model_versions("clf")
    assert [v["version"] for v in versions if v["serving"]] == [2]
    new = versions[-1]
    assert new["trained_by"] == {"learning_task": "fit"}
    assert new["metrics"]["valid/accuracy"] > 0.8
    assert 0 < new["metrics"]["n_train"] < 300  # the frozen validation documents are not trained on
    assert digits.models["clf"].C == 0.5
    # keys_to_watch: every document's output is the trained version's prediction.
    docs = list(digits.find({}))
    expected = digits.apply_model("clf", [d["img"] for d in docs])
    assert [d["_outputs"]["img"]["clf"] for d in docs] == expected
    assert "fitted on 2" in "\n".join(jobs[0].logs())

    digits.delete_learning_task("fit")
    assert digits.list_learning_tasks() == [] and "clf" in digits.list_models()


def test_supervised_task_on_the_built_in_trainer(digits):
    digits.create_model("clf", LogisticRegression(max_iter=500))
    digits.create_learning_task("sup", ["clf"], ["img", "label"], metrics=["accuracy"],
                                validation_sets=["valid"]).wait(WAIT)
    version = digits.list_model_versions("clf")[-1]
    assert version["serving"] and version["metrics"]["valid/accuracy"] > 0.8
    assert digits.apply_model("clf", [digits.find_one({"label": 3})["img"]]) == [3]


def test_failing_trainer_leaves_the_model_serving(digits):
    digits.create_model("clf", LogisticRegression())
    jobs = digits.create_learning_task("bad", ["clf"], ["img", "label"], trainer=trainmodels.failing_trainer)
    with pytest.raises(JobFailedError, match="the trainer gave up"):
        jobs.wait(WAIT)
    assert [v["version"] for v in digits.list_model_versions("clf")] == [1]


def test_bad_learning_tasks_are_refused_and_store_nothing(digits):
    digits.create_model("clf", LogisticRegression())
    digits.create_model("tt", twotower.TwoTower())
    digits.create_model("tt.text")
    jobs_before = len(digits.list_jobs())
    with pytest.raises(NotRegisteredError, match="ghost"):
        digits.create_learning_task("t", ["ghost"], ["img", "label"])
    with pytest.raises(TrainingError, match="needs trainer"):
        digits.create_learning_task("t", ["clf"], ["img", "label"], task_type="custom")
    with pytest.raises(TrainingError, match="attribute of model 'tt'"):
        digits.create_learning_task("t", ["tt.text"], ["img", "label"], trainer=trainmodels.fit_digits)
    with pytest.raises(NotRegisteredError, match="Register it with create_loss"):
        digits.create_learning_task("t", ["clf"], ["img", "label"], objective="nope")
    with pytest.raises(TrainingError, match="one model from keys=\\[input, target\\]"):
        digits.create_learning_task("t", ["clf"], ["img", "label", "x"], task_type="supervised")
    with pytest.raises(TrainingError, match="unknown|Unknown|did you mean"):
        digits.create_learning_task("t", ["clf"], ["img", "label"], n_epoch=3)
    assert digits.list_learning_tasks() == [] and len(digits.list_jobs()) == jobs_before
    assert digits.list_watchers() == []
    digits.create_learning_task("t", ["clf"], ["img", "label"], trainer=trainmodels.fit_digits,
                                metrics=["accuracy"]).wait(WAIT)
    with pytest.raises(AlreadyRegisteredError):
        digits.create_learning_task("t", ["clf"], ["img", "label"], trainer=trainmodels.fit_digits)


def test_attribute_models_follow_their_parents_new_version(client, unique_name):
    coll = client[unique_name].docs
    X = np.random.default_rng(0).normal(size=(12, 8)).astype("float32")
    coll.insert_many([{"x": x} for x in X])
    coll.create_model("tt", twotower.TwoTower())
    coll.create_watcher("tt.image", "x").wait(WAIT)
    before = {d["_id"]: d["_outputs"]["x"]["tt/image"] for d in coll.find({})}
    coll.create_learning_task("double", ["tt"], ["x"], trainer=trainmodels.double_image_tower).wait(WAIT)
    assert [v["version"] for v in coll.list_model_versions("tt.image") if v["serving"]] == [2]
    docs = list(coll.find({}))
    expected = coll.apply_model("tt.image", [d["x"] for d in docs])
    for doc, y in zip(docs, expected):
        np.testing.assert_allclose(doc["_outputs"]["x"]["tt/image"], y, rtol=1e-5, atol=1e-6)
        assert not np.allclose(doc["_outputs"]["x"]["tt/image"], before[doc["_id"]])
    assert coll.reconcile(wait=True, timeout=WAIT).result()["outputs_computed"] == 0
    client.drop_database(unique_name)
