"""The ``model`` job: compute a watcher's outputs and store them in the documents.

Outputs go to ``_outputs.<key>.<model>`` with ``$set`` keyed by ``_id``, so a
job that Dask retries (after a lost worker) rewrites the same values: no
duplicate, no loss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import islice
from typing import Any

from pymongo import UpdateOne

from ..jobs import records
from ..services.models import load_model
from ..services.watchers import OUTPUTS, load_filter
from ..types.encoding import CONTENT
from .context import Context
from .runner import job_kind

logger = logging.getLogger(__name__)
MISSING = object()


def _chunks(it: Any, size: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, size)):
        yield chunk


def get_path(doc: dict, path: str) -> Any:
    """``doc['a']['b']`` for ``'a.b'`` (MISSING if absent)."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def _pending_download(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get(CONTENT), dict) and "bytes" not in value[CONTENT]


def model_input(doc: dict, key: str, features: dict) -> Any:
    """What a watcher feeds its model from ``doc`` (MISSING if absent)."""
    outputs = doc.get(OUTPUTS) or {}
    if key == "_base":
        doc = {k: v for k, v in doc.items() if k != OUTPUTS}
        for fkey, fmodel in features.items():
            if fmodel in (outputs.get(fkey) or {}):
                doc[fkey] = outputs[fkey][fmodel]
        return doc
    if key in features:
        return (outputs.get(key) or {}).get(features[key], MISSING)
    return get_path(doc, key)


def write_outputs(ctx: Context, path: str, pairs: list[tuple[Any, Any]]) -> None:
    if ctx.is_mongomock:  # mongomock's bulk_write cannot do UpdateOne with pymongo >= 4.11
        for _id, value in pairs:
            ctx.collection.update_one({"_id": _id}, {"$set": {path: value}})
    elif pairs:
        ctx.collection.bulk_write([UpdateOne({"_id": _id}, {"$set": {path: value}}) for _id, value in pairs],
                                  ordered=False)


@job_kind("model")
def compute_outputs(ctx: Context, job_id: str, watcher: str, ids: list | None = None, chunk_size: int = 5000) -> dict:
    """Apply the watcher's model to the matching documents (``ids``, or all)."""
    row = ctx.metadata.get("watchers", watcher)
    model_row = ctx.metadata.get("models", row["model"])
    model = load_model(ctx.metadata, ctx.artifacts, row["model"])
    key, features = row["key"], row.get("features") or {}
    query = load_filter(row.get("filter"))
    if ids is not None:
        query = {"$and": [query, {"_id": {"$in": list(ids)}}]} if query else {"_id": {"$in": list(ids)}}
    if key == "_base":
        projection = None
    elif key in features:
        projection = {f"{OUTPUTS}.{key}.{features[key]}": 1}
    else:
        projection = {key: 1}
    total = ctx.collection.count_documents(query) if ids is None else len(ids)
    out_type = ctx.types.get(model_row["type"]) if model_row.get("type") else None
    path = f"{OUTPUTS}.{key}.{row['model']}"
    done = skipped = 0
    for chunk in _chunks(ctx.collection.find(query, projection).batch_size(chunk_size), chunk_size):
        ctx.check_cancelled()
        ready = []
        for doc in chunk:
            raw_value = model_input(doc, key, features)
            if raw_value is MISSING or _pending_download(raw_value):
                skipped += 1
                continue
            ready.append((doc["_id"], ctx.types.decode(raw_value)))
        if ready:
            outputs = model.predict([value for _, value in ready])
            if out_type is not None:
                from bson.binary import Binary

                encoded = [{CONTENT: {"bytes": Binary(out_type.encode(y)), "type": model_row["type"]}} for y in outputs]
            else:
                encoded = ctx.types.encode_many(outputs, path="outputs")
            ctx.check_cancelled()  # a job cancelled while its model ran writes nothing more
            write_outputs(ctx, path, [(_id, y) for (_id, _), y in zip(ready, encoded)])
        done += len(chunk)
        records.progress(ctx.jobs, job_id, done / total if total else 1.0)
        ctx.log(f"{watcher}: {done}/{total} documents")
    return {"computed": done - skipped, "skipped": skipped, "path": path}
