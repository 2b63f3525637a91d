"""Supervised training of a :class:`~superduperdb.models.base.Model` (pure compute).

* scikit-learn estimators: :func:`fit_estimator` stacks the (preprocessed)
  inputs as the model's :meth:`predict` would and calls ``fit(X, y)``.
* PyTorch modules: :func:`forward_batch` runs the module with gradients on a
  batch exactly as inference does (per-item ``preprocess``, ``default_collate``,
  ``forward``), so what is trained is what is served.

Examples
--------
>>> from sklearn.linear_model import LogisticRegression
>>> from superduperdb.models import Model
>>> m = Model(LogisticRegression())
>>> _ = fit_estimator(m, [[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
>>> m.predict([[0.2], [2.8]])
[0, 1]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import TrainingError
from ..models.base import Model

logger = logging.getLogger(__name__)


def fit_estimator(model: Model, inputs: Sequence[Any], targets: Sequence[Any], **fit_kwargs: Any) -> Model:
    """Fit the wrapped estimator on ``inputs``/``targets`` in place; return ``model``."""
    import numpy as np

    from ..models.sklearn_adapter import stack

    if not len(inputs):
        raise TrainingError("No training documents (with both an input and a target) matched.", model=model.name)
    pre, _ = model.hooks(model.kind)
    items = [pre(x) for x in inputs] if pre is not None else list(inputs)
    X = stack(items, model.name)
    y = np.asarray([_plain(t) for t in targets])
    model.object.fit(X, y, **fit_kwargs)
    logger.info("fitted %s on %d examples", type(model.object).__name__, len(items))
    return model


def _plain(t: Any) -> Any:
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return t


def torch_module(model: Model) -> Any:
    """The wrapped ``torch.nn.Module``, or a :class:`TrainingError` saying what else is supported."""
    if model.kind != "torch":
        raise TrainingError(
            f"Model {model.name!r} is a {model.kind!r} model: only torch modules are trained with a loss and an "
            "optimizer (scikit-learn estimators are fitted; other models cannot be trained).", model=model.name)
    return model.object


def forward_batch(model: Model, items: Sequence[Any], device: Any) -> Any:
    """``forward`` of the wrapped module on ``items``, with gradients (train mode is the caller's)."""
    from ..models.torch_adapter import collate, to_device

    pre, _ = model.hooks("torch")
    batch = [pre(x) for x in items] if pre is not None else list(items)
    return model.object(to_device(collate(batch, model.name), device), **(model.method_kwargs or {}))


def collate_targets(targets: Sequence[Any], device: Any, model: str) -> Any:
    """Targets as one tensor (float32 for floating values)."""
    import numpy as np
    import torch

    from ..models.torch_adapter import collate

    values = [torch.as_tensor(np.asarray(_plain(t))) if not hasattr(t, "detach") else t for t in targets]
    batch = collate(values, model)
    if batch.is_floating_point():
        batch = batch.float()
    return batch.to(device)


def supervised_step(model: Model, loss: Callable[[Any, Any], Any], device: Any) -> Callable[[tuple], Any]:
    """``step((inputs, targets)) -> loss`` for :class:`~superduperdb.training.loop.TrainLoop`."""

    def step(batch: tuple) -> Any:
        inputs, targets = batch
        outputs = forward_batch(model, inputs, device)
        return loss(outputs, collate_targets(targets, device, model.name))

    return step


def validation_loss(model: Model, loss: Callable[[Any, Any], Any], inputs: Sequence[Any], targets: Sequence[Any],
                    batch_size: int, device: Any) -> float:
    """Mean loss over ``inputs`` in eval mode, without gradients."""
    from ..models.torch_adapter import inference_mode

    total = count = 0.0
    with inference_mode(model.object):
        for start in range(0, len(inputs), batch_size):
            xs, ys = inputs[start:start + batch_size], targets[start:start + batch_size]
            value = loss(forward_batch(model, xs, device), collate_targets(ys, device, model.name))
            total += float(value) * len(xs)
            count += len(xs)
    return total / count if count else float("nan")
