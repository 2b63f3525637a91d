"""The input a model reads from a ``like`` document, following ``features`` chains.

A watcher ``b/x`` with ``features={'x': 'a'}`` stores ``b`` applied to the
stored output of ``a`` on ``x`` (``_outputs.x.a``), not to the raw ``x``. A
query ``find(like={'x': raw}, semantic_index=...)`` over ``b``'s outputs must
be encoded the same way: ``a`` is applied to ``raw`` first, and so on up the
chain (``a`` may read another model's output in turn), as the original
SuperDuperDB did. Upstream outputs go through the same encode/decode round
trip as stored ones, so the indexed model sees the same values either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CycleError
from ..store.layout import NOT_INPUT
from ..store.models import load_model
from ..store.watchers import watcher_name
from ..types.encoding import CONTENT

if TYPE_CHECKING:
    from ..models.base import Model
    from .scope import Scope


class Source(Protocol):
    """Where query encoding reads models and metadata rows (the search service's short-lived cache)."""

    def model(self, name: str) -> Model: ...

    def row(self, kind: str, name: str) -> dict | None: ...


class Direct:
    """A :class:`Source` that reads the metadata each time."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def model(self, name: str) -> Model:
        return load_model(self.scope.metadata, self.scope.artifacts, name)

    def row(self, kind: str, name: str) -> dict | None:
        return self.scope.metadata.find_one(kind, name)


def query_input(scope: Scope, model: str, key: str, like: Mapping, _chain: tuple = (),
                source: Source | None = None) -> Any:
    """What ``model`` reads on ``key`` for the ``like`` document (decoded), as its watcher would.

    Without a watcher ``<model>/<key>`` (a query-only model), the raw field.
    ``source`` gives models and rows (default: read from the metadata each time).
    """
    source = source or Direct(scope)
    if (model, key) in _chain:
        raise CycleError(f"features form a cycle through model {model!r} on key {key!r}.")
    chain = (*_chain, (model, key))
    row = source.row("watchers", watcher_name(model, key))
    features = dict((row or {}).get("features") or {})
    if key == "_base":
        doc = {k: scope.types.decode(v) for k, v in like.items() if k not in NOT_INPUT}
        for fkey, fmodel in features.items():
            if fkey in like:
                doc[fkey] = upstream_output(scope, fmodel, fkey, like, chain, source)
        return doc
    if key in features:
        return upstream_output(scope, features[key], key, like, chain, source)
    return scope.types.decode(like[key])


def upstream_output(scope: Scope, model: str, key: str, like: Mapping, chain: tuple = (),
                    source: Source | None = None) -> Any:
    """``model``'s output on ``key`` of ``like``, as it would be stored and read back (encoded, then decoded)."""
    source = source or Direct(scope)
    value = query_input(scope, model, key, like, chain, source)
    output = source.model(model).predict([value])[0]
    row = source.row("models", model) or scope.metadata.get("models", model)  # (get: NotRegisteredError)
    if row.get("type"):
        out_type = scope.types.get(row["type"])
        stored = {CONTENT: {"bytes": out_type.encode(output), "type": row["type"]}}
    else:
        stored = scope.types.encode_many([output], path="outputs", mark=False)[0]
    return scope.types.decode(stored)


def encode_query(scope: Scope, model: str, key: str, like: Mapping, source: Source | None = None) -> Any:
    """The vector ``model`` gives the ``like`` document on ``key`` (upstream models applied first)."""
    source = source or Direct(scope)
    return source.model(model).predict([query_input(scope, model, key, like, source=source)])[0]
