"""Models and data for the training tests, importable by worker processes (tests/ is on their sys.path)."""

from __future__ import annotations

import random
import zlib

import numpy as np
import torch


class DigitsMLP(torch.nn.Module):
    """8x8 digit images -> 10 logits; serves the class id."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))

    def preprocess(self, x):
        return torch.as_tensor(np.asarray(x, dtype="float32").reshape(-1) / 16.0)

    def forward(self, batch):
        return self.net(batch)

    def postprocess(self, logits):
        return int(logits.argmax())


N_TOKENS = 16
BUCKETS = 2003


class BagEncoder(torch.nn.Module):
    """A tiny text encoder: the mean of hashed-token embeddings (a stand-in for MiniLM)."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bag = torch.nn.EmbeddingBag(BUCKETS + 1, dim, mode="mean", padding_idx=0)

    def preprocess(self, text):
        ids = [zlib.crc32(w.encode()) % BUCKETS + 1 for w in str(text).split()][:N_TOKENS]
        return torch.tensor(ids + [0] * (N_TOKENS - len(ids)), dtype=torch.long)

    def forward(self, batch):
        return self.bag(batch)

    def postprocess(self, vector):
        return vector.numpy().astype("float32")


def exploding_loss(outputs, targets):
    raise RuntimeError("the loss exploded")


def paired_texts(n: int, seed: int = 0) -> list[dict]:
    """Documents whose ``title`` (words a*) is 'translated' in ``body`` (words b*), plus noise words.

    An untrained encoder cannot match them (different tokens); a contrastively
    trained one learns the translation.
    """
    rng = random.Random(seed)
    vocab = 80
    translation = list(range(vocab))
    rng.shuffle(translation)
    docs = []
    for _ in range(n):
        words = rng.sample(range(vocab), 3)
        title = " ".join(f"a{w}" for w in words)
        body = [f"b{translation[w]}" for w in words] + [f"b{rng.randrange(vocab)}" for _ in range(2)]
        rng.shuffle(body)
        docs.append({"title": title, "body": " ".join(body)})
    return docs


def is_even(label) -> int:
    return int(int(label) % 2 == 0)


def double(x) -> int:
    return 2 * int(x)


def fit_digits(models, train, validation, *, objective=None, metrics=None, log=None, C=1.0):
    """A user trainer for a learning task: fits the scikit-learn classifier ``clf`` on the examples."""
    clf = models["clf"]
    clf.set_params(C=C, max_iter=500)
    clf.fit([np.asarray(e["img"]).reshape(-1) for e in train], [e["label"] for e in train])
    log(f"fitted on {len(train)} examples")
    out = {"n_train": float(len(train))}
    for name, examples in validation.items():
        predictions = clf.predict([np.asarray(e["img"]).reshape(-1) for e in examples]).tolist()
        for metric, fn in metrics.items():
            out[f"{name}/{metric}"] = float(fn(predictions, [e["label"] for e in examples]))
    return out


def failing_trainer(models, train, validation, **kwargs):
    raise RuntimeError("the trainer gave up")


def double_image_tower(models, train, validation, **kwargs):
    """A user trainer that 'trains' the image tower of a two-tower model (doubles its weights)."""
    with torch.no_grad():
        models["tt"].image.weight.mul_(2.0)
    return {"scale": 2.0}
