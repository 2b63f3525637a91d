"""What a write stores beyond what the caller gave: the rules for new documents, and pinning.

Shared by both sides: the client's write door (:mod:`superduperdb.services.writes`)
and the workers that insert the partitions of a Dask DataFrame
(:func:`superduperdb.tasks.frames.insert_partition`) make new documents with
:func:`prepare_new`, so a rule about new documents is written here once and
holds wherever the documents are made.

* A new document gets an ``_id`` (on the caller's dict too, as pymongo does)
  and a ``_fold`` (``'train'`` or ``'valid'``, the original SuperDuperDB's
  split; ``data.assign_folds: false`` turns it off). An upsert gets its fold
  through ``$setOnInsert`` (:func:`upsert_fold`); a replacement keeps the
  replaced document's (:func:`kept_fold`).
* A single-document update or replacement with ``sort`` is pinned to the
  ``_id`` that ``sort`` picks (:func:`pin`), so the write, on any store, and
  the jobs it implies concern the same document (servers before MongoDB 8 and
  the stand-ins ignore or refuse ``sort`` on updates).
* :func:`with_id` makes a find-and-modify return the ``_id`` of the document it
  changed even when the caller's projection leaves it out.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from bson import ObjectId

from ..errors import QueryError
from .layout import FOLD


def new_fold(config: Any) -> str | None:
    """``'train'`` or ``'valid'`` for a new document under ``config`` (None: folds are off)."""
    data = config.data
    if not data.assign_folds:
        return None
    return "valid" if random.random() < data.valid_probability else "train"


def prepare_new(document: Any, config: Any, path: str = "document") -> dict:
    """Give a new document an ``_id`` and a ``_fold`` (in place when it is a dict); refuse a non-document.

    Examples
    --------
    >>> from superduperdb.config import resolve_config
    >>> doc = prepare_new({"x": 1}, resolve_config({"data": {"assign_folds": False}}))
    >>> sorted(doc)
    ['_id', 'x']
    """
    if not isinstance(document, Mapping):
        raise QueryError(f"{path} must be a dict, not a {type(document).__name__}.", argument=path)
    if isinstance(document, dict):
        if "_id" not in document:
            document["_id"] = ObjectId()
        if FOLD not in document and (fold := new_fold(config)) is not None:
            document[FOLD] = fold
    return document


def upsert_fold(update: Any, changed: set[str] | None, config: Any) -> Any:
    """An operator ``update`` that gives the document it may insert a ``_fold`` (``$setOnInsert``).

    ``changed``: the top-level fields the update sets (None: not an operator
    update, left as it is); an update that sets ``_fold`` itself is kept.
    """
    if changed is None or FOLD in changed or (fold := new_fold(config)) is None:
        return update
    on_insert = dict(update.get("$setOnInsert") or {})
    on_insert.setdefault(FOLD, fold)
    return {**update, "$setOnInsert": on_insert}


def kept_fold(raw: Any, filter: dict, replacement: dict, upsert: bool, config: Any, sort: Any = None) -> dict:
    """``replacement`` with the ``_fold`` of the document it replaces (a new one if it inserts one)."""
    if FOLD in replacement or not config.data.assign_folds:
        return replacement
    old = raw.find_one(filter, {FOLD: 1}, sort=sort)
    fold = old.get(FOLD) if old is not None else (new_fold(config) if upsert else None)
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
