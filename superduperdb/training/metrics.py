"""Validation metrics: built-ins and the calling convention for user metrics.

Every metric is called as ``metric(predictions, targets) -> float``:

* supervised models (imputations): ``predictions[i]`` is the model's output
  for validation document ``i`` and ``targets[i]`` its target;
* semantic indexes: ``predictions[i]`` is the ranked list of validation
  documents (row numbers, best first) retrieved for query ``i`` and
  ``targets[i]`` the row number of its true match.

Built-ins, by name: ``accuracy``, ``f1`` (macro-averaged over the classes),
``mse`` (mean squared error), ``recall@k`` (any ``k``, e.g. ``recall@10``) and
``mrr`` (mean reciprocal rank).

Examples
--------
>>> accuracy([1, 2, 3], [1, 2, 0])
0.6666666666666666
>>> get_builtin("recall@2")([[3, 1], [0, 2]], [1, 1])
0.5
>>> mrr([[3, 1], [0, 2]], [1, 1])
0.25
>>> higher_is_better("mse"), higher_is_better("recall@5")
(False, True)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import TrainingError

Metric = Callable[[Sequence[Any], Sequence[Any]], float]

BUILTIN_METRICS = ("accuracy", "f1", "mse", "recall@k", "mrr")
RETRIEVAL = ("recall@", "mrr")
_RECALL = re.compile(r"^recall@(\d+)$")
LOWER_IS_BETTER = ("loss", "mse")


def _labels(values: Sequence[Any]) -> list[Any]:
    return [v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v for v in values]


def accuracy(predictions: Sequence[Any], targets: Sequence[Any]) -> float:
    """Fraction of predictions equal to their target."""
    _check_lengths(predictions, targets)
    p, t = _labels(predictions), _labels(targets)
    return float(np.mean([a == b for a, b in zip(p, t)]))


def f1(predictions: Sequence[Any], targets: Sequence[Any]) -> float:
    """Macro-averaged F1 over the classes seen in the targets or predictions.

    >>> round(f1([0, 1, 1, 0], [0, 1, 0, 0]), 3)
    0.733
    """
    _check_lengths(predictions, targets)
    p, t = _labels(predictions), _labels(targets)
    scores = []
    for label in sorted(set(p) | set(t), key=repr):
        tp = sum(a == label and b == label for a, b in zip(p, t))
        fp = sum(a == label and b != label for a, b in zip(p, t))
        fn = sum(a != label and b == label for a, b in zip(p, t))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def mse(predictions: Sequence[Any], targets: Sequence[Any]) -> float:
    """Mean squared error over every element of the (possibly vector) outputs."""
    _check_lengths(predictions, targets)
    p = np.asarray([_numpy(x) for x in predictions], dtype=np.float64)
    t = np.asarray([_numpy(x) for x in targets], dtype=np.float64)
    return float(np.mean((p.reshape(t.shape) - t) ** 2))


def recall_at(k: int) -> Metric:
    """The ``recall@k`` metric: fraction of queries whose target is in the top ``k``."""

    def recall(predictions: Sequence[Sequence[int]], targets: Sequence[int]) -> float:
        _check_lengths(predictions, targets)
        return float(np.mean([t in list(p)[:k] for p, t in zip(predictions, targets)]))

    recall.__name__ = f"recall@{k}"
    return recall


def mrr(predictions: Sequence[Sequence[int]], targets: Sequence[int]) -> float:
    """Mean reciprocal rank of each query's target (0 where it was not retrieved)."""
    _check_lengths(predictions, targets)
    ranks = []
    for p, t in zip(predictions, targets):
        p = list(p)
        ranks.append(1.0 / (p.index(t) + 1) if t in p else 0.0)
    return float(np.mean(ranks))


def get_builtin(name: str) -> Metric | None:
    """The built-in metric called ``name``, or None."""
    match = _RECALL.match(name)
    if match:
        return recall_at(int(match.group(1)))
    return {"accuracy": accuracy, "f1": f1, "mse": mse, "mrr": mrr}.get(name)


def is_builtin(name: str) -> bool:
    return get_builtin(name) is not None


def is_retrieval(name: str) -> bool:
    """Whether a built-in metric is a ranking metric (for semantic indexes)."""
    return name == "mrr" or bool(_RECALL.match(name))


def higher_is_better(name: str) -> bool:
    """Direction of a metric for early stopping: ``loss`` and ``mse`` go down, the rest up."""
    return name.rsplit("/", 1)[-1] not in LOWER_IS_BETTER


def evaluate(metrics: dict[str, Metric], predictions: Sequence[Any], targets: Sequence[Any]) -> dict[str, float]:
    """``{name: metric(predictions, targets)}`` for every metric."""
    out = {}
    for name, metric in metrics.items():
        value = metric(predictions, targets)
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            raise TrainingError(f"Metric {name!r} returned {value!r}; a metric must return a number.",
                                metric=name) from None
    return out


def _numpy(x: Any) -> Any:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_lengths(predictions: Sequence[Any], targets: Sequence[Any]) -> None:
    if len(predictions) != len(targets):
        raise TrainingError(f"Got {len(predictions)} predictions for {len(targets)} targets.")
    if not len(targets):
        raise TrainingError("No validation examples: a metric needs at least one.")
