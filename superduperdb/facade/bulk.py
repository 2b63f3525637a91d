"""``Collection.bulk_write``: typed values encoded, jobs planned, every store (see :mod:`superduperdb.store.bulk`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError

from .. import results
from ..errors import QueryError
from ..services.writes import written_by
from ..store import bulk
from ..store.layout import RESERVED
from ..store.positions import (
    Positions,
    next_seq,
    pinned_id,
    stamp_document,
    stamp_replacement,
    stamp_update,
    stamp_upserted,
)

if TYPE_CHECKING:
    from ..collection import Collection


def _encode_op(coll: Collection, op: Any, i: int, seq: int) -> Any:
    types = coll._types
    path = f"requests[{i}]"
    if isinstance(op, InsertOne):
        coll._services.writes.prepare(op._doc, path)
        return InsertOne(stamp_document(types.encode(op._doc, path), seq))
    kwargs = {}
    if getattr(op, "_collation", None) is not None:
        kwargs["collation"] = op._collation
    if getattr(op, "_hint", None) is not None:
        kwargs["hint"] = op._hint
    filter = types.encode(op._filter, path + ".filter")
    if isinstance(op, (DeleteOne, DeleteMany)):
        return type(op)(filter, **kwargs)
    if isinstance(op, ReplaceOne):
        replacement = types.encode(op._doc, path + ".replacement")
        old = coll._raw.find_one(filter, {"_id": 1, RESERVED: 1})
        stamped = stamp_replacement(replacement, seq, old, pinned_id(filter))
        return ReplaceOne(filter, stamped, upsert=bool(op._upsert), **kwargs)
    if getattr(op, "_array_filters", None) is not None:
        kwargs["array_filters"] = op._array_filters
    update = stamp_update(types.encode(op._doc, path + ".update"), seq)
    return type(op)(filter, update, upsert=bool(op._upsert), **kwargs)


def _tombstones(coll: Collection, plan: list | None, ran: Any, seq: int) -> None:
    """Tombstones for the documents the delete operations that ran removed (see :mod:`superduperdb.store.positions`)."""
    ran = set(ran)
    ids = [i for k, (kind, found) in enumerate(plan or []) if k in ran and kind == "delete" for i in found or []]
    if ids:
        Positions(coll._raw).tombstone(ids, seq)


def bulk_write(coll: Collection, requests: list, ordered: bool, refresh: bool, args: tuple, kwargs: dict):
    if not isinstance(requests, list) or not requests:
        raise QueryError("requests must be a non-empty list of InsertOne/UpdateOne/... operations.", argument="requests")
    for i, op in enumerate(requests):
        if not isinstance(op, bulk.OPERATIONS):
            raise QueryError(f"requests[{i}] is a {type(op).__name__}, not a pymongo write operation.", argument="requests")
    seq = next_seq(coll._raw, coll._services.scope.config.master.position_lag)
    ops = [_encode_op(coll, op, i, seq) for i, op in enumerate(requests)]
    plan = coll._services.jobs.before_bulk(ops) if refresh or any(isinstance(op, (DeleteOne, DeleteMany)) for op in ops) \
        else None
    try:
        bulk_api, acknowledged = bulk.bulk_write(coll._raw, ops, ordered, *args, **kwargs)
    except BulkWriteError as exc:  # what did run still gets its jobs
        ran = written_by(exc, len(ops), ordered)
        _tombstones(coll, plan, ran, seq)
        if refresh:
            coll._services.jobs.after_bulk(plan, exc.details, ran)
        raise
    _tombstones(coll, plan, range(len(ops)), seq)
    stamp_upserted(coll._raw, [u["_id"] for u in bulk_api.get("upserted", [])], seq)
    jobs = coll._services.jobs.after_bulk(plan, bulk_api) if refresh else None
    return results.BulkWriteResult(bulk_api, acknowledged, jobs)
