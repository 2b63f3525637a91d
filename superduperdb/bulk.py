"""``bulk_write`` with typed values, jobs, and an emulation for mongomock.

mongomock's ``bulk_write`` raises TypeError for UpdateOne/ReplaceOne with
pymongo >= 4.11, so on mongomock the operations run one by one (in order)
and the counts are assembled into a :class:`~superduperdb.results.BulkWriteResult`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError

from . import results
from .errors import QueryError

if TYPE_CHECKING:
    from .collection import Collection

_OPS = (InsertOne, UpdateOne, UpdateMany, ReplaceOne, DeleteOne, DeleteMany)


def _encode_op(coll: Collection, op: Any, i: int) -> Any:
    types = coll._types
    path = f"requests[{i}]"
    if isinstance(op, InsertOne):
        coll._prepare(op._doc, path)
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


def _emulate(raw: Any, ops: list, ordered: bool) -> dict:
    counts = {"nInserted": 0, "nMatched": 0, "nModified": 0, "nRemoved": 0, "nUpserted": 0,
              "upserted": [], "writeErrors": [], "writeConcernErrors": []}
    for index, op in enumerate(ops):
        try:
            if isinstance(op, InsertOne):
                raw.insert_one(op._doc)
                counts["nInserted"] += 1
            elif isinstance(op, (DeleteOne, DeleteMany)):
                method = raw.delete_one if isinstance(op, DeleteOne) else raw.delete_many
                counts["nRemoved"] += method(op._filter).deleted_count
            else:
                if isinstance(op, ReplaceOne):
                    res = raw.replace_one(op._filter, op._doc, upsert=bool(op._upsert))
                else:
                    method = raw.update_one if isinstance(op, UpdateOne) else raw.update_many
                    res = method(op._filter, op._doc, upsert=bool(op._upsert))
                counts["nMatched"] += res.matched_count
                counts["nModified"] += res.modified_count
                if res.upserted_id is not None:
                    counts["nUpserted"] += 1
                    counts["upserted"].append({"index": index, "_id": res.upserted_id})
        except Exception as exc:  # mirror pymongo: collect, stop if ordered
            counts["writeErrors"].append({"index": index, "code": getattr(exc, "code", None), "errmsg": str(exc), "op": op})
            if ordered:
                break
    if counts["writeErrors"]:
        raise BulkWriteError(counts)
    return counts


def bulk_write(coll: Collection, requests: list, ordered: bool, refresh: bool, args: tuple, kwargs: dict):
    if not isinstance(requests, list) or not requests:
        raise QueryError("requests must be a non-empty list of InsertOne/UpdateOne/... operations.", argument="requests")
    for i, op in enumerate(requests):
        if not isinstance(op, _OPS):
            raise QueryError(f"requests[{i}] is a {type(op).__name__}, not a pymongo write operation.", argument="requests")
    ops = [_encode_op(coll, op, i) for i, op in enumerate(requests)]
    plan = coll._jobs.before_bulk(ops) if refresh else None
    if type(coll._raw).__module__.startswith("mongomock"):
        bulk_api = _emulate(coll._raw, ops, ordered)
        acknowledged = True
    else:
        res = coll._raw.bulk_write(ops, ordered, *args, **kwargs)
        bulk_api, acknowledged = res.bulk_api_result, res.acknowledged
    jobs = coll._jobs.after_bulk(plan, bulk_api) if refresh else None
    return results.BulkWriteResult(bulk_api, acknowledged, jobs)
