"""What a write stores beyond what the caller gave: new documents' ``_id``, kept folds, and pinning.

Shared by both sides: the client's write door (:mod:`superduperdb.services.writes`)
and the workers that insert the partitions of a Dask DataFrame
(:func:`superduperdb.tasks.frames.insert_partition`) make new documents with
:func:`prepare_new`, so a rule about new documents is written here once and
holds wherever the documents are made.

* A new document gets an ``_id`` (on the caller's dict too, as pymongo does),
  and nothing else: writes add no ``_fold`` (not on inserts, upserts,
  ``bulk_write`` or ``from_dask``); documents get one when training first needs
  the split (:mod:`superduperdb.store.folds`).
* A replacement keeps the ``_fold`` of the document it replaces
  (:func:`kept_fold`), so a document given a fold keeps it for good (a
  validation document never becomes training data by being replaced).
* A single-document update or replacement with ``sort`` is pinned to the
  ``_id`` that ``sort`` picks (:func:`pin`), so the write, on any store, and
  the jobs it implies concern the same document (servers before MongoDB 8 and
  the stand-ins ignore or refuse ``sort`` on updates).
* :func:`with_id` makes a find-and-modify return the ``_id`` of the document it
  changed even when the caller's projection leaves it out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import ObjectId

from ..errors import QueryError
from .layout import FOLD


def prepare_new(document: Any, path: str = "document") -> dict:
    """Give a new document an ``_id`` (in place when it is a dict); refuse a non-document.

    No ``_fold``: a document gets one when training first needs the split
    (:mod:`superduperdb.store.folds`).

    Examples
    --------
    >>> doc = prepare_new({"x": 1})
    >>> sorted(doc)
    ['_id', 'x']
    """
    if not isinstance(document, Mapping):
        raise QueryError(f"{path} must be a dict, not a {type(document).__name__}.", argument=path)
    if isinstance(document, dict) and "_id" not in document:
        document["_id"] = ObjectId()
    return document


def kept_fold(raw: Any, filter: dict, replacement: dict, config: Any, sort: Any = None) -> dict:
    """``replacement`` with the ``_fold`` of the document it replaces, if that one has a fold.

    A replacement that sets ``_fold`` itself is kept as given; an upsert that
    inserts gets no fold (as any new document); ``data.assign_folds: false``
    leaves replacements as given.

    Examples
    --------
    >>> import mongomock
    >>> from superduperdb.config import resolve_config
    >>> docs = mongomock.MongoClient().db.docs
    >>> _ = docs.insert_many([{"_id": 1, "_fold": "valid"}, {"_id": 2}])
    >>> kept_fold(docs, {"_id": 1}, {"x": 1}, resolve_config({}))
    {'x': 1, '_fold': 'valid'}
    >>> kept_fold(docs, {"_id": 2}, {"x": 2}, resolve_config({}))
    {'x': 2}
    """
    if FOLD in replacement or not config.data.assign_folds:
        return replacement
    old = raw.find_one(filter, {FOLD: 1}, sort=sort)
    fold = old.get(FOLD) if old is not None else None
    return {**replacement, FOLD: fold} if fold is not None else replacement


def pin(raw: Any, filter: dict, sort: Any) -> dict:
    """``filter`` narrowed to the first document ``sort`` picks (unchanged when none matches).

    Examples
    --------
    >>> import mongomock
    >>> docs = mongomock.MongoClient().db.docs
    >>> _ = docs.insert_many([{"_id": i, "g": 1, "r": i} for i in range(3)])
    >>> pin(docs, {"g": 1}, [("r", -1)])
    {'$and': [{'g': 1}, {'_id': 2}]}
    """
    found = raw.find_one(filter, {"_id": 1}, sort=sort)
    if found is None:
        return filter
    return {"$and": [filter, {"_id": found["_id"]}]} if filter else {"_id": found["_id"]}


def with_id(projection: Any) -> tuple[Any, bool]:
    """``(projection that returns _id, whether the caller left _id out)``.

    >>> with_id({"_id": 0, "a": 1})
    ({'a': 1}, True)
    >>> with_id({"_id": False})
    (None, True)
    >>> with_id(["a"])
    (['a'], False)
    """
    if isinstance(projection, Mapping) and "_id" in projection and not projection["_id"]:
        rest = {k: v for k, v in projection.items() if k != "_id"}
        return (rest or None), True
    return projection, False


def id_of(filter: Any) -> Any:
    """The ``_id`` an equality filter pins (``{'_id': 5}``, ``{'_id': {'$eq': 5}}``), else None."""
    if not isinstance(filter, Mapping) or "_id" not in filter:
        return None
    value = filter["_id"]
    if isinstance(value, Mapping):
        keys = list(value)
        if keys == ["$eq"]:
            return value["$eq"]
        if any(str(k).startswith("$") for k in keys):
            return None
    return value
