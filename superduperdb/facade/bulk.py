"""``Collection.bulk_write``: typed values encoded, jobs planned, every store (see :mod:`superduperdb.store.bulk`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError

from .. import results
from ..errors import QueryError
from ..services.writes import written_by
from ..store import bulk

if TYPE_CHECKING:
    from ..collection import Collection


def _encode_op(coll: Collection, op: Any, i: int) -> Any:
    types = coll._types
    path = f"requests[{i}]"
    if isinstance(op, InsertOne):
        coll._services.writes.prepare(op._doc, path)
        return InsertOne(types.encode(op._doc, path))
    kwargs = {}
    if getattr(op, "_collation", None) is not None:
        kwargs["collation"] = op._collation
    if getattr(op, "_hint", None) is not None:
        kwargs["hint"] = op._hint
    filter = types.encode(op._filter, path + ".filter")
    if isinstance(op, (DeleteOne, DeleteMany)):
        return type(op)(filter, **kwargs)
    if isinstance(op, ReplaceOne):
        return ReplaceOne(filter, types.encode(op._doc, path + ".replacement"), upsert=bool(op._upsert), **kwargs)
    if getattr(op, "_array_filters", None) is not None:
        kwargs["array_filters"] = op._array_filters
    return type(op)(filter, types.encode(op._doc, path + ".update"), upsert=bool(op._upsert), **kwargs)


def bulk_write(coll: Collection, requests: list, ordered: bool, refresh: bool, args: tuple, kwargs: dict):
    if not isinstance(requests, list) or not requests:
        raise QueryError("requests must be a non-empty list of InsertOne/UpdateOne/... operations.", argument="requests")
    for i, op in enumerate(requests):
        if not isinstance(op, bulk.OPERATIONS):
            raise QueryError(f"requests[{i}] is a {type(op).__name__}, not a pymongo write operation.", argument="requests")
    ops = [_encode_op(coll, op, i) for i, op in enumerate(requests)]
    plan = coll._services.jobs.before_bulk(ops) if refresh else None
    try:
        bulk_api, acknowledged = bulk.bulk_write(coll._raw, ops, ordered, *args, **kwargs)
    except BulkWriteError as exc:  # what did run still gets its jobs
        if refresh:
            coll._services.jobs.after_bulk(plan, exc.details, written_by(exc, len(ops), ordered))
        raise
    jobs = coll._services.jobs.after_bulk(plan, bulk_api) if refresh else None
    return results.BulkWriteResult(bulk_api, acknowledged, jobs)
