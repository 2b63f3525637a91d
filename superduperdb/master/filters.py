"""Filter fields: scalar fields of each document held by a shard beside its vector, so that common filters
never leave the index.

``create_semantic_index(..., filter_fields=["lang", "year"])`` declares them. Each
shard keeps, per document it holds a vector of, the values of those fields as
stored in MongoDB (:class:`FilterFields`), read by the same reads that read its
vector (loads, index jobs, catch-up, the digest check after a restart) and saved in
its snapshot as plain data (BSON documents, with a checksum like every part).

A filter made only of equality, ``$eq``, ``$in``, ranges (``$gt``, ``$gte``, ``$lt``,
``$lte``), ``$exists``, ``$and`` and ``$or`` on filter fields (and ``_id``) is
:func:`answerable` by the shards: each evaluates it over the documents it holds,
with the embedded store's own machinery (its :class:`~superduperdb.store.embedded.indexes.FieldIndex`
narrows, mongomock's matcher decides, exactly as the embedded store answers a
query), and no ids travel from the store. Any other filter goes through the store.

>>> ff = FilterFields(["lang", "year"])
>>> ff.put("a", {"lang": "en", "year": 2020}); ff.put("b", {"lang": "fr", "year": 2021})
>>> answerable({"lang": "en", "year": {"$gte": 2020}}, ff.fields), answerable({"text": "x"}, ff.fields)
(True, False)
>>> ff.match({"$or": [{"lang": "fr"}, {"year": {"$lt": 2021}}]})
['a', 'b']
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from mongomock import filtering

from ..store.embedded.indexes import FieldIndex, candidates

#: The operators a filter answered in the index may use on a field.
FIELD_OPERATORS = frozenset({"$eq", "$in", "$gt", "$gte", "$lt", "$lte", "$exists"})


def _value_ok(value: Any) -> bool:
    """A value compared by a filter answered in the index: scalars only (no documents, arrays, regexes)."""
    return not isinstance(value, (Mapping, list, tuple, set)) and not hasattr(value, "pattern")


def answerable(filter: Any, fields: Iterable[str]) -> bool:
    """Whether ``filter`` uses only the filter ``fields`` (and ``_id``) with the operators the index answers.

    >>> answerable({"year": {"$in": [1, 2]}, "$and": [{"lang": {"$exists": True}}]}, ["lang", "year"])
    True
    >>> answerable({"lang": {"$regex": "e"}}, ["lang"]), answerable({"lang": ["en"]}, ["lang"])
    (False, False)
    """
    allowed = set(fields) | {"_id"}
    if not isinstance(filter, Mapping) or not filter:
        return False
    for key, condition in filter.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, list) or not condition \
                    or not all(answerable(part, allowed) for part in condition):
                return False
        elif key.startswith("$") or key not in allowed:
            return False
        elif isinstance(condition, Mapping):
            if not condition or not set(condition) <= FIELD_OPERATORS:
                return False
            for op, value in condition.items():
                if op == "$in":
                    if not isinstance(value, list) or not all(_value_ok(v) for v in value):
                        return False
                elif op == "$exists":
                    if not isinstance(value, bool):
                        return False
                elif not _value_ok(value):
                    return False
        elif not _value_ok(condition):
            return False
    return True


def projection(fields: Iterable[str]) -> dict:
    """The projection that reads the filter ``fields`` (to add to a read of vectors)."""
    return {f: 1 for f in fields}


def extract(doc: Mapping, fields: Iterable[str]) -> dict:
    """The part of ``doc`` (read with :func:`projection`) a filter over ``fields`` looks at."""
    tops = {f.split(".", 1)[0] for f in fields}
    return {k: doc[k] for k in tops if k in doc}


class FilterFields:
    """The filter-field values of the documents a shard holds, and filters evaluated over them.

    Parameters
    ----------
    fields : list of str
        The (possibly dotted) filter fields of the index.
    """

    def __init__(self, fields: Iterable[str]) -> None:
        self.fields = list(fields)
        self._docs: dict[Any, dict] = {}
        self._indexes = {f: FieldIndex(f) for f in self.fields}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._docs)

    def put(self, id: Any, values: Mapping) -> None:
        """Hold ``values`` (see :func:`extract`) for document ``id``, replacing what was held."""
        doc = {**values, "_id": id}
        with self._lock:
            self._docs[id] = doc
            for index in self._indexes.values():
                index.add(id, doc)

    def put_many(self, ids: Iterable[Any], values: Iterable[Mapping]) -> None:
        for i, v in zip(ids, values):
            self.put(i, v)

    def remove(self, ids: Iterable[Any]) -> None:
        with self._lock:
            for i in ids:
                if self._docs.pop(i, None) is not None:
                    for index in self._indexes.values():
                        index.remove(i)

    def get(self, id: Any) -> dict | None:
        """What is held for ``id`` (without ``_id``), or None."""
        doc = self._docs.get(id)
        return None if doc is None else {k: v for k, v in doc.items() if k != "_id"}

    def match(self, filter: Mapping) -> list:
        """The ids of the documents held that match ``filter`` (an :func:`answerable` one), in no set order."""
        with self._lock:
            docs = self._docs

            def by_id(condition: Any) -> set | None:
                if not isinstance(condition, Mapping):
                    return {condition} if _hashable(condition) and condition in docs else set()
                if set(condition) == {"$in"} and isinstance(condition["$in"], list) \
                        and all(_hashable(v) for v in condition["$in"]):
                    return {v for v in condition["$in"] if v in docs}
                return None

            keys = candidates(filter, by_id, self._indexes)
            pool = docs.keys() if keys is None else keys
            return [i for i in pool if i in docs and filtering.filter_applies(filter, docs[i])]


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
