"""The ``validate`` job: retrieval metrics of a semantic index's serving models, on demand.

``validate_semantic_index(name, validation_sets, metrics)`` (the original's
standalone call) submits this job. Each validation document gives a
``(query, target)`` pair, as in semantic-index training: the index's second
key (encoded by its second model) and its first key (encoded by the indexed
model), or a splitter's two halves of the document. Query ``i`` should
retrieve target ``i`` among all the validation targets, ranked with the
index's measure (a custom measure too). The metrics (``'<set>/<metric>'``)
are the job's result and are stored on the index's row (``metrics``,
``validated_at``), as the original stored them.
"""

from __future__ import annotations

from typing import Any

from ..errors import TrainingError
from ..store.context import Context
from ..store.measures import load_measure
from ..store.metadata import utcnow
from ..store.models import load_model
from . import training_data as data
from .kinds import job_kind
from .training import load_callable, resolve_metrics


@job_kind("validate")
def validate_index(ctx: Context, job_id: str, index: str, validation_sets: list, metrics: list,
                   splitter: str | None = None, n_retrieve: int = 100) -> dict:
    from ..training.contrastive import evaluate_retrieval

    row = ctx.metadata.get("semantic_indexes", index)
    models, keys = list(row["models"]), list(row["keys"])
    if splitter is None and len(models) < 2:
        raise TrainingError(f"Index {index!r} has one model/key: give a splitter to split each validation document "
                            "into a query and a target.")
    target_name, target_key = models[0], keys[0]
    query_name, query_key = (models[1], keys[1]) if splitter is None else (models[0], keys[0])
    target_model = load_model(ctx.metadata, ctx.artifacts, target_name)
    query_model = load_model(ctx.metadata, ctx.artifacts, query_name)
    measure = load_measure(ctx.metadata, ctx.artifacts, row["measure"])
    split = load_callable(ctx, "splitters", splitter) if splitter else None
    extract, projection = data.pair_extractor(ctx, query_key, target_key, split)
    validations = data.load_validation(ctx, list(validation_sets), {}, extract, projection)
    if not validations:
        raise TrainingError(f"No validation data for index {index!r}: create_validation_set(...) first, or give "
                            "documents of the 'valid' fold.")
    fns = resolve_metrics(ctx, tuple(metrics), retrieval=True)
    out: dict[str, Any] = {}
    for v in validations:
        values = evaluate_retrieval(query_model, target_model, v.examples, measure, fns, n_retrieve)
        out.update({f"{v.name}/{k}": float(x) for k, x in values.items()})
        ctx.log(f"{index} on {v.name} ({len(v)} pairs): " + ", ".join(f"{k}={x:.4g}" for k, x in values.items()))
    versions = {m: ctx.metadata.get("models", m).get("version") for m in dict.fromkeys([target_name, query_name])}
    ctx.metadata.update("semantic_indexes", index, {"$set": {"metrics": out, "validated_at": utcnow(),
                                                             "validated_versions": versions}})
    return {"metrics": out, "versions": versions}
