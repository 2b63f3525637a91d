"""Field indexes of the embedded store, and the planner that uses them.

A :class:`FieldIndex` maps the values of one (dotted) field to the keys of the
documents holding them, like a MongoDB single-field index: a document with an
array at the field is indexed under each element (a "multikey" index), and
numbers, strings and datetimes are also kept in sorted order for range queries.

:func:`candidates` turns a filter into the keys of the documents that *may*
match, using the ``_id`` map and the field indexes, or returns None when no
index helps (the caller then scans). Candidates are always a superset of the
matches: the caller still applies the whole filter to each of them, so an index
can only make a query faster, never change its answer.
"""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from bson import Decimal128, ObjectId
from sortedcontainers import SortedList

# Values an equality lookup may use: hashable, compared by value in MongoDB and Python alike
# (regular expressions, documents, arrays, None and Decimal128 fall back to a scan).
LOOKUP_TYPES = (str, int, float, ObjectId, datetime.datetime, bytes, uuid.UUID)
RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
# MongoDB compares values of the same "type bracket" only: a range over numbers never
# matches a string. One sorted list per bracket.
_NUMBER, _STRING, _DATE = "number", "string", "date"

# Above this share of the collection an index lookup costs more than the scan it saves.
SCAN_SHARE = 0.3


def lookup_value(value: Any) -> bool:
    """Whether ``value`` may be looked up in an index (see :data:`LOOKUP_TYPES`)."""
    if isinstance(value, float) and math.isnan(value):
        return False
    return isinstance(value, LOOKUP_TYPES)


def _bracket(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else _NUMBER
    if isinstance(value, str):
        return _STRING
    if isinstance(value, datetime.datetime):
        return _DATE
    return None


def values_at(doc: Mapping, parts: list[str]) -> tuple[list[Any], bool]:
    """The indexable values of the field ``parts`` in ``doc``, as MongoDB indexes them.

    Returns ``(values, multikey)``: arrays met on the way or at the end are
    traversed (``multikey`` is then True); values that cannot be looked up
    (sub-documents, None, ...) are left out.
    """
    current: list[Any] = [doc]
    multikey = False
    for part in parts:
        following: list[Any] = []
        for value in current:
            if isinstance(value, Mapping):
                if part in value:
                    following.append(value[part])
            elif isinstance(value, list):
                multikey = True
                if part.isdigit() and int(part) < len(value):
                    following.append(value[int(part)])
                following.extend(item[part] for item in value if isinstance(item, Mapping) and part in item)
        current = following
    values: list[Any] = []
    for value in current:
        if isinstance(value, list):
            multikey = True
            values.extend(value)
        else:
            values.append(value)
    return [_normal(v) for v in values if lookup_value(v) or isinstance(v, Decimal128)], multikey


def _normal(value: Any) -> Any:
    # A Decimal128 equals the number it holds in MongoDB: index it under that number.
    if isinstance(value, Decimal128):
        number = value.to_decimal()
        return int(number) if number == number.to_integral_value() else float(number)
    return value


class FieldIndex:
    """The values of one field mapped to the keys of the documents that hold them.

    Parameters
    ----------
    field : str
        The (dotted) field, e.g. ``"lang"`` or ``"meta.year"``.

    Examples
    --------
    >>> index = FieldIndex("lang")
    >>> index.add("a", {"lang": "en"}); index.add("b", {"lang": ["en", "fr"]})
    >>> sorted(index.lookup("en"))
    ['a', 'b']
    >>> sorted(index.lookup({"$in": ["fr"]}))
    ['b']
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self._parts = field.split(".")
        self._postings: dict[Any, set] = {}
        self._sorted: dict[str, SortedList] = {}
        self._entries: dict[Any, list[Any]] = {}
        self.multikey = False

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: Any, doc: Mapping) -> None:
        """Index ``doc`` (stored under ``key``), replacing what was indexed for ``key`` before."""
        self.remove(key)
        values, multikey = values_at(doc, self._parts)
        self.multikey = self.multikey or multikey
        if not values:
            return
        values = list(dict.fromkeys(values))
        self._entries[key] = values
        for value in values:
            keys = self._postings.get(value)
            if keys is None:
                keys = self._postings[value] = set()
            keys.add(key)
            # (True == 1 in Python, and mongomock matches them alike: their keys are shared, so a
            # number may arrive at a key a boolean made)
            bracket = _bracket(value)
            if bracket is not None:
                ordered = self._sorted.setdefault(bracket, SortedList())
                if value not in ordered:
                    ordered.add(value)

    def remove(self, key: Any) -> None:
        """Forget what was indexed for ``key`` (no-op if nothing was)."""
        for value in self._entries.pop(key, ()):
            keys = self._postings.get(value)
            if keys is None:
                continue
            keys.discard(key)
            if not keys:
                del self._postings[value]
                bracket = _bracket(value)
                if bracket is not None:
                    self._sorted[bracket].discard(value)

    def lookup(self, condition: Any) -> set | None:
        """Keys of the documents that may satisfy ``{field: condition}``; None if this index cannot tell."""
        if not isinstance(condition, Mapping):
            return set(self._postings.get(_normal(condition), ())) if lookup_value(condition) else None
        found: set | None = None
        if "$eq" in condition:
            found = self.lookup(condition["$eq"])
        elif "$in" in condition:
            found = self._any_of(condition["$in"])
        ranges = {op: condition[op] for op in RANGE_OPERATORS if op in condition}
        if found is None and ranges:
            found = self._range(ranges)
        return found

    def _any_of(self, values: Any) -> set | None:
        if not isinstance(values, (list, tuple)) or not all(lookup_value(v) for v in values):
            return None
        found: set = set()
        for value in values:
            found.update(self._postings.get(_normal(value), ()))
        return found

    def _range(self, ranges: dict[str, Any]) -> set | None:
        brackets = {_bracket(bound) for bound in ranges.values()}
        if len(brackets) != 1 or None in brackets:
            return None
        values = self._sorted.get(brackets.pop())
        if values is None:
            return set()
        if not self.multikey:
            # One value per document: the conditions hold together on it.
            return self._keys(_irange(values, ranges))
        # An array satisfies each condition through any of its elements (maybe different ones).
        found: set | None = None
        for op, bound in ranges.items():
            keys = self._keys(_irange(values, {op: bound}))
            found = keys if found is None else found & keys
        return found

    def _keys(self, values: Iterable[Any]) -> set:
        found: set = set()
        for value in values:
            found.update(self._postings.get(value, ()))
        return found


def _irange(values: SortedList, ranges: dict[str, Any]) -> Iterator[Any]:
    low = high = None
    inclusive = [True, True]
    if "$gt" in ranges:
        low, inclusive[0] = ranges["$gt"], False
    if "$gte" in ranges and (low is None or ranges["$gte"] > low):
        low, inclusive[0] = ranges["$gte"], True
    if "$lt" in ranges:
        high, inclusive[1] = ranges["$lt"], False
    if "$lte" in ranges and (high is None or ranges["$lte"] < high):
        high, inclusive[1] = ranges["$lte"], True
    return values.irange(low, high, inclusive=tuple(inclusive))


def conditions(filter: Mapping) -> Iterator[tuple[str, Any]]:
    """The ``(field, condition)`` pairs that must all hold: top level and inside ``$and``."""
    for field, condition in filter.items():
        if field == "$and" and isinstance(condition, list):
            for part in condition:
                if isinstance(part, Mapping):
                    yield from conditions(part)
        elif not field.startswith("$"):
            yield field, condition


def candidates(filter: Any, ids: Callable[[Any], set | None], indexes: Mapping[str, FieldIndex],
               size: int) -> set | None:
    """Keys of the documents that may match ``filter``; None when scanning is as good.

    Parameters
    ----------
    filter : Mapping
        A MongoDB filter.
    ids : callable
        ``ids(condition)``: the keys an ``_id`` condition selects, or None.
    indexes : mapping of str to FieldIndex
        The collection's field indexes.
    size : int
        The number of documents in the collection.
    """
    if not isinstance(filter, Mapping) or not filter:
        return None
    found: set | None = None
    for field, condition in conditions(filter):
        if field == "_id":
            keys = ids(condition)
        elif field in indexes:
            keys = indexes[field].lookup(condition)
        else:
            continue
        if keys is None:
            continue
        found = keys if found is None else found & keys
        if not found:
            return found
    if found is not None and len(found) > SCAN_SHARE * size:
        return None
    return found
