"""Contrastive training of semantic-index encoders and retrieval evaluation (pure compute).

A batch is a list of ``(query, target)`` pairs. The query encoder and the
target encoder (the same model when the index uses one model for both keys,
or with a splitter) embed their halves; the loss (by default
:class:`~superduperdb.training.losses.ContrastiveLoss`) pulls each query to its
own target and away from the batch's other targets.

Retrieval metrics rank all validation targets for every validation query
with the index's measure (:func:`rank`), so they do not depend on what else is
in the collection and stay comparable across versions.

Examples
--------
>>> import numpy as np
>>> rank(np.eye(3, dtype="float32"), np.eye(3, dtype="float32"), "cosine", 2)[:, 0].tolist()
[0, 1, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import TrainingError
from ..models.base import Model
from .metrics import Metric, evaluate
from .supervised import forward_batch


def _as_vectors(outputs: Any) -> Any:
    """The ``forward`` output as a 2-D float tensor (first element of a tuple, e.g. ``(vectors, extra)``)."""
    if isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    if not hasattr(outputs, "dim") or outputs.dim() != 2:
        raise TrainingError("A contrastively trained encoder's forward must return a 2-D tensor (batch x dim), "
                            f"got {type(outputs).__name__}{tuple(getattr(outputs, 'shape', ()))}.")
    return outputs.float()


def contrastive_step(query_model: Model, target_model: Model, loss: Callable[[Any, Any], Any],
                     device: Any) -> Callable[[list], Any]:
    """``step(pairs) -> loss`` for :class:`~superduperdb.training.loop.TrainLoop`."""

    def step(pairs: list) -> Any:
        if len(pairs) < 2:
            raise TrainingError("Contrastive training needs at least 2 pairs per batch (the other pairs are the "
                                "negatives): raise batch_size or add documents.")
        queries = _as_vectors(forward_batch(query_model, [q for q, _ in pairs], device))
        targets = _as_vectors(forward_batch(target_model, [t for _, t in pairs], device))
        return loss(queries, targets)

    return step


def rank(queries: np.ndarray, targets: np.ndarray, measure: str, n: int) -> np.ndarray:
    """Row numbers of the ``n`` best targets for each query, best first."""
    from ..index.measures import exact_search

    idx, _ = exact_search(np.asarray(queries, np.float32), np.asarray(targets, np.float32), n, measure)
    return idx


def encode(model: Model, items: Sequence[Any]) -> np.ndarray:
    """Vectors of ``items`` with the model as it serves (eval mode, postprocess applied)."""
    outputs = model.predict(list(items))
    return np.stack([np.asarray(o.detach().cpu().numpy() if hasattr(o, "detach") else o, np.float32)
                     for o in outputs])


def evaluate_retrieval(query_model: Model, target_model: Model, pairs: Sequence[tuple], measure: str,
                       metrics: dict[str, Metric], n_retrieve: int = 100,
                       loss: Callable[[Any, Any], Any] | None = None, batch_size: int = 64,
                       device: Any = None) -> dict[str, float]:
    """Retrieval metrics (and the loss) of the encoders on validation ``pairs``.

    Query ``i`` should retrieve target ``i`` among all the validation targets.
    """
    if not pairs:
        raise TrainingError("The validation data has no (query, target) pairs.")
    q = encode(query_model, [p[0] for p in pairs])
    t = encode(target_model, [p[1] for p in pairs])
    ranked = rank(q, t, measure, min(n_retrieve, len(pairs)))
    out = evaluate(metrics, [list(r) for r in ranked], list(range(len(pairs))))
    if loss is not None and len(pairs) >= 2:
        import torch

        total = count = 0.0
        for start in range(0, len(pairs), batch_size):
            qs, ts = q[start:start + batch_size], t[start:start + batch_size]
            if len(qs) < 2:
                continue
            value = loss(torch.as_tensor(qs), torch.as_tensor(ts))
            total += float(value) * len(qs)
            count += len(qs)
        if count:
            out["loss"] = total / count
    return out
