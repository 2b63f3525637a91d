"""Learning tasks: the original's general training entry point (client side).

A learning task row in ``<coll>._learning_tasks``::

    {name, task_type, models, keys, features, filter, objective, metrics,
     validation_sets, splitter, keys_to_watch, trainer (artifact or None),
     settings, fit_kwargs, options}

``task_type`` says which training runs, each as jobs on the cluster
(training, then ``promote`` to the new versions, then what is downstream):

* ``'supervised'``: one model learns ``keys[1]`` (a field, the target) from
  ``keys[0]``: the imputation training (:mod:`superduperdb.tasks.training`);
* ``'representation'``: two models (or one model and a ``splitter``) learn to
  embed ``keys[1]`` (queries) near ``keys[0]`` (targets): contrastive training;
* ``'custom'``: the user's ``trainer`` runs on the models and the examples
  (the ``learn`` job, :mod:`superduperdb.tasks.learning`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AlreadyRegisteredError, QueryError, TrainingError
from ..jobs.handles import JobGroup
from ..store.watchers import dump_filter, watcher_name
from .training import check_known, check_name, check_trainable, settings_from

if TYPE_CHECKING:
    from .scope import Scope
    from .training import TrainingService

TASK_TYPES = ("supervised", "representation", "custom")


class LearningTaskService:
    def __init__(self, scope: Scope, training: TrainingService) -> None:
        self.scope = scope
        self.metadata = scope.metadata
        self.training = training

    def create(self, name: str, models: list[str], keys: list[str], *, task_type: str | None = None,
               objective: str | None = None, metrics: list[str] = (), validation_sets: list[str] = (),
               trainer: Callable | None = None, filter: Mapping | None = None, features: Mapping | None = None,
               splitter: str | None = None, keys_to_watch: list[str] = (), measure: str = "cosine",
               n_retrieve: int = 100, fit_kwargs: dict | None = None, options: dict | None = None,
               serializer: str | None = None, **settings: Any) -> JobGroup:
        check_name("Learning task", name)
        if self.metadata.exists("learning_tasks", name):
            raise AlreadyRegisteredError("learning task", name)
        models = [models] if isinstance(models, str) else list(models)
        keys = [keys] if isinstance(keys, str) else list(keys)
        if not models or not keys or not all(isinstance(k, str) and k for k in keys):
            raise TrainingError(f"models and keys must be non-empty lists of names, got models={models!r}, keys={keys!r}.")
        task_type = task_type or _infer_type(models, keys, trainer, splitter)
        if task_type not in TASK_TYPES:
            raise TrainingError(f"task_type must be one of {', '.join(TASK_TYPES)}, not {task_type!r}.")
        if (task_type == "custom") != (trainer is not None):
            raise TrainingError("A 'custom' learning task needs trainer=callable, and only it takes one.")
        for model in models:
            check_trainable(self.metadata.get("models", model), model)
        if task_type == "supervised" and (len(models) != 1 or len(keys) != 2):
            raise TrainingError(f"A supervised task trains one model from keys=[input, target], got models={models!r}, "
                                f"keys={keys!r}.")
        if task_type == "representation" and not (len(models) == len(keys) == 2 or (splitter and len(models) == 1)):
            raise TrainingError("A representation task takes models=[target_encoder, query_encoder] with "
                                "keys=[target_key, query_key], or one model and key with a splitter.")
        if filter is not None and not isinstance(filter, Mapping):
            raise QueryError(f"filter must be a dict (a MongoDB query), not {filter!r}.", argument="filter")
        check_known(self.metadata, metrics=metrics, losses=[objective] if objective is not None else [],
                    validation_sets=validation_sets, splitters=[splitter] if splitter is not None else [])
        if trainer is not None and not callable(trainer):
            raise TrainingError(f"trainer must be callable: trainer(models, train, validation, ...), not {trainer!r}.")
        settings = settings_from(settings) if task_type != "custom" else {}
        if task_type == "custom" and not isinstance(options or {}, Mapping):
            raise TrainingError("options must be a dict of keyword arguments for the trainer.")
        row = {"name": name, "task_type": task_type, "models": models, "keys": keys,
               "features": dict(features or {}), "filter": dump_filter(self.scope.query(filter)),
               "objective": objective, "metrics": list(metrics), "validation_sets": list(validation_sets),
               "splitter": splitter, "keys_to_watch": list(keys_to_watch), "measure": measure,
               "n_retrieve": int(n_retrieve), "settings": settings, "fit_kwargs": dict(fit_kwargs or {}),
               "options": dict(options or {}), "trainer": None}
        if trainer is not None:
            row["trainer"] = self.scope.artifacts.put(trainer, serializer, name=f"learning_tasks/{name}")
        for key in keys_to_watch:  # watchers computed from the trained version, activated by its promotion
            if not self.metadata.exists("watchers", watcher_name(models[0], key)):
                self.training.awaiting_watcher(models[0], key, filter, dict(features or {}))
        self.metadata.insert("learning_tasks", row)
        return self.run(name)

    def run(self, name: str) -> JobGroup:
        """Train again (new versions, then promoted) as the task describes."""
        from ..tasks.training import TrainSpec

        row = self.metadata.get("learning_tasks", name)
        record = {"learning_task": name}
        if row["task_type"] == "custom":
            from ..tasks.learning import LearnSpec

            spec = LearnSpec(name=name, models=tuple(row["models"]), keys=tuple(row["keys"]), trainer=row["trainer"],
                             features=row["features"], filter=row["filter"], objective=row["objective"],
                             metrics=tuple(row["metrics"]), validation_sets=tuple(row["validation_sets"]),
                             options=row["options"])
            return self.training.submit_training(spec, record, kind="learn")
        common = {"filter": row["filter"], "loss": row["objective"], "metrics": tuple(row["metrics"]),
                  "validation_sets": tuple(row["validation_sets"]), "settings": row["settings"]}
        models, keys = row["models"], row["keys"]
        if row["task_type"] == "supervised":
            spec = TrainSpec(kind="imputation", name=name, models=(models[0],), keys=(keys[0],),
                             features=row["features"], target=keys[1], fit_kwargs=row["fit_kwargs"], **common)
        else:
            if row["splitter"]:
                models, keys = [models[0], models[0]], [keys[0], keys[0]]
            spec = TrainSpec(kind="semantic_index", name=name, models=(models[0], models[1]), keys=(keys[0], keys[1]),
                             splitter=row["splitter"], measure=row["measure"], n_retrieve=row["n_retrieve"],
                             **{**common, "metrics": common["metrics"] or ("recall@10", "mrr")})
        return self.training.submit_training(spec, record)

    def delete(self, name: str) -> None:
        """Delete the task; the versions it trained stay with their models (and its trainer's
        artifact in GridFS: artifacts are content-addressed and may be shared)."""
        self.metadata.get("learning_tasks", name)
        self.metadata.delete("learning_tasks", name)


def _infer_type(models: list, keys: list, trainer: Any, splitter: Any) -> str:
    if trainer is not None:
        return "custom"
    if len(models) == 1 and len(keys) == 2:
        return "supervised"
    return "representation"
