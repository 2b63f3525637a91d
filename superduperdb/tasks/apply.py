"""The ``apply`` job: apply a model to the documents matching a query, without a watcher.

``write=True`` stores each output at ``_outputs.<key>.<model>`` with its
fingerprint (as a watcher's ``model`` job would, so a watcher created later
finds them current); ``write=False`` leaves the documents alone and puts the
encoded outputs in ``<collection>._applied`` (one record per chunk, tagged with
the job's id), which the client reads back as a pandas Series and deletes.
Progress is counted after every chunk of a few model batches (recorded at a bounded rate), with a
log line per chunk. Reading the next chunk, predicting and writing the previous batch's outputs overlap
(:func:`~.pipeline.run_pipelined`), as in model jobs. A batch ``apply_model`` over many documents is
split by the client into ``_id``-range partitions, one ``apply`` job each, run on several workers at once.
"""

from __future__ import annotations

import logging
from typing import Any

from bson import ObjectId

from ..store.context import Context
from ..store.layout import MISSING, fingerprint, fingerprint_path, model_input, output_path, pending_download
from ..store.models import model_identity
from .kinds import job_kind
from .outputs import WatcherView, predict, write_outputs
from .pipeline import Progress, chunks, run_pipelined

logger = logging.getLogger(__name__)
SCRATCH = "_applied"
RECORD = 256


def scratch(ctx_db: Any, collection: str) -> Any:
    """The raw ``<collection>._applied`` collection (the outputs of ``write=False`` jobs)."""
    return ctx_db[f"{collection}.{SCRATCH}"]


@job_kind("apply")
def apply_model(ctx: Context, job_id: str, model: str, key: str, filter: dict | None = None, write: bool = False,
                chunk_size: int = 5000) -> dict:
    """Apply ``model`` to ``key`` of every document matching ``filter`` (an encoded query)."""
    model_row = ctx.metadata.get("models", model)
    obj = ctx.artifacts.get(model_row["artifact"], model_identity(model_row))
    version = model_row.get("version")
    query = dict(filter or {})
    view = WatcherView(f"apply:{model}", model, key, {}, query, output_path(key, model), fingerprint_path(key, model))
    size = max(1, min(chunk_size, 4 * int(model_row.get("batch_size") or 32)))
    projection = None if key == "_base" else {key: 1}
    total = ctx.collection.count_documents(query)
    out = scratch(ctx.db, ctx.target.collection)
    progress = Progress(ctx, total, f"apply {model} to {key}")
    counts = {"done": 0, "applied": 0, "n": 0}

    def work(chunk: list[dict]):
        items = [(d["_id"], value, fingerprint(version, value) if write else "") for d in chunk
                 if (value := model_input(d, key, {})) is not MISSING and not pending_download(value)]
        n = counts["n"]
        counts["n"] += 1
        if items:
            yield n, predict(ctx, obj, model_row, items, key)  # an undecodable input names its document
        counts["done"] += len(chunk)
        counts["applied"] += len(items)
        progress.advance(len(chunk))
        progress.log()

    def store(result: tuple[int, list]) -> None:
        n, computed = result
        if write:
            write_outputs(ctx, view, computed)
            return
        for start in range(0, len(computed), RECORD):  # records of at most RECORD outputs, well below 16 MB
            part = computed[start:start + RECORD]
            out.insert_one({"job": ObjectId(job_id), "n": n, "part": start,
                            "ids": [c.id for c in part], "outputs": [c.output for c in part]})

    with ctx.collection.find(query, projection).sort("_id", 1) as cursor:
        run_pipelined(chunks(cursor, size), work, store, ctx.check_cancelled)
    progress.close()
    done, applied = counts["done"], counts["applied"]
    return {"applied": applied, "skipped": done - applied, "write": write,
            "path": view.path if write else f"{ctx.target.collection}.{SCRATCH}"}
