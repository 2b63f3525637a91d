"""Registering, loading, applying and deleting models (client side).

A model row in ``<coll>._models``::

    {name, version, versions: [{version, artifact, created_at, metrics}],
     artifact, kind, class, method, batch_size, device, type}

The stored artifact is the :class:`~superduperdb.models.base.Model` wrapper
(object plus pre/post-processing), so a worker gets everything it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import AlreadyRegisteredError, InUseError, ModelError
from ..models.base import Model
from ..models.resources import model_resources
from ..store.metadata import utcnow
from ..store.models import load_model

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

    def create(self, name: str, object: Any, *, preprocess=None, postprocess=None, type: str | None = None,
               batch_size: int = 32, device: Any = None, method: str | None = None,
               serializer: str | None = None, resources: dict | None = None) -> dict:
        if not isinstance(name, str) or not name or "." in name or "/" in name or name.startswith("$"):
            raise ModelError(f"Model names must be non-empty strings without '.', '/' or a leading '$', not {name!r}.")
        if self.metadata.exists("models", name):
            raise AlreadyRegisteredError("model", name)
        if type is not None:
            self.scope.types.get(type)  # NotRegisteredError now, not on the worker
        requests = model_resources(object, device, resources)  # ModelError now, before anything is stored
        model = Model(object, preprocess=preprocess, postprocess=postprocess, batch_size=batch_size,
                      device=device, method=method, name=name)
        description = model.describe()  # validates the object (kind, method)
        ref = self.artifacts.put(model, serializer)
        row = {"name": name, "version": 1, "artifact": ref, "type": type, **_plain(description),
               "versions": [{"version": 1, "artifact": ref, "created_at": utcnow(), "metrics": {}}]}
        if requests:
            row["resources"] = requests
        return self.metadata.insert("models", row)

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
        model = self.load(name)
        if key is not None:
            inputs = [self.scope.types.decode(d)[key] if isinstance(d, dict) else d for d in inputs]
        return model.predict(list(inputs))


def _plain(description: dict) -> dict:
    return {k: v for k, v in description.items() if k != "name"}
