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

import datetime
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from bson import ObjectId
from mongomock import filtering

from ..store.embedded.indexes import RANGE_OPERATORS, FieldIndex, candidates, values_at

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


def _plain(value: Any) -> bool:
    """A value whose field-index lookups are exact (MongoDB's equality and order agree with Python's)."""
    if isinstance(value, bool) or (isinstance(value, float) and value != value):
        return False
    return isinstance(value, (str, int, float, datetime.datetime, ObjectId))


def _exact_conditions(filter: Mapping, indexes: Mapping[str, FieldIndex]) -> bool:
    """Whether ``filter`` is a conjunction (top level and ``$and``) of equality, ``$eq``, ``$in`` and ranges on
    indexed fields with plain values, whose field-index lookups are exact for documents with plain values."""
    for key, condition in filter.items():
        if key == "$and":
            if not all(isinstance(c, Mapping) and _exact_conditions(c, indexes) for c in condition):
                return False
            continue
        if key not in indexes:
            return False
        if not isinstance(condition, Mapping):
            if not _plain(condition):
                return False
            continue
        ops = set(condition)
        if ops == {"$eq"}:
            ok = _plain(condition["$eq"])
        elif ops == {"$in"}:
            ok = all(_plain(v) for v in condition["$in"])
        elif ops and ops <= set(RANGE_OPERATORS):
            bounds = list(condition.values())
            ok = all(_plain(v) for v in bounds) and len({_bracket(v) for v in bounds}) == 1
        else:
            ok = False
        if not ok:
            return False
    return True


def _bracket(value: Any) -> str:
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


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
        self._parts = {f: f.split(".") for f in self.fields}
        # Per field, the documents holding a value that is not plain (booleans, NaN, null, documents ...):
        # the only ones a field-index lookup may name wrongly, so the only ones checked with the matcher
        # when the filter is a conjunction of exact lookups.
        self._odd: dict[str, set] = {f: set() for f in self.fields}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._docs)

    def put(self, id: Any, values: Mapping) -> None:
        """Hold ``values`` (see :func:`extract`) for document ``id``, replacing what was held."""
        doc = {**values, "_id": id}
        with self._lock:
            self._docs[id] = doc
            for field, index in self._indexes.items():
                index.add(id, doc)
                values, _ = values_at(doc, self._parts[field])
                raw = _raw_values(doc, self._parts[field])
                if len(values) != len(raw) or not all(_plain(v) for v in raw):
                    self._odd[field].add(id)
                else:
                    self._odd[field].discard(id)

    def put_many(self, ids: Iterable[Any], values: Iterable[Mapping]) -> None:
        for i, v in zip(ids, values):
            self.put(i, v)

    def remove(self, ids: Iterable[Any]) -> None:
        with self._lock:
            for i in ids:
                if self._docs.pop(i, None) is not None:
                    for field, index in self._indexes.items():
                        index.remove(i)
                        self._odd[field].discard(i)

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
            if keys is None:
                return [i for i, doc in docs.items() if filtering.filter_applies(filter, doc)]
            if "_id" not in filter and _exact_conditions(filter, self._indexes):
                odd = set().union(*(self._odd[f] for f in _fields_of(filter)))
                return [i for i in keys if i not in odd or filtering.filter_applies(filter, docs[i])]
            return [i for i in keys if i in docs and filtering.filter_applies(filter, docs[i])]


def _fields_of(filter: Mapping) -> set[str]:
    out: set[str] = set()
    for key, condition in filter.items():
        if key == "$and":
            for c in condition:
                out |= _fields_of(c)
        else:
            out.add(key)
    return out


def _raw_values(doc: Any, parts: list[str]) -> list:
    """Every value at the field ``parts`` in ``doc`` (array elements included), unindexable ones too."""
    current = [doc]
    for part in parts:
        following = []
        for value in current:
            if isinstance(value, Mapping):
                if part in value:
                    following.append(value[part])
            elif isinstance(value, list):
                following.extend(item[part] for item in value if isinstance(item, Mapping) and part in item)
                if part.isdigit() and int(part) < len(value):
                    following.append(value[int(part)])
        current = following
    out = []
    for value in current:
        out.extend(value if isinstance(value, list) else [value])
    return out


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
