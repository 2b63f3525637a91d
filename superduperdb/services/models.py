"""Registering, loading, applying and deleting models (client side).

A model row in ``<coll>._models``::

    {name, version, versions: [{version, artifact, created_at, metrics}],
     artifact, kind, class, method, batch_size, device, type}

The stored artifact is the :class:`~superduperdb.models.base.Model` wrapper
(object plus pre/post-processing), so a worker gets everything it needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AlreadyRegisteredError, InUseError, ModelError
from ..models.base import Model
from ..store.layout import MISSING, model_input
from ..store.metadata import utcnow
from ..store.models import load_model
from ..types.registry import drop_unreferenced

if TYPE_CHECKING:
    from .indexes import IndexService
    from .scope import Scope
    from .watchers import WatcherService


class ModelService:
    def __init__(self, scope: Scope, watchers: WatcherService, indexes: IndexService) -> None:
        self.scope = scope
        self.metadata = scope.metadata
        self.artifacts = scope.artifacts
        self.watchers = watchers
        self.indexes = indexes

    def check_new(self, name: str, object: Any, *, preprocess=None, postprocess=None, type: str | None = None,
                  batch_size: int = 32, device: Any = None, method: str | None = None) -> tuple[Model, dict]:
        """Validate a new model (nothing is stored); return the wrapper and its row (without artifact)."""
        if not isinstance(name, str) or not name or "." in name or "/" in name or name.startswith("$"):
            raise ModelError(f"Model names must be non-empty strings without '.', '/' or a leading '$', not {name!r}.")
        if self.metadata.exists("models", name):
            raise AlreadyRegisteredError("model", name)
        if type is not None:
            if not isinstance(type, str):
                raise ModelError(f"type must be the name of a type (a str), not {type!r}.", argument="type")
            self.scope.types.get(type)  # NotRegisteredError now, not on the worker
        model = Model(object, preprocess=preprocess, postprocess=postprocess, batch_size=batch_size,
                      device=device, method=method, name=name)
        description = model.describe()  # validates the object, batch_size, method, hooks
        return model, {"name": name, "version": 1, "type": type, **_plain(description)}

    def create(self, name: str, object: Any, *, preprocess=None, postprocess=None, type: str | None = None,
               batch_size: int = 32, device: Any = None, method: str | None = None,
               serializer: str | None = None) -> dict:
        model, row = self.check_new(name, object, preprocess=preprocess, postprocess=postprocess, type=type,
                                    batch_size=batch_size, device=device, method=method)
        return self.register(model, row, serializer)

    def register(self, model: Model, row: dict, serializer: str | None = None) -> dict:
        """Store a model checked by :meth:`check_new`: its artifact and its row, or neither."""
        ref = self.artifacts.put(model, serializer)
        row = {**row, "artifact": ref, "versions": [{"version": 1, "artifact": ref, "created_at": utcnow(), "metrics": {}}]}
        try:
            return self.metadata.insert("models", row)
        except BaseException:  # the row was not written (a single insert): the artifact goes too
            drop_unreferenced(self.metadata, self.artifacts, ref)
            raise

    def unregister(self, name: str) -> None:
        """Undo :meth:`register` (a later step of the same call failed): the row, and the artifact
        unless something else stores the same bytes."""
        row = self.metadata.find_one("models", name)
        self.metadata.delete("models", name)
        if row is not None:
            drop_unreferenced(self.metadata, self.artifacts, row["artifact"])

    def load(self, name: str, version: int | None = None) -> Model:
        return load_model(self.metadata, self.artifacts, name, version)

    def users(self, name: str) -> list[str]:
        users = [f"watcher {w['name']!r}" for w in self.metadata.list("watchers", {"model": name})]
        users += [f"watcher {w['name']!r} (features)" for w in self.metadata.list("watchers")
                  if name in (w.get("features") or {}).values()]
        users += [f"semantic index {s['name']!r}" for s in self.metadata.list("semantic_indexes") if name in s.get("models", [])]
        return users

    def delete(self, name: str, force: bool = False) -> None:
        """Delete a model. Refused while watchers or semantic indexes use it; ``force=True``
        deletes them too (with their outputs), so nothing serves what the model computed."""
        self.metadata.get("models", name)
        users = self.users(name)
        if users and not force:
            raise InUseError("model", name, users)
        for index in self.metadata.list("semantic_indexes"):
            if name in index.get("models", []):
                self.indexes.delete(index["name"], force=True)
        for w in self.metadata.list("watchers"):
            uses = w["model"] == name or name in (w.get("features") or {}).values()
            if uses and self.metadata.exists("watchers", w["name"]):
                self.watchers.delete(w["name"], force=True)
        self.metadata.delete("models", name)

    def apply(self, name: str, inputs: list, key: str | None = None) -> list:
        """The model's outputs on ``inputs``, or on each document's ``key`` (``'a.b'`` reads
        ``doc['a']['b']``, ``'_base'`` the whole document, as a watcher does)."""
        if isinstance(inputs, (str, bytes, Mapping)) or not isinstance(inputs, Iterable):
            raise ModelError(f"inputs must be a list of inputs (or of documents, with key=...), not "
                             f"{type(inputs).__name__}: use [x] for a single input.", model=name, argument="inputs")
        if key is not None and (not isinstance(key, str) or not key):
            raise ModelError(f"key must be a field name such as 'text' or 'a.b', not {key!r}.", model=name,
                             argument="key")
        model = self.load(name)
        inputs = list(inputs)
        if key is not None:
            values = []
            for i, doc in enumerate(inputs):
                if not isinstance(doc, Mapping):
                    values.append(doc)
                    continue
                value = model_input(self.scope.types.decode(dict(doc)), key, {})
                if value is MISSING:
                    raise ModelError(f"inputs[{i}] has no field {key!r} (documents: {list(doc)[:10]}).", model=name,
                                     argument="key", index=i)
                values.append(value)
            inputs = values
        return model.predict(inputs)


def _plain(description: dict) -> dict:
    return {k: v for k, v in description.items() if k != "name"}
