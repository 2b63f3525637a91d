"""Custom similarity measures (client side): ``create_measure``, ``list_measures``, ``delete_measure``.

A measure is a callable ``measure(Q, X) -> scores``: ``Q`` of shape ``(n, d)``
and ``X`` of shape ``(m, d)`` (float32 numpy arrays), scores of shape
``(n, m)``, higher meaning more similar. Rows in ``<coll>._measures``:
``{name, artifact, class}``; the callable is an artifact in GridFS, loaded by
the master when an index that uses it loads (see
:mod:`superduperdb.store.measures`). Built-ins (``cosine``, ``dot``, ``l2``)
need no registration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import AlreadyRegisteredError, InUseError, SemanticIndexError
from ..index.measures import MEASURES, BuiltinMeasure
from ..store.measures import load_measure

if TYPE_CHECKING:
    from .indexes import IndexService
    from .scope import Scope


class MeasureService:
    def __init__(self, scope: Scope, indexes: IndexService) -> None:
        self.scope = scope
        self.metadata = scope.metadata
        self.indexes = indexes

    def create(self, name: str, obj: Any, serializer: str | None = None) -> dict:
        if not isinstance(name, str) or not name or "." in name or "/" in name or name.startswith("$"):
            raise SemanticIndexError(f"Measure names must be non-empty strings without '.', '/' or a leading '$', "
                                     f"not {name!r}.")
        if name in MEASURES:
            raise SemanticIndexError(f"{name!r} is a built-in measure; choose another name.")
        if not callable(obj):
            raise SemanticIndexError(f"A measure must be callable as measure(Q, X) -> (n, m) similarities, not a "
                                     f"{type(obj).__name__}.")
        if self.metadata.exists("measures", name):
            raise AlreadyRegisteredError("measure", name)
        from ..models.base import class_path

        ref = self.scope.artifacts.put(obj, serializer, name=f"measures/{name}")
        return self.metadata.insert("measures", {"name": name, "artifact": ref, "class": class_path(obj)})

    def names(self) -> list[str]:
        return sorted(set(MEASURES) | set(self.metadata.names("measures")))

    def load(self, name: str) -> Any:
        """The callable of ``name`` (a :class:`BuiltinMeasure` for the built-ins)."""
        measure = load_measure(self.metadata, self.scope.artifacts, name)
        return BuiltinMeasure(measure) if isinstance(measure, str) else measure

    def check(self, name: Any) -> str:
        """``name`` if it is a built-in or registered measure, else a clear error."""
        if isinstance(name, str) and (name in MEASURES or self.metadata.exists("measures", name)):
            return name
        from ..errors import unknown_name

        raise SemanticIndexError(unknown_name("measure", name, self.names(),
                                              "Register a custom one with create_measure(name, callable)."),
                                 measure=name, valid=self.names())

    def delete(self, name: str, force: bool = False) -> None:
        if name in MEASURES:
            raise SemanticIndexError(f"{name!r} is a built-in measure; it cannot be deleted.")
        self.metadata.get("measures", name)
        users = self.metadata.names("semantic_indexes", {"measure": name})
        if users and not force:
            raise InUseError("measure", name, [f"semantic index {u!r}" for u in users])
        for index in users:
            self.indexes.delete(index, force=True)
        self.metadata.delete("measures", name)
