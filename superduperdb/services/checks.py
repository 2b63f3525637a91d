"""Checks of what users pass to pymongo's methods: clear errors before anything is written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import QueryError


def check_filter(filter: Any, argument: str = "filter") -> dict:
    """``filter`` as a dict (None: ``{}``); anything else is refused with a clear message."""
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise QueryError(
            f"{argument} must be a dict such as {{'name': 'x'}} (a MongoDB query), not a "
            f"{type(filter).__name__}: {filter!r}. To find by id, use {{'_id': value}}.",
            argument=argument,
        )
    return dict(filter)


def check_update(update: Any) -> Any:
    """An update document (operators only) or an aggregation pipeline, else a clear error."""
    if isinstance(update, list):
        return update
    if not isinstance(update, Mapping) or not update:
        raise QueryError(
            f"update must be a non-empty dict of update operators such as {{'$set': {{'x': 1}}}}, not {update!r}.",
            argument="update",
        )
    if not all(str(k).startswith("$") for k in update):
        raise QueryError(
            f"update must only contain update operators ($set, $unset, $inc ...), got keys {list(update)}. "
            "To replace a whole document use replace_one(filter, replacement).",
            argument="update",
        )
    return dict(update)


def check_replacement(replacement: Any) -> Mapping:
    if not isinstance(replacement, Mapping) or any(str(k).startswith("$") for k in replacement):
        raise QueryError("replacement must be a plain document without update operators.", argument="replacement")
    return replacement


#: Query operators allowed at the top level of a filter, and inside a field's condition.
TOP_LEVEL_OPERATORS = ("$and", "$or", "$nor", "$expr", "$where", "$text", "$comment", "$jsonSchema")
FIELD_OPERATORS = (
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$type", "$regex", "$options",
    "$not", "$elemMatch", "$size", "$all", "$mod", "$bitsAllSet", "$bitsAllClear", "$bitsAnySet",
    "$bitsAnyClear", "$geoWithin", "$geoIntersects", "$near", "$nearSphere", "$maxDistance", "$minDistance",
    "$geometry", "$box", "$center", "$centerSphere", "$polygon", "$uniqueDocs",
)
_DBREF_KEYS = ("$ref", "$id", "$db")


def check_operators(filter: Mapping, argument: str = "filter", path: str = "") -> None:
    """Refuse operators MongoDB does not know (``{'$foo': 1}``, ``{'x': {'$bad': 1}}``) and
    malformed ``$and``/``$or``/``$nor``, naming the place and suggesting the closest operator.

    Examples
    --------
    >>> check_operators({"x": {"$gte": 1}, "$or": [{"y": 1}, {"z": {"$in": [1, 2]}}]})
    >>> check_operators({"x": {"$gt3": 1}})
    Traceback (most recent call last):
    ...
    superduperdb.errors.QueryError: Unknown query operator '$gt3' in filter at 'x'. Did you mean '$gt'? ...
    """
    from ..errors import unknown_name

    for key, value in filter.items():
        if not isinstance(key, str):
            raise QueryError(f"{argument} keys must be strings, not {key!r}.", argument=argument)
        where = f"{path}.{key}" if path else key
        if key.startswith("$"):
            if key not in TOP_LEVEL_OPERATORS:
                raise QueryError(unknown_name("top-level query operator", key, TOP_LEVEL_OPERATORS, where=f"in {argument}",
                                              hint="Field conditions go under a field: {'x': {'$gt': 1}}."),
                                 argument=argument, operator=key)
            if key in ("$and", "$or", "$nor"):
                if not isinstance(value, list) or not value or not all(isinstance(v, Mapping) for v in value):
                    raise QueryError(f"{key} in {argument} must be a non-empty list of filters, not {value!r}.",
                                     argument=argument, operator=key)
                for i, sub in enumerate(value):
                    check_operators(sub, argument, f"{where}.{i}")
            continue
        _check_condition(value, argument, where)


def _check_condition(value: Any, argument: str, where: str) -> None:
    from ..errors import unknown_name

    if not isinstance(value, Mapping) or not value:
        return
    keys = list(value)
    if not (isinstance(keys[0], str) and keys[0].startswith("$")) or keys[0] in _DBREF_KEYS:
        return  # an embedded document matched exactly
    for op, operand in value.items():
        if op not in FIELD_OPERATORS:
            raise QueryError(unknown_name("query operator", op, FIELD_OPERATORS, where=f"in {argument} at {where!r}",
                                          limit=0) + " See the MongoDB query operators.",
                             argument=argument, operator=op)
        if op in ("$in", "$nin", "$all") and not isinstance(operand, (list, tuple)):
            raise QueryError(f"{op} in {argument} at {where!r} needs a list, not {operand!r}.", argument=argument,
                             operator=op)
        if op == "$not":
            if isinstance(operand, Mapping):
                _check_condition(operand, argument, where)
        elif op == "$elemMatch":
            if not isinstance(operand, Mapping):
                raise QueryError(f"$elemMatch in {argument} at {where!r} needs a filter (a dict), not {operand!r}.",
                                 argument=argument, operator=op)
            if operand and str(next(iter(operand))).startswith("$") and next(iter(operand)) not in TOP_LEVEL_OPERATORS:
                _check_condition(operand, argument, where)
            else:
                check_operators(operand, argument, where)


def check_evaluable(raw: Any, filter: Mapping, argument: str = "filter") -> None:
    """Have the store evaluate ``filter`` once (against nothing), so that a filter it cannot
    evaluate is refused now rather than in every job. The embedded mongomock store evaluates
    it against an empty document and one stored document; a server parses it."""
    import pymongo.errors

    from ..store.backends import in_process

    embedded = in_process(raw)
    try:
        if embedded:
            from mongomock.filtering import filter_applies

            for doc in ({}, raw.find_one() or {}):
                filter_applies(dict(filter), doc)
        else:
            raw.find_one({"$and": [{"_id": {"$in": []}}, dict(filter)]}, {"_id": 1})
    except pymongo.errors.AutoReconnect:
        raise
    except (pymongo.errors.OperationFailure, NotImplementedError, TypeError, ValueError, KeyError,
            AttributeError, IndexError) as exc:
        raise QueryError(
            f"The database cannot evaluate this {argument}: {type(exc).__name__}: {exc}. "
            + ("The embedded store (mongomock) does not support every MongoDB operator: express it with "
               "the common operators ($eq, $in, $gt, $exists, $and ...), or use a MongoDB server."
               if embedded else "Fix the filter."),
            argument=argument) from exc
