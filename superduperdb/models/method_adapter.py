"""Applying a named method of any object to batches (lists) of inputs.

Used for kind ``'method'``: ``Model(obj, method="encode")`` calls
``obj.encode([item, item, ...], **method_kwargs)`` once per batch and splits
the result back into one output per input (see
:func:`superduperdb.models.batching.split_batch`). A sentence-transformers
``SentenceTransformer`` gets this treatment by default, with ``encode``.

If the object is a torch module (a ``SentenceTransformer`` is one), each call
runs under ``torch.no_grad()`` with the module in eval mode, restored after.

Examples
--------
>>> class Upper:
...     def run(self, batch):
...         return [s.upper() for s in batch]
>>> predict_method(Upper(), ["a", "b", "c"], method="run", batch_size=2, model="upper")
['A', 'B', 'C']
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..errors import ModelError, unknown_name
from . import torch_adapter as _torch
from .batching import chunks, split_batch

logger = logging.getLogger(__name__)

__all__ = ["is_sentence_transformer", "public_methods", "predict_method"]


def is_sentence_transformer(obj: Any) -> bool:
    """True for a sentence-transformers ``SentenceTransformer`` (never imports it)."""
    return any(
        c.__name__ == "SentenceTransformer" and c.__module__.startswith("sentence_transformers")
        for c in type(obj).__mro__
    )


def public_methods(obj: Any) -> list[str]:
    """Names of the public callables of ``obj`` (for "did you mean" messages)."""
    return [m for m in dir(obj) if not m.startswith("_") and callable(getattr(obj, m, None))]


def default_kwargs(obj: Any, method: str) -> dict[str, Any]:
    """Keyword arguments added by default: no progress bars from ``SentenceTransformer.encode``."""
    if method == "encode" and is_sentence_transformer(obj):
        return {"show_progress_bar": False}
    return {}


def predict_method(
    obj: Any,
    inputs: list[Any],
    *,
    method: str,
    batch_size: int,
    model: str,
    preprocess: Callable[[Any], Any] | None = None,
    postprocess: Callable[[Any], Any] | None = None,
    device: Any = None,
    kwargs: dict[str, Any] | None = None,
) -> list[Any]:
    """Call ``obj.<method>(batch, **kwargs)`` on batches of inputs; one output per input.

    Parameters
    ----------
    obj : Any
        The object.
    inputs : list
        The raw inputs.
    method : str
        Name of the batched method.
    batch_size : int
        Items per call.
    model : str
        Name used in messages.
    preprocess, postprocess : callable, optional
        Per-item functions.
    device : str, optional
        torch modules only: move the module there first (None leaves it).
    kwargs : dict, optional
        Extra keyword arguments for every call.

    Raises
    ------
    ModelError
        If ``obj`` has no such method, or a call returns the wrong number of outputs.
    """
    fn = getattr(obj, method, None)
    if not callable(fn):
        raise ModelError(
            unknown_name("method", method, public_methods(obj), where=f"on {type(obj).__name__} (model {model!r})",
                         limit=20),
            model=model,
            method=method,
        )
    context: Any = contextlib.nullcontext()
    if _torch.is_torch_module(obj):
        if device is not None:
            obj.to(device)
        context = _torch.inference_mode(obj)
    outputs: list[Any] = []
    with context:
        for chunk in chunks(inputs, batch_size):
            items = [preprocess(x) for x in chunk] if preprocess is not None else list(chunk)
            outputs.extend(split_batch(fn(items, **(kwargs or {})), len(chunk), model=model))
            logger.debug("model %s: %s on %d items", model, method, len(chunk))
    if postprocess is not None:
        outputs = [postprocess(y) for y in outputs]
    return outputs
