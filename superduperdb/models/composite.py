"""Models made of other stored objects: attribute models and models assembled from parts.

Two kinds of model row store no object of their own; their ``artifact`` is a
*composite reference* (``serializer: 'composite'``) naming the stored objects
they are built from, which :class:`~superduperdb.store.artifacts.ArtifactStore`
resolves (each stored object is loaded once per process and shared):

``attribute``
    ``name='parent.attr'``: an attribute of a registered model's object, e.g.
    the text tower of a two-tower module. The parent's artifact is loaded (once)
    and the attribute resolved on its object: a method is called as
    ``method='attr'`` (once per batch, with the list of items, as any
    ``method=`` model), anything else (a sub-module, an estimator, a callable)
    is applied as a model of its own kind. ``'parent.a.b'`` walks ``a`` then ``b``.
``parts``
    ``create_model(name, preprocessor='p', forward='f', postprocessor='q')``: a
    model assembled from separately registered parts (``create_preprocessor``,
    ``create_forward``, ``create_postprocessor``), so one preprocessor serves
    several models and is stored once.

Both kinds can take registered pre/post-processors and plain options
(``batch_size``, ``device``, ``method_kwargs``).

Examples
--------
>>> class TwoTower:
...     def text(self, batch): return [len(s) for s in batch]
>>> ref = composite_ref(forward={"hash": "h", "serializer": "dill"}, attribute="text")
>>> build(ref, lambda r: Model(TwoTower())).predict(["ab", "abc"])
[2, 3]
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ModelError
from .base import Model

SERIALIZER = "composite"
#: The options of a composite model that are stored as plain values.
OPTIONS = ("batch_size", "device", "method", "method_kwargs")


def is_composite(ref: Mapping) -> bool:
    """Whether an artifact reference is a composite one (resolved from other artifacts)."""
    return ref.get("serializer") == SERIALIZER


def composite_ref(*, forward: Mapping, attribute: str | None = None, preprocess: Mapping | None = None,
                  postprocess: Mapping | None = None, options: Mapping | None = None, name: str | None = None) -> dict:
    """A composite artifact reference (plain BSON-ready data; ``hash`` identifies its content)."""
    body = {"forward": _ref(forward), "attribute": attribute, "preprocess": _ref(preprocess),
            "postprocess": _ref(postprocess), "options": dict(options or {}), "name": name}
    return {"hash": _digest(body), "serializer": SERIALIZER, **body}


def content_digest(ref: Mapping) -> str:
    """The digest of a composite reference's content, as :func:`composite_ref` computed its ``hash``
    (so a stored reference whose content was changed no longer matches its ``hash``).

    >>> ref = composite_ref(forward={"hash": "h", "serializer": "dill"}, attribute="text")
    >>> content_digest(ref) == ref["hash"], content_digest({**ref, "attribute": "other"}) == ref["hash"]
    (True, False)
    """
    return _digest({"forward": _ref(ref.get("forward")), "attribute": ref.get("attribute"),
                    "preprocess": _ref(ref.get("preprocess")), "postprocess": _ref(ref.get("postprocess")),
                    "options": dict(ref.get("options") or {}), "name": ref.get("name")})


def _digest(body: Mapping) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def parts_of(ref: Mapping) -> list[dict]:
    """The plain artifact references a composite reference is built from."""
    return [r for r in (ref.get("forward"), ref.get("preprocess"), ref.get("postprocess")) if r]


def _ref(ref: Mapping | None) -> dict | None:
    return None if ref is None else {"hash": ref["hash"], "serializer": ref["serializer"]}


def resolve_attribute(obj: Any, path: str) -> tuple[Any, str | None]:
    """``(object, method)`` that ``obj.<path>`` denotes: ``(owner, 'm')`` for a method, else ``(value, None)``.

    Raises
    ------
    ModelError
        If an attribute on the path does not exist.

    >>> resolve_attribute("abc", "upper")
    ('abc', 'upper')
    """
    owner = obj
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_"):  # no private or dunder attributes (__init__, _modules ...)
            raise ModelError(f"An attribute model names a public attribute, not {part!r} (in {path!r}).",
                             attribute=path)
        if not hasattr(owner, part):
            where = ".".join(parts[:i]) or "the model"
            own = [*vars(type(owner)), *getattr(owner, "_modules", {}), *getattr(owner, "__dict__", {})]
            public = sorted({a for a in own if not a.startswith("_")}) or ["none"]
            raise ModelError(f"{where} ({type(owner).__name__}) has no attribute {part!r}; it has: {', '.join(public)}.",
                             attribute=path)
        value = getattr(owner, part)
        if i == len(parts) - 1:
            if (inspect.ismethod(value) or inspect.isbuiltin(value)) and getattr(value, "__self__", None) is owner:
                return owner, part
            return value, None
        owner = value
    raise AssertionError("unreachable")  # pragma: no cover


def build(ref: Mapping, load: Callable[[Mapping], Any]) -> Model:
    """The :class:`Model` a composite reference describes; ``load(ref)`` loads a plain artifact."""
    options = {k: v for k, v in dict(ref.get("options") or {}).items() if k in OPTIONS and v is not None}
    base = load(ref["forward"])
    pre = load(ref["preprocess"]) if ref.get("preprocess") else None
    post = load(ref["postprocess"]) if ref.get("postprocess") else None
    name = ref.get("name")
    if ref.get("attribute"):
        parent = base.object if isinstance(base, Model) else base
        target, method = resolve_attribute(parent, ref["attribute"])
        if method is not None:
            options.setdefault("method", method)
        inherited = {"batch_size": base.batch_size, "device": base.device} if isinstance(base, Model) else {}
        return Model(target, preprocess=pre, postprocess=post, name=name, **{**inherited, **options})
    if isinstance(base, Model):
        return Model.from_object(base, preprocess=pre if pre else base.preprocess,
                                 postprocess=post if post else base.postprocess, name=name, **options)
    return Model(base, preprocess=pre, postprocess=post, name=name, **options)


def check_part(kind: str, obj: Any) -> None:
    """Refuse a part that cannot serve as ``kind`` ('preprocessor', 'forward', 'postprocessor')."""
    if kind == "forward":
        Model(obj).describe()  # raises ModelError for an object that is not a model
    elif not callable(obj):
        raise ModelError(f"A {kind} must be callable (applied to each item), not a {type(obj).__name__}.")
