"""``bulk_write`` on every store, the in-process stand-ins included.

mongomock's ``bulk_write`` raises TypeError for UpdateOne/ReplaceOne with
pymongo >= 4.11. The embedded store's own ``bulk_write`` and, for a plain
mongomock client a user passed in, :func:`bulk_write` run the operations one by
one (in order, :func:`run_one_by_one`) and assemble the counts as pymongo's
``bulk_api_result``; a failure raises :class:`pymongo.errors.BulkWriteError`
with the same details a server gives.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

from pymongo import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError

BATCH = 1000


def is_plain_mongomock(raw: Any) -> bool:
    """Whether ``raw`` (a collection) is mongomock's own, whose ``bulk_write`` cannot update."""
    return type(raw).__module__.startswith("mongomock")


def bulk_write(raw: Any, ops: list, ordered: bool = True, *args: Any, **kwargs: Any) -> tuple[dict, bool]:
    """Run ``ops`` on the raw collection; return ``(bulk_api_result, acknowledged)``."""
    if is_plain_mongomock(raw):
        return run_one_by_one(raw, ops, ordered), True
    result = raw.bulk_write(ops, ordered, *args, **kwargs)
    return result.bulk_api_result, result.acknowledged


def update_each(raw: Any, updates: Iterable[tuple[dict, dict]]) -> int:
    """Apply ``(filter, update)`` pairs, one document each, in unordered batches; return how many."""
    done = 0
    it = iter(updates)
    while batch := list(islice(it, BATCH)):
        bulk_write(raw, [UpdateOne(filter, update) for filter, update in batch], ordered=False)
        done += len(batch)
    return done


def set_fields(raw: Any, updates: Iterable[tuple[Any, dict]]) -> int:
    """Apply updates keyed by ``_id`` (``(id, {'$set': ...})`` pairs) in unordered batches; return how many."""
    return update_each(raw, (({"_id": _id}, update) for _id, update in updates))


def run_one_by_one(raw: Any, ops: list, ordered: bool) -> dict:
    """Run bulk ``ops`` one at a time on ``raw``; return pymongo's ``bulk_api_result``.

    Raises
    ------
    pymongo.errors.BulkWriteError
        With ``details['writeErrors']`` (index, code, errmsg, op) and the counts so far.
    """
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
                filter = op._filter
                if getattr(op, "_sort", None) is not None:  # UpdateOne/ReplaceOne(sort=): the document it picks
                    from .writes import pin

                    filter = pin(raw, filter, op._sort)
                if isinstance(op, ReplaceOne):
                    res = raw.replace_one(filter, op._doc, upsert=bool(op._upsert))
                else:
                    method = raw.update_one if isinstance(op, UpdateOne) else raw.update_many
                    res = method(filter, op._doc, upsert=bool(op._upsert))
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


def unset_everywhere(raw: Any, paths: list[str]) -> int:
    """``$unset`` ``paths`` in every document that has one, and the parents they leave empty.

    Derived fields nest (``_outputs.<key>.<model>``, ``_like.<name>``): removing the
    last model's output of a key leaves ``_outputs.<key>: {}``, then ``_outputs: {}``.
    Those are removed too, deepest first, so the documents read as if the paths had
    never been written. Returns how many documents lost a path.
    """
    modified = raw.update_many({"$or": [{p: {"$exists": True}} for p in paths]},
                               {"$unset": {p: "" for p in paths}}).modified_count
    parents = {".".join(p.split(".")[:i]) for p in paths for i in range(1, p.count(".") + 1)}
    for parent in sorted(parents, key=lambda p: -p.count(".")):
        raw.update_many({parent: {}}, {"$unset": {parent: ""}})
    return modified


OPERATIONS = (InsertOne, UpdateOne, UpdateMany, ReplaceOne, DeleteOne, DeleteMany)
