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
