"""Which watchers a write concerns: the fast path's reading of updates.

The planner looks at an update's operators, not at the documents: a watcher
is concerned when the update changes a field it reads, which is its key and
every field its filter reads (changing only the filter's field can add or
remove the watcher's outputs). Where the planner cannot tell (a pipeline
update, a replacement, a filter with ``$where``/``$expr``/``$text``) it
concerns every watcher; the ``model`` jobs then settle each document against
its current content (compute, keep, or remove the output), and the
reconciler catches what no write path saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..store.layout import DERIVED
from ..store.watchers import load_filter

ANY = "*"
_LOGICAL = ("$and", "$or", "$nor")


@dataclass
class WritePlan:
    """The documents a write touches and the watchers (with those downstream) it concerns."""

    ids: list
    watchers: set[str] = field(default_factory=set)
    download: bool = False
    indexes: set[str] = field(default_factory=set)  # semantic indexes whose filter fields it changes


def indexes_touched(rows: list[dict], update: Any) -> set[str]:
    """Names of the semantic indexes (``rows``) whose filter fields an update changes (every index with
    filter fields when the update cannot be read): their shards re-read those documents.

    >>> indexes_touched([{"name": "v", "filter_fields": ["meta.lang"]}], {"$set": {"meta": {}}})
    {'v'}
    """
    rows = [r for r in rows if r.get("filter_fields")]
    if not rows:
        return set()
    keys = changed_keys(update)
    if keys is None:
        return {r["name"] for r in rows}
    return {r["name"] for r in rows if keys & {f.split(".")[0] for f in r["filter_fields"]}}


def changed_keys(update: Any) -> set[str] | None:
    """Top-level fields an operator update changes (None: unknown, e.g. a pipeline or a replacement).

    ``$rename`` changes both the old and the new field.

    Examples
    --------
    >>> sorted(changed_keys({"$set": {"a.b": 1}, "$rename": {"c": "d"}}))
    ['a', 'c', 'd']
    """
    if not isinstance(update, Mapping) or not update or not all(str(k).startswith("$") for k in update):
        return None
    keys: set[str] = set()
    for op, fields in update.items():
        if not isinstance(fields, Mapping):
            return None
        keys.update(str(k).split(".")[0] for k in fields)
        if op == "$rename":
            keys.update(str(v).split(".")[0] for v in fields.values())
    return keys


def filter_fields(filter: Any) -> set[str] | None:
    """Top-level fields a MongoDB filter reads (None: cannot tell).

    Examples
    --------
    >>> sorted(filter_fields({"a": 1, "$or": [{"b.c": 2}, {"d": {"$gt": 1}}]}))
    ['a', 'b', 'd']
    >>> filter_fields({"$where": "this.a > 1"}) is None
    True
    """
    if not isinstance(filter, Mapping):
        return None
    fields: set[str] = set()
    for key, value in filter.items():
        key = str(key)
        if key in _LOGICAL:
            if not isinstance(value, list):
                return None
            for part in value:
                inner = filter_fields(part)
                if inner is None:
                    return None
                fields |= inner
        elif key.startswith("$"):
            return None
        else:
            fields.add(key.split(".")[0])
    return fields


def reads(row: Mapping) -> set[str]:
    """Top-level fields whose change concerns watcher ``row`` (``{'*'}``: any field)."""
    if row["key"] == "_base":
        return {ANY}
    from_filter = filter_fields(load_filter(row.get("filter")))
    if from_filter is None:
        return {ANY}
    return {row["key"].split(".")[0]} | from_filter


def concerned(rows: list[dict], update: Any) -> set[str]:
    """Names of the watchers an update concerns (every one when the update cannot be read)."""
    keys = changed_keys(update)
    if keys is None:
        return {r["name"] for r in rows}
    keys = {k for k in keys if k not in DERIVED}
    return {r["name"] for r in rows if keys and (ANY in reads(r) or reads(r) & keys)}
