"""On-demand work the original API offered as standalone calls: ``refresh_model`` and
``validate_semantic_index``.

* ``refresh_model(name)`` recomputes every output of the model's active
  watchers, even those that are current (their fingerprints are cleared first,
  so the ``model`` jobs see them as stale; the old outputs stay readable until
  the new ones are written), then the watchers downstream whose input changed,
  and the indexes and neighbourhoods over them.
* ``validate_semantic_index(name, validation_sets, metrics)`` submits a
  ``validate`` job (:mod:`superduperdb.tasks.validation`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ModelError, TrainingError
from ..jobs.handles import Job, JobGroup
from ..store.layout import fingerprint_path
from ..store.watchers import active_watchers, downstream
from ..training import metrics as M
from .training import check_known

if TYPE_CHECKING:
    from .scope import Services


def refresh_model(services: Services, name: str) -> JobGroup:
    scope = services.scope
    scope.metadata.get("models", name)
    rows = active_watchers(scope.metadata)
    own = [r for r in rows if r["model"] == name]
    if not own:
        raise ModelError(f"Model {name!r} has no active watcher, so it has no outputs to refresh. Create one with "
                         f"create_watcher({name!r}, key) (or create_model(..., key=...)).", model=name)
    for row in own:
        path = fingerprint_path(row["key"], row["model"])
        scope.raw.update_many({path: {"$exists": True}}, {"$unset": {path: ""}})
    return services.jobs.submit_watchers(None, downstream(rows, {r["name"] for r in own}))


def validate_semantic_index(services: Services, name: str, validation_sets: list[str] = (),
                            metrics: list[str] = ("recall@10", "mrr"), splitter: str | None = None,
                            n_retrieve: int = 100) -> Job:
    scope = services.scope
    index = services.indexes.get(name)
    if isinstance(validation_sets, str):
        validation_sets = [validation_sets]
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics, validation_sets = list(metrics), list(validation_sets)
    if not metrics:
        raise TrainingError("metrics must name at least one metric, e.g. ['recall@10', 'mrr'].")
    for metric in metrics:
        if M.is_builtin(metric) and not M.is_retrieval(metric):
            raise TrainingError(f"Metric {metric!r} is for supervised models; a semantic index takes retrieval "
                                "metrics such as 'recall@10', 'mrr' or registered ones.", metric=metric)
    check_known(scope.metadata, metrics=metrics, validation_sets=validation_sets,
                splitters=[splitter] if splitter is not None else [])
    if splitter is None and len(index["models"]) < 2:
        raise TrainingError(f"Index {name!r} has one model/key: give splitter=... (create_splitter) to split each "
                            "document into a query and a target, or create the index with a query model and key.")
    if isinstance(n_retrieve, bool) or not isinstance(n_retrieve, int) or n_retrieve < 1:
        raise TrainingError(f"n_retrieve must be a positive integer, not {n_retrieve!r}.")
    params: dict[str, Any] = {"index": name, "validation_sets": validation_sets, "metrics": metrics,
                              "splitter": splitter, "n_retrieve": n_retrieve}
    return services.jobs.submit("validate", params, record={"semantic_index": name})
