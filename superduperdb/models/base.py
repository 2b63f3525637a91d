"""One interface, :class:`Model`, over the objects users register as models.

A :class:`Model` wraps a user object and applies it to a list of inputs,
returning one output per input, in order:

========== ============================================ ==========================
kind       object                                       how it is applied
========== ============================================ ==========================
torch      ``torch.nn.Module``                          per-item ``preprocess``,
                                                        ``default_collate`` batches,
                                                        ``forward`` in eval mode
                                                        under ``no_grad``, batch
                                                        split back, per-item
                                                        ``postprocess``
sklearn    estimator (``fit`` + ``predict`` /           stacked 2-D batches,
           ``transform`` / ``predict_proba``)           ``method`` (default
                                                        ``predict``), split in rows
method     any object with ``method='name'``            ``obj.name(list_of_items)``
           (``SentenceTransformer``: ``encode``)        per batch, split back
callable   a function or callable object                ``obj(item)`` per item
========== ============================================ ==========================

Nothing is imported or computed when a :class:`Model` is built; torch,
numpy and scikit-learn are only touched once :meth:`Model.predict` runs on an
object of theirs. This module never imports torch: a torch module is
recognised through ``sys.modules``.

Examples
--------
>>> m = Model(lambda x: x * 2)
>>> m.kind
'callable'
>>> m.predict([1, 2, 3])
[2, 4, 6]
>>> Model(str.upper, name="shout").predict_one("hi")
'HI'
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

from ..errors import ModelError, unknown_name
from . import method_adapter as _method
from . import sklearn_adapter as _sk
from . import torch_adapter as _torch
from .method_adapter import is_sentence_transformer

logger = logging.getLogger(__name__)

__all__ = ["Model", "KINDS"]

#: The kinds of objects a :class:`Model` can wrap.
KINDS = ("torch", "sklearn", "method", "callable")

Hook = Callable[[Any], Any] | None | Literal[False]

_FROM_DESCRIPTION = ("method", "method_kwargs", "batch_size", "device", "name")
_PARAMS = ("preprocess", "postprocess", "batch_size", "device", "method", "method_kwargs", "name")


def class_path(obj: Any) -> str:
    """``module.QualName`` of a function or class, or of the class of an instance.

    >>> class_path(len), class_path(3)
    ('builtins.len', 'builtins.int')
    """
    target = obj if isinstance(obj, type) or hasattr(obj, "__qualname__") else type(obj)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__qualname__', type(target).__name__)}"


def _short_name(fn: Any) -> str | None:
    if fn is None:
        return None
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class Model:
    """Apply a torch module, scikit-learn estimator, object method or callable to inputs.

    Parameters
    ----------
    object : Any
        The user's model: a ``torch.nn.Module``, a scikit-learn estimator, any
        object with the method named by ``method``, or a callable.
    preprocess : callable, None or False, optional
        Applied to each input before batching. None (default) uses the torch
        module's own ``preprocess`` method if it has one (kind ``'torch'``
        only); False disables even that.
    postprocess : callable, None or False, optional
        Applied to each output after splitting the batch. Same defaults as
        ``preprocess``, with the module's ``postprocess`` method.
    batch_size : int, default 32
        Inputs per batched call (ignored for kind ``'callable'``).
    device : str or torch.device, optional
        torch only. None picks ``"cuda"`` if available, else ``"cpu"`` (for
        a ``SentenceTransformer``, None leaves it where it is). The module is
        moved there on the first :meth:`predict` and stays; outputs always come
        back on the CPU.
    method : str, optional
        The method to call. For an estimator, one of its methods (default
        ``predict``, else ``transform``); for a ``SentenceTransformer`` default
        ``encode``; for a torch module, ``"forward"`` (default) or another
        method, which is then called with the raw list of items (kind
        ``'method'``); for any other object, the method called on each batch
        (a list of items).
    method_kwargs : dict, optional
        Extra keyword arguments for every call of the model (``forward``, the
        estimator's method, the named method, or the callable), e.g.
        ``{"normalize_embeddings": True}`` for a ``SentenceTransformer``. For a
        ``SentenceTransformer``, ``show_progress_bar=False`` is the default.
    name : str, optional
        Used in messages, logs and :meth:`describe` (default: the class or
        function name).

    Attributes
    ----------
    object : Any
        The wrapped object.

    Notes
    -----
    Exceptions raised by the user's code (``preprocess``, ``forward``,
    ``predict`` ...) propagate unchanged, with their own traceback. A batched
    call that returns the wrong number of outputs raises
    :class:`~superduperdb.errors.ModelError` with ``model``, ``expected`` and
    ``got`` attributes.

    Examples
    --------
    A scikit-learn classifier:

    >>> from sklearn.linear_model import LogisticRegression
    >>> clf = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    >>> Model(clf).predict([[0.1], [2.9]])
    [0, 1]
    >>> [p.round(2).tolist() for p in Model(clf, method="predict_proba").predict([[0.0]])]
    [[0.81, 0.19]]

    A torch module with its own ``preprocess``:

    >>> import torch
    >>> class Double(torch.nn.Module):
    ...     def preprocess(self, x):
    ...         return torch.tensor([float(x)])
    ...     def forward(self, batch):
    ...         return batch * 2
    >>> m = Model(Double(), batch_size=2, device="cpu")
    >>> m.kind
    'torch'
    >>> [y.item() for y in m.predict([1, 2, 3])]
    [2.0, 4.0, 6.0]

    Any object with a batched method:

    >>> class Lengths:
    ...     def encode(self, texts):
    ...         return [len(t) for t in texts]
    >>> Model(Lengths(), method="encode").predict(["a", "abc"])
    [1, 3]
    """

    def __init__(
        self,
        object: Any,  # noqa: A002 - the original API's name
        *,
        preprocess: Hook = None,
        postprocess: Hook = None,
        batch_size: int = 32,
        device: Any = None,
        method: str | None = None,
        method_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.object = object
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.batch_size = batch_size
        self.device = device
        self.method = method
        self.method_kwargs = method_kwargs
        self._name = name

    # ------------------------------------------------------------------ info
    @property
    def name(self) -> str:
        """The given name, or the wrapped class's (or function's) name."""
        if self._name:
            return self._name
        obj = self.object
        if hasattr(obj, "__qualname__") and not isinstance(obj, type):
            return obj.__qualname__
        return type(obj).__name__

    @property
    def kind(self) -> str:
        """``'torch'``, ``'sklearn'``, ``'method'`` or ``'callable'``.

        Raises
        ------
        ModelError
            If the object is none of these.
        """
        return self._resolve()[0]

    def _resolve(self) -> tuple[str, str | None]:
        obj, method = self.object, self.method
        if method is not None and not isinstance(method, str):
            raise ModelError(f"method must be a method name (str), got {method!r}.", model=self.name)
        if isinstance(obj, type) and (
            any(c.__name__ == "Module" and c.__module__.startswith("torch.nn") for c in obj.__mro__)
            or (callable(getattr(obj, "fit", None)) and any(hasattr(obj, m) for m in _sk.DEFAULT_METHODS))
        ):
            raise ModelError(
                f"Got the class {class_path(obj)}, not a model: pass an instance, e.g. {obj.__name__}(...).",
                model=self.name,
            )
        if is_sentence_transformer(obj):
            return "method", method or "encode"
        if _torch.is_torch_module(obj):
            return ("torch", "forward") if method in (None, "forward") else ("method", method)
        if _sk.is_estimator(obj):
            return "sklearn", method or _sk.default_method(obj)
        if method is not None:
            return "method", method
        if callable(obj):
            return "callable", None
        raise ModelError(
            f"Cannot use a {class_path(obj)} as a model: pass a torch.nn.Module, a "
            f"scikit-learn estimator, a callable, or name the method to call with "
            f"method='...'.",
            model=self.name,
        )

    def hooks(self, kind: str) -> tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]:
        """``(preprocess, postprocess)``: the per-item hooks applied for ``kind`` (by default a torch
        module's own ``preprocess``/``postprocess`` methods)."""
        hooks = []
        for which in ("preprocess", "postprocess"):
            hook = getattr(self, which)
            if hook is None and kind == "torch":
                own = getattr(self.object, which, None)
                hook = own if callable(own) else None
            if hook is not None and hook is not False and not callable(hook):
                raise ModelError(f"{which} must be callable, got {hook!r}.", model=self.name)
            hooks.append(hook or None)
        return hooks[0], hooks[1]

    def get_params(self) -> dict[str, Any]:
        """The constructor options, as given (scikit-learn style).

        >>> Model(len, batch_size=8).get_params()["batch_size"]
        8
        """
        return {k: (self._name if k == "name" else getattr(self, k)) for k in _PARAMS}

    def describe(self) -> dict[str, Any]:
        """Metadata about the model, made of plain strings and ints (BSON-ready).

        Keys: ``kind``, ``class`` (import path of the object's class or
        function), ``name``, ``method`` (resolved; None for a callable),
        ``batch_size``, ``method_kwargs``, ``device`` (as configured, None
        meaning automatic),
        ``preprocess`` and ``postprocess`` (qualified names of the hooks in
        effect, or None).

        >>> d = Model(len).describe()
        >>> d["kind"], d["class"], d["method"]
        ('callable', 'builtins.len', None)
        """
        kind, method = self.validate()
        pre, post = self.hooks(kind)
        return {
            "kind": kind,
            "class": class_path(self.object),
            "name": self.name,
            "method": method,
            "batch_size": self.batch_size,
            "method_kwargs": dict(self.method_kwargs or {}),
            "device": None if self.device is None else str(self.device),
            "preprocess": _short_name(pre),
            "postprocess": _short_name(post),
        }

    def validate(self) -> tuple[str, str | None]:
        """Check every option now, as scikit-learn checks parameters, not in the first job.

        Returns ``(kind, method)``.

        Raises
        ------
        ModelError
            The object is no model; ``batch_size`` is not a positive int; ``method``
            names no callable attribute of the object; a hook is not callable;
            ``method_kwargs`` is not a dict.

        Examples
        --------
        >>> Model(len, batch_size=0).validate()
        Traceback (most recent call last):
        ...
        superduperdb.errors.ModelError: batch_size must be a positive integer, got 0.
        """
        kind, method = self._resolve()
        self._check_batch_size()
        if method is not None and kind in ("sklearn", "method") and not callable(getattr(self.object, method, None)):
            methods = [m for m in dir(self.object) if not m.startswith("_") and callable(getattr(self.object, m, None))]
            raise ModelError(unknown_name("method", method, methods, where=f"on {class_path(self.object)}",
                                          plural="callable attributes", limit=20)
                             + " method= names the method to call on each batch.", model=self.name, method=method)
        self.hooks(kind)
        self._kwargs(method)
        return kind, method

    @classmethod
    def from_object(cls, object: Any, description: dict[str, Any] | None = None, **options: Any) -> Model:  # noqa: A002
        """A :class:`Model` for ``object``, which may already be one.

        Parameters
        ----------
        object : Any
            A user object, or a :class:`Model` (returned as is when nothing is
            overridden).
        description : dict, optional
            A :meth:`describe` dict, e.g. read back from the database: its
            ``method``, ``method_kwargs``, ``batch_size``, ``device`` and
            ``name`` are used.
            Hooks cannot be rebuilt from names: pass them in ``options``.
        **options
            Constructor options, overriding the others.

        Examples
        --------
        >>> m = Model(len, batch_size=4)
        >>> Model.from_object(m) is m
        True
        >>> Model.from_object(m, batch_size=8).batch_size
        8
        >>> Model.from_object(len, Model(len, name="n").describe()).name
        'n'
        """
        unknown = set(options) - set(_PARAMS)
        if unknown:
            bad = sorted(unknown)[0]
            raise ModelError(unknown_name("Model option", bad, _PARAMS))
        params: dict[str, Any] = {}
        if isinstance(object, Model):
            if description is None and not options:
                return object
            params, object = object.get_params(), object.object
        if description:
            params.update({k: description[k] for k in _FROM_DESCRIPTION if k in description})
        params.update(options)
        return cls(object, **params)

    # --------------------------------------------------------------- compute
    def predict(self, inputs: Iterable[Any]) -> list[Any]:
        """Apply the model to each input; one output per input, in order.

        Parameters
        ----------
        inputs : iterable
            The inputs (a list, or any iterable: it is materialised).

        Returns
        -------
        list
            The outputs. torch tensors come back on the CPU; numpy scalars from
            1-D results become Python scalars.

        Raises
        ------
        ModelError
            On a misconfigured model, or a batched call returning the wrong
            number of outputs. Errors raised by the user's code propagate as is.
        """
        if isinstance(inputs, (str, bytes, dict)):
            raise ModelError(
                f"predict() takes a list of inputs, got a single {type(inputs).__name__}: "
                f"use predict_one(x), or predict([x]).",
                model=self.name,
            )
        inputs = list(inputs)
        kind, method = self._resolve()
        self._check_batch_size()
        pre, post = self.hooks(kind)
        kwargs = self._kwargs(method)
        if not inputs:
            return []
        logger.debug("model %s (%s): predicting %d inputs", self.name, kind, len(inputs))
        if kind == "torch":
            return _torch.predict_module(
                self.object, inputs, preprocess=pre, postprocess=post,
                batch_size=self.batch_size, device=self.device, model=self.name, kwargs=kwargs,
            )  # fmt: skip
        if kind == "sklearn":
            return _sk.predict_estimator(
                self.object, inputs, method=method, preprocess=pre, postprocess=post,
                batch_size=self.batch_size, model=self.name, kwargs=kwargs,
            )  # fmt: skip
        if kind == "method":
            return _method.predict_method(
                self.object, inputs, method=method, preprocess=pre, postprocess=post,
                batch_size=self.batch_size, device=self.device, model=self.name, kwargs=kwargs,
            )  # fmt: skip
        outputs = [self.object(pre(x) if pre else x, **kwargs) for x in inputs]
        return [post(y) for y in outputs] if post else outputs

    def predict_one(self, x: Any) -> Any:
        """Apply the model to a single input (``predict([x])[0]``).

        >>> Model(abs).predict_one(-3)
        3
        """
        return self.predict([x])[0]

    def _check_batch_size(self) -> None:
        bs = self.batch_size
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ModelError(f"batch_size must be a positive integer, got {bs!r}.", model=self.name,
                             argument="batch_size")

    def _kwargs(self, method: str | None) -> dict[str, Any]:
        given = self.method_kwargs or {}
        if not isinstance(given, dict):
            raise ModelError(f"method_kwargs must be a dict, got {given!r}.", model=self.name)
        return {**_method.default_kwargs(self.object, method or ""), **given}

    # ----------------------------------------------------------------- repr
    def _summary(self) -> dict[str, Any]:
        try:
            return self.describe()
        except ModelError:
            return {"kind": "invalid", "class": class_path(self.object), "name": self.name,
                    "batch_size": self.batch_size, "device": self.device}  # fmt: skip

    def __repr__(self) -> str:
        d = self._summary()
        parts = [f"{d['class']}", f"kind={d['kind']!r}"]
        if d.get("method"):
            parts.append(f"method={d['method']!r}")
        if d["kind"] != "callable":
            parts.append(f"batch_size={d['batch_size']}")
        if d["kind"] in ("torch", "method") and (d["device"] or d["kind"] == "torch"):
            parts.append(f"device={d['device'] or 'auto'!r}")
        if d.get("method_kwargs"):
            parts.append(f"method_kwargs={d['method_kwargs']!r}")
        for hook in ("preprocess", "postprocess"):
            if d.get(hook):
                parts.append(f"{hook}={d[hook]}")
        if self._name:
            parts.insert(0, f"name={self._name!r}")
        return f"Model({', '.join(parts)})"

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in self._summary().items()
        )
        return f"<table><caption>Model</caption>{rows}</table>"
