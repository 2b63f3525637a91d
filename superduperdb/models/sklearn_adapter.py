"""Running a scikit-learn(-like) estimator on a list of inputs.

An estimator is any object with ``fit`` and one of ``predict``, ``transform``,
``predict_proba`` (scikit-learn estimators and pipelines, and estimators of
libraries that follow its API, such as xgboost or lightgbm).

Inputs are stacked into the 2-D array estimators expect: scalars become one
column, 1-D items (arrays, lists) become rows, and N-D items (for instance
8x8 images) are flattened into rows. Strings, bytes and dicts are passed as a
plain list instead, which is what text pipelines (``TfidfVectorizer``) and
``DictVectorizer`` take.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import ModelError, unknown_name
from .batching import chunks, split_batch

logger = logging.getLogger(__name__)

#: Methods an estimator may be applied with, in order of preference for the default.
DEFAULT_METHODS = ("predict", "transform", "predict_proba")


def is_estimator(obj: Any) -> bool:
    """True if ``obj`` looks like a scikit-learn estimator (never imports sklearn).

    >>> class Dummy:
    ...     def fit(self, X, y=None): return self
    ...     def predict(self, X): return X
    >>> is_estimator(Dummy()), is_estimator(len)
    (True, False)
    """
    if isinstance(obj, type) or not callable(getattr(obj, "fit", None)):
        return False
    return any(callable(getattr(obj, m, None)) for m in DEFAULT_METHODS)


def default_method(obj: Any) -> str:
    """``predict`` if the estimator has it, else ``transform``, else ``predict_proba``."""
    for name in DEFAULT_METHODS:
        if callable(getattr(obj, name, None)):
            return name
    raise ModelError(f"{type(obj).__name__} has none of the methods {', '.join(DEFAULT_METHODS)}.")


def _is_sklearn_class(obj: Any) -> bool:
    return hasattr(obj, "__sklearn_is_fitted__") or any(
        c.__module__.startswith("sklearn.") for c in type(obj).__mro__
    )


def check_fitted(obj: Any, model: str) -> None:
    """Raise :class:`ModelError` if a scikit-learn estimator has not been fitted.

    Duck-typed estimators that do not derive from scikit-learn are not checked
    (scikit-learn's check relies on its own conventions).
    """
    if not _is_sklearn_class(obj):
        return
    try:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted
    except ImportError:  # pragma: no cover - sklearn classes imply sklearn
        return
    try:
        check_is_fitted(obj)
    except NotFittedError as exc:
        raise ModelError(
            f"The estimator of model {model!r} ({type(obj).__name__}) is not fitted yet: "
            f"call .fit(X, y) on it first, then register or apply it.",
            model=model,
        ) from exc


def stack(items: list[Any], model: str) -> Any:
    """Stack per-item inputs into the 2-D array (or list of strings/dicts) an estimator takes.

    >>> stack([1.0, 2.0], "demo").shape, stack([[1, 2], [3, 4]], "demo").shape
    ((2, 1), (2, 2))
    >>> stack(["some text", "more text"], "demo")
    ['some text', 'more text']
    """
    if items and all(isinstance(x, (str, bytes, dict)) for x in items):
        return list(items)
    import numpy as np

    try:
        X = np.asarray(items)
    except ValueError as exc:
        shapes = sorted({str(np.shape(x)) for x in items})
        raise ModelError(
            f"The inputs of model {model!r} cannot be stacked into one array: they have "
            f"different shapes {', '.join(shapes)}. Give every input the same shape "
            f"(in `preprocess`, for example).",
            model=model,
            shapes=shapes,
        ) from exc
    if X.dtype == object and X.ndim == 1 and any(np.ndim(x) > 0 for x in items):
        shapes = sorted({str(np.shape(x)) for x in items})
        raise ModelError(
            f"The inputs of model {model!r} cannot be stacked into one array: they have "
            f"different shapes {', '.join(shapes)}.",
            model=model,
            shapes=shapes,
        )
    if X.ndim == 1:
        return X.reshape(-1, 1)
    if X.ndim > 2:
        return X.reshape(X.shape[0], -1)
    return X


def resolve_method(obj: Any, method: str | None, model: str) -> Callable[[Any], Any]:
    """The bound method to apply (``method``, or the estimator's default)."""
    name = method or default_method(obj)
    fn = getattr(obj, name, None)
    if not callable(fn):
        available = [m for m in dir(obj) if not m.startswith("_") and callable(getattr(obj, m, None))]
        raise ModelError(
            unknown_name("method", name, available, where=f"on the estimator of model {model!r} ({type(obj).__name__})"),
            model=model,
            method=name,
        )
    return fn


def predict_estimator(
    obj: Any,
    inputs: list[Any],
    *,
    method: str | None,
    preprocess: Callable[[Any], Any] | None,
    postprocess: Callable[[Any], Any] | None,
    batch_size: int,
    model: str,
    kwargs: dict[str, Any] | None = None,
) -> list[Any]:
    """Apply ``obj.<method>`` to stacked batches of inputs; one output per input.

    1-D results (``predict`` labels, ``decision_function`` of a binary classifier)
    give Python scalars; 2-D results (``transform``, ``predict_proba``) give
    1-D numpy arrays. Sparse results are made dense, row by row.
    """
    check_fitted(obj, model)
    fn = resolve_method(obj, method, model)
    outputs: list[Any] = []
    for chunk in chunks(inputs, batch_size):
        items = [preprocess(x) for x in chunk] if preprocess is not None else list(chunk)
        out = fn(stack(items, model), **(kwargs or {}))
        outputs.extend(split_batch(out, len(chunk), model=model))
        logger.debug("model %s: %s on %d items", model, fn.__name__, len(chunk))
    if postprocess is not None:
        outputs = [postprocess(y) for y in outputs]
    return outputs
