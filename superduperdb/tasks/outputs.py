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

from bson.binary import Binary

from ..store import records
from ..store.bulk import set_fields
from ..store.context import Context
from ..store.layout import MISSING, input_projection, model_input, pending_download
from ..store.models import load_model
from ..store.watchers import and_, load_filter, watcher_output
from ..types.encoding import CONTENT
from .kinds import job_kind

logger = logging.getLogger(__name__)


def chunks(it: Any, size: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, size)):
        yield chunk


def encode_outputs(ctx: Context, model_row: dict, outputs: list) -> list:
    """Outputs encoded for MongoDB: with the model's ``type`` if it has one, else per value."""
    if model_row.get("type"):
        out_type = ctx.types.get(model_row["type"])
        return [{CONTENT: {"bytes": Binary(out_type.encode(y)), "type": model_row["type"]}} for y in outputs]
    return ctx.types.encode_many(outputs, path="outputs")


def write_outputs(ctx: Context, path: str, pairs: list[tuple[Any, Any]]) -> None:
    """``$set`` each ``(id, output)`` at ``path``, in unordered bulk writes."""
    set_fields(ctx.collection, ((_id, {"$set": {path: value}}) for _id, value in pairs))


def ready_inputs(ctx: Context, docs: list[dict], key: str, features: dict) -> list[tuple[Any, Any]]:
    """``(id, decoded input)`` of the documents whose input is there (and downloaded)."""
    ready = [(d["_id"], model_input(d, key, features)) for d in docs]
    return [(i, ctx.types.decode(x)) for i, x in ready if x is not MISSING and not pending_download(x)]


@job_kind("model")
def compute_outputs(ctx: Context, job_id: str, watcher: str, ids: list | None = None, chunk_size: int = 5000) -> dict:
    """Apply the watcher's model to the matching documents (``ids``, or all)."""
    row = ctx.metadata.get("watchers", watcher)
    model_row = ctx.metadata.get("models", row["model"])
    model = load_model(ctx.metadata, ctx.artifacts, row["model"])
    key, features = row["key"], row.get("features") or {}
    query = and_(load_filter(row.get("filter")), {"_id": {"$in": list(ids)}} if ids is not None else {})
    fields = input_projection(key, features)
    projection = None if fields is None else {f: 1 for f in fields}
    total = ctx.collection.count_documents(query) if ids is None else len(ids)
    path = watcher_output(row)
    done = skipped = 0
    for chunk in chunks(ctx.collection.find(query, projection).batch_size(chunk_size), chunk_size):
        ctx.check_cancelled()
        ready = ready_inputs(ctx, chunk, key, features)
        skipped += len(chunk) - len(ready)
        if ready:
            encoded = encode_outputs(ctx, model_row, model.predict([value for _, value in ready]))
            ctx.check_cancelled()  # a job cancelled while its model ran writes nothing more
            write_outputs(ctx, path, [(_id, y) for (_id, _), y in zip(ready, encoded)])
        done += len(chunk)
        records.progress(ctx.jobs, job_id, done / total if total else 1.0)
        ctx.log(f"{watcher}: {done}/{total} documents")
    return {"computed": done - skipped, "skipped": skipped, "path": path}
