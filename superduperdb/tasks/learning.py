"""The ``learn`` job: a learning task with a user-supplied trainer, on a worker.

A learning task without a trainer is a ``train`` job (:mod:`superduperdb.tasks.training`);
with one, this job hands the trainer fresh copies of the task's models and the
training and validation examples, and stores what it trained as new, not yet
serving versions, exactly as ``train`` does (the ``promote`` job that depends
on it switches to them). The trainer is called as::

    trainer(models, train, validation, objective=..., metrics=..., log=..., **options) -> dict | None

* ``models``: ``{name: the user's object}`` (fresh copies; trained in place);
* ``train``: a list of examples, one per document matching the task's filter
  (validation documents excluded), each ``{key: decoded input}`` for the
  task's keys (``features`` substituted);
* ``validation``: ``{set name: [examples]}`` (the live ``valid`` fold when no
  set is named);
* ``objective``: the loss callable (registered with ``create_loss``, or a
  built-in), or None; ``metrics``: ``{name: callable}``;
* ``log(message)``: a line in the job's logs.

What it returns (metrics, ``{name: float}``) is stored with each new version.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..errors import TrainingCancelled
from ..store.context import Context
from ..store.layout import MISSING, model_input
from ..store.watchers import and_, load_filter
from ..training import metrics as M
from . import training_data as data
from .kinds import job_kind
from .training import finite, fresh_model, load_callable, resolve_loss, save_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnSpec:
    """What a ``learn`` job does (plain data; travelling with the job also registers the kind on workers)."""

    name: str
    models: tuple
    keys: tuple
    trainer: dict  # the artifact reference of the user's trainer
    features: dict = field(default_factory=dict)
    filter: str = ""
    objective: str | None = None
    metrics: tuple = ()
    validation_sets: tuple = ()
    options: dict = field(default_factory=dict)


def examples_extractor(ctx: Context, keys: tuple, features: dict):
    """``extract(doc) -> {key: decoded input}`` (None when a key is missing) for the task's keys."""

    def extract(doc: dict) -> dict | None:
        out = {}
        for key in keys:
            value = model_input(doc, key, features)
            if value is MISSING:
                return None
            out[key] = ctx.types.decode(value)
        return out

    return extract


@job_kind("learn")
def learn(ctx: Context, job_id: str, spec: LearnSpec) -> dict:
    """Run the user's trainer on the task's models and data; store the results as new versions."""
    started = time.monotonic()
    trainer = ctx.artifacts.get(spec.trainer, (f"learning_tasks/{spec.name}", None))
    fresh = {name: fresh_model(ctx, name)[0] for name in dict.fromkeys(spec.models)}
    extract = examples_extractor(ctx, spec.keys, dict(spec.features))
    query = load_filter(spec.filter)
    validations = data.load_validation(ctx, list(spec.validation_sets), query, extract, None)
    exclude = set().union(*(v.source_ids for v in validations)) if validations else set()
    train = [e for doc in ctx.collection.find(and_(query, data.VALID_FOLD if not spec.validation_sets else {}))
             if doc["_id"] not in exclude and (e := extract(doc)) is not None]
    objective = resolve_loss(ctx, spec.objective, spec.objective) if spec.objective else None
    metrics = {name: M.get_builtin(name) or load_callable(ctx, "metrics", name) for name in spec.metrics}
    ctx.log(f"learning task {spec.name!r}: {type(trainer).__name__} on {len(train)} examples; validation: "
            + (", ".join(f"{v.name} ({len(v)})" for v in validations) or "none"))
    result = trainer({n: m.object for n, m in fresh.items()}, train, {v.name: v.examples for v in validations},
                     objective=objective, metrics=metrics, log=ctx.log, **spec.options)
    ctx.check_cancelled(TrainingCancelled)
    result = finite(dict(result or {}))
    versions = {name: save_version(ctx, name, model, result, job_id, _AsTrainSpec(spec.name))
                for name, model in fresh.items()}
    seconds = time.monotonic() - started
    ctx.log(f"stored {', '.join(f'{n} version {v}' for n, v in versions.items())} in {seconds:.2f} s")
    return {"versions": versions, "metrics": result, "seconds": seconds}


@dataclass(frozen=True)
class _AsTrainSpec:
    """What :func:`save_version` reads of a spec (``trained_by: {'learning_task': name}``)."""

    name: str
    kind: str = "learning_task"
