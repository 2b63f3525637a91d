"""The types a collection knows: the built-ins plus those registered by users.

User types are stored as artifacts (``<coll>._types`` rows point at them) and
loaded lazily. A type that stored values in the collection is marked
``in_use``, so that deleting it is refused unless forced.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bson.binary import Binary

from ..errors import (
    AlreadyRegisteredError,
    DecodingError,
    InUseError,
    NotRegisteredError,
    SuperDuperError,
    UnregisteredTypeError,
)
from .builtin import BUILTIN_TYPES
from .encoding import CONTENT, Encoder, decode, has_content

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
        if not isinstance(name, str) or not name or "." in name or name.startswith("$"):
            raise SuperDuperError(f"Type names must be non-empty strings without '.' or a leading '$', not {name!r}.",
                                  name=name)
        if name in BUILTIN_TYPES:
            raise AlreadyRegisteredError("type", name)
        check_type_object(name, obj)
        if not all(isinstance(c, type) for c in obj.types):
            raise SuperDuperError(f"The 'types' of type {name!r} must be a tuple of classes, not {obj.types!r}.",
                                  name=name)
        if self.metadata.exists("types", name):
            raise AlreadyRegisteredError("type", name)
        ref = self.artifacts.put(obj, serializer, name=f"types/{name}")
        classes = [f"{c.__module__}.{c.__qualname__}" for c in obj.types]
        try:
            row = self.metadata.insert("types", {"name": name, "artifact": ref, "classes": classes, "in_use": False})
        except BaseException:  # the row was not written: neither is the artifact
            drop_unreferenced(self.metadata, self.artifacts, ref)
            raise
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
            loaded[name] = self._user.get(name) or self.artifacts.get(row["artifact"], (f"types/{name}", None))
        with self._lock:
            self._user = loaded
            self._loaded_at = time.monotonic()

    def get(self, name: str, *, decoding: bool = False) -> Any:
        """The type object called ``name`` (``decoding``: an unknown name raises
        :class:`UnregisteredTypeError`, which is also a :class:`DecodingError`)."""
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
            error = UnregisteredTypeError if decoding else NotRegisteredError
            raise error("type", name, self.names())
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

    def decode(self, doc: Any, errors: str = "raise") -> Any:
        """A copy of ``doc`` with its stored typed values decoded.

        Parameters
        ----------
        doc : Any
            A document as stored (or any value read from the collection).
        errors : {'raise', 'raw'}
            A value that cannot be decoded raises :class:`DecodingError` (naming the
            document's ``_id`` and the field), or, with ``'raw'``, is left as stored
            (``{'_content': {...}}``) while the other fields are decoded.

        Examples
        --------
        >>> registry.decode({"_id": 1, "x": {"_content": {"bytes": b"?", "type": "array"}}})   # doctest: +SKIP
        Traceback (most recent call last):
        DecodingError: Cannot decode the 'array' value at field 'x' of the document with _id 1 ...
        """
        if not has_content(doc):
            return doc
        document_id = doc.get("_id") if isinstance(doc, dict) else None

        def decode_one(name: str, data: bytes, path: str) -> Any:
            try:
                return self.get(name, decoding=True).decode(data)
            except Exception as exc:
                if errors == "raw":
                    return {CONTENT: {"bytes": Binary(data), "type": name}}
                raise decoding_error(exc, name, path, document_id) from exc

        return decode(doc, decode_one)

    def _mark_used(self, names: set[str]) -> None:
        for name in names - self._marked:
            if name not in BUILTIN_TYPES:
                self.metadata.update("types", name, {"$set": {"in_use": True}})
            self._marked.add(name)


def decoding_error(exc: Exception, type_name: str, field: str, document_id: Any) -> DecodingError:
    """A :class:`DecodingError` (``exc`` itself when it is one) naming the document and the field."""
    where = f"field {field or '(top level)'!r}" + (f" of the document with _id {document_id!r}" if document_id is not None else "")
    hint = (" Read past it with find(..., decode_errors='skip') (leaves the document out) or 'raw' (leaves the "
            "value as stored); find_one({'_id': ...}, raw=True) shows it as stored.")
    attrs = {"document_id": document_id, "field": field, "type": type_name}
    if isinstance(exc, DecodingError):
        if "field" not in exc.__dict__ and exc.args:
            exc.args = (f"{exc.args[0]} (At {where}.){hint}", *exc.args[1:])
        exc.__dict__.update(attrs)
        return exc
    return DecodingError(
        f"Cannot decode the {type_name!r} value at {where}: {type(exc).__name__}: {exc}. The stored bytes are "
        f"not what type {type_name!r} wrote (corrupted, or written by another program).{hint}", **attrs)


#: The metadata kinds whose rows point at artifacts.
ARTIFACT_KINDS = ("models", "types", "metrics", "losses", "splitters", "measures", "preprocessors", "forwards",
                  "postprocessors", "learning_tasks")
# Where a row keeps the hash of an artifact it uses: its own, its versions', and the parts of a
# composite model (models.composite) or a learning task's trainer.
ARTIFACT_HASH_PATHS = ("artifact.hash", "versions.artifact.hash", "artifact.forward.hash", "artifact.preprocess.hash",
                       "artifact.postprocess.hash", "versions.artifact.forward.hash",
                       "versions.artifact.preprocess.hash", "versions.artifact.postprocess.hash", "trainer.hash",
                       "objective.hash")


def drop_unreferenced(metadata: Any, artifacts: Any, ref: Any) -> None:
    """Delete the artifact ``ref`` unless a registration still points at its bytes (artifacts are
    shared by content: two registrations of the same bytes store them once). Used to undo a
    registration whose row could not be written."""
    digest = ref.get("hash") if isinstance(ref, dict) else None
    if not digest:
        return
    query = {"$or": [{path: digest} for path in ARTIFACT_HASH_PATHS]}
    if any(metadata.table(kind).count_documents(query, limit=1) for kind in ARTIFACT_KINDS):
        return
    artifacts.delete(digest)
