"""The types a collection knows: the built-ins plus those registered by users.

User types are stored as artifacts (``<coll>._types`` rows point at them) and
loaded lazily. A type that stored values in the collection is marked
``in_use``, so that deleting it is refused unless forced.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import AlreadyRegisteredError, DecodingError, InUseError, NotRegisteredError, SuperDuperError
from .builtin import BUILTIN_TYPES
from .encoding import Encoder, decode, has_content

REFRESH_SECONDS = 1.0


def check_type_object(name: str, obj: Any) -> None:
    missing = [a for a in ("encode", "decode") if not callable(getattr(obj, a, None))]
    if missing or not isinstance(getattr(obj, "types", ()), tuple):
        raise SuperDuperError(
            f"Cannot register {obj!r} as type {name!r}: a type needs methods encode(x) -> bytes and "
            "decode(bytes) -> x, and a tuple attribute 'types' of the Python classes it stores"
            + (f" (missing: {', '.join(missing)})." if missing else "."),
            name=name,
        )


class TypeRegistry:
    """Built-in and user types of one collection.

    Parameters
    ----------
    metadata : MetadataStore
    artifacts : ArtifactStore
    pickle_fallback : bool
        Pickle values no type claims instead of refusing them.
    """

    def __init__(self, metadata: Any, artifacts: Any, *, pickle_fallback: bool = False) -> None:
        self.metadata = metadata
        self.artifacts = artifacts
        self.pickle_fallback = pickle_fallback
        self._user: dict[str, Any] = {}
        self._loaded_at = float("-inf")
        self._marked: set[str] = set()
        self._lock = threading.Lock()

    # -- registration ------------------------------------------------------------
    def create(self, name: str, obj: Any, serializer: str | None = None) -> dict:
        if name in BUILTIN_TYPES:
            raise AlreadyRegisteredError("type", name)
        check_type_object(name, obj)
        if self.metadata.exists("types", name):
            raise AlreadyRegisteredError("type", name)
        ref = self.artifacts.put(obj, serializer)
        classes = [f"{c.__module__}.{c.__qualname__}" for c in obj.types]
        row = self.metadata.insert("types", {"name": name, "artifact": ref, "classes": classes, "in_use": False})
        with self._lock:
            self._user[name] = obj
        return row

    def names(self) -> list[str]:
        return sorted(set(BUILTIN_TYPES) | set(self.metadata.names("types")))

    def list(self) -> list[dict]:
        builtin = [{"name": n, "builtin": True, "class": type(t).__name__} for n, t in BUILTIN_TYPES.items()]
        return builtin + [dict(r, builtin=False) for r in self.metadata.list("types")]

    def delete(self, name: str, *, force: bool = False, users: list[str] = ()) -> None:
        if name in BUILTIN_TYPES:
            raise SuperDuperError(f"{name!r} is a built-in type and cannot be deleted.", name=name)
        row = self.metadata.get("types", name)
        users = list(users)
        if row.get("in_use"):
            users.append(f"documents in {self.metadata.collection!r}")
        if users and not force:
            raise InUseError("type", name, users)
        self.metadata.delete("types", name)
        with self._lock:
            self._user.pop(name, None)
            self._marked.discard(name)

    def forget(self) -> None:
        """Drop everything cached (the collection and its metadata were dropped)."""
        with self._lock:
            self._user = {}
            self._marked = set()
            self._loaded_at = float("-inf")

    # -- lookup -----------------------------------------------------------------
    def _refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._loaded_at < REFRESH_SECONDS:
            return
        rows = {r["name"]: r for r in self.metadata.list("types")}
        loaded = {}
        for name, row in rows.items():
            loaded[name] = self._user.get(name) or self.artifacts.get(row["artifact"])
        with self._lock:
            self._user = loaded
            self._loaded_at = time.monotonic()

    def get(self, name: str) -> Any:
        if name == "pickle" and not self.pickle_fallback:
            raise DecodingError(
                "This document holds a pickled value; unpickling runs code, so it is refused unless "
                "types.pickle_fallback is on. Connect with config={'types.pickle_fallback': True} if you "
                "trust the database, or read it undecoded with find(..., raw=True).",
                type="pickle",
            )
        if name in BUILTIN_TYPES:
            return BUILTIN_TYPES[name]
        if name not in self._user:
            self._refresh(force=True)
        if name not in self._user:
            raise NotRegisteredError("type", name, self.names(), hint="Register it with create_type(name, obj).")
        return self._user[name]

    def type_for(self, value: Any) -> tuple[str, Any] | None:
        for name, type_ in (*self._user.items(), *BUILTIN_TYPES.items()):
            classes = type_.types
            if classes and isinstance(value, classes):
                return name, type_
        return None

    # -- documents --------------------------------------------------------------
    def encode(self, value: Any, path: str = "", *, mark: bool = True) -> Any:
        """Encode one document, filter or update (a copy; the input is untouched).

        ``mark=False`` for values that are not stored (a query's filter), so
        that their types are not recorded as in use.
        """
        return self.encode_many([value], path, paths=[path], mark=mark)[0]

    def encode_many(self, docs: list, path: str = "documents", paths: list[str] | None = None,
                    *, mark: bool = True) -> list:
        """Encode all of ``docs``, or raise before anything is marked as used."""
        self._refresh()
        fallback = ("pickle", BUILTIN_TYPES["pickle"]) if self.pickle_fallback else None
        encoder = Encoder(self.type_for, fallback)
        paths = paths or [f"{path}[{i}]" for i in range(len(docs))]
        out = [encoder.encode(d, p) for d, p in zip(docs, paths)]
        if mark:
            self._mark_used(encoder.used)
        return out

    def decode(self, doc: Any) -> Any:
        if not has_content(doc):
            return doc
        return decode(doc, lambda name, data: self.get(name).decode(data))

    def _mark_used(self, names: set[str]) -> None:
        for name in names - self._marked:
            if name not in BUILTIN_TYPES:
                self.metadata.update("types", name, {"$set": {"in_use": True}})
            self._marked.add(name)
