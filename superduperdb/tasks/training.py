"""The ``train`` job: fit or train models from the collection, on a worker.

Two kinds of training (:class:`TrainSpec` says which):

* ``imputation`` (supervised): a model learns to predict a target (a field,
  or another model's stored output) from its input (a field, the whole
  document, or stored outputs via ``features``). A scikit-learn estimator is
  fitted on all the training examples at once; a torch module is trained by
  :class:`~superduperdb.training.loop.TrainLoop` on batches streamed from
  MongoDB.
* ``semantic_index`` (contrastive): the index's encoders learn to embed each
  query near its own target (two keys of a document, or a splitter's halves).

The job trains a fresh copy of the serving version (never the cached object
that is serving), writes per-step metrics to its record (``metrics``:
``[{step, epoch, loss}, {step, epoch, validation: True, '<set>/<metric>': ...}]``),
checks its record between steps and stops when it says ``cancelled``, and
at the end stores the trained model as a **new, not yet serving version**
(``versions[]`` of the model row, with its validation metrics). Switching
to it is the ``promote`` job's work (:mod:`superduperdb.tasks.versions`),
which depends on this one: a failed or cancelled training changes nothing
that serves.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import TrainingCancelled, TrainingError
from ..models.base import Model
from ..store import records
from ..store.context import Context
from ..store.metadata import utcnow
from ..store.models import model_identity
from ..store.watchers import load_filter
from ..training import metrics as M
from ..training.loop import Reporter, TrainLoop, TrainSettings
from . import training_data as data
from .kinds import job_kind

logger = logging.getLogger(__name__)

MAX_STEP_ENTRIES = 2000


@dataclass(frozen=True)
class TrainSpec:
    """What a ``train`` job does (plain data; travelling with the job also registers the kind on workers).

    ``models``: the imputation's model, or the index's (target, query) encoders.
    ``keys``: the imputation's input key, or the index's (target, query) keys.
    """

    kind: str
    name: str
    models: tuple
    keys: tuple
    features: dict = field(default_factory=dict)
    target: Any = None
    filter: str = ""
    loss: str | None = None
    metrics: tuple = ()
    validation_sets: tuple = ()
    splitter: str | None = None
    measure: str = "cosine"
    n_retrieve: int = 100
    settings: dict = field(default_factory=dict)
    fit_kwargs: dict = field(default_factory=dict)


class JobReporter(Reporter):
    """Writes the loop's metrics and progress to the job record; raises when the record says cancelled."""

    def __init__(self, ctx: Context, job_id: str, interval: float = 1.0, stride: int = 1) -> None:
        self.ctx, self.job_id, self.interval, self.stride = ctx, job_id, interval, max(1, stride)
        self.entries: list[dict] = []
        self.fraction = 0.0
        self.last = time.monotonic()

    def check_cancelled(self) -> None:
        self.ctx.check_cancelled(TrainingCancelled)

    def flush(self) -> None:
        update: dict = {"$set": {"progress": float(self.fraction)}}
        if self.entries:
            update["$push"] = {"metrics": {"$each": self.entries}}
        self.ctx.jobs.update_one({"_id": records.oid(self.job_id)}, update)
        self.entries = []
        self.last = time.monotonic()
        self.check_cancelled()

    def step(self, step: int, epoch: int, loss: float) -> None:
        if step % self.stride == 0:
            self.entries.append({"step": step, "epoch": epoch, "loss": loss})
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def validation(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self.entries.append({"step": step, "epoch": epoch, "validation": True, **finite(metrics)})
        self.ctx.log(f"step {step} (epoch {epoch}): " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        self.flush()

    def progress(self, fraction: float) -> None:
        self.fraction = fraction


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics as stored: NaN becomes None (MongoDB and JSON keep no NaN)."""
    return {k: (None if v is None or math.isnan(v) else float(v)) for k, v in metrics.items()}


# -- loading what the spec names ----------------------------------------------------------
def fresh_model(ctx: Context, name: str) -> tuple[Model, dict]:
    """A private copy of the serving version (unpickled again: the cached object keeps serving)."""
    row = ctx.metadata.get("models", name)
    return ctx.artifacts.load_fresh(row["artifact"], model_identity(row)), row


def load_callable(ctx: Context, kind: str, name: str) -> Any:
    row = ctx.metadata.get(kind, name)
    return ctx.artifacts.get(row["artifact"], (f"{kind}/{name}", None))


def resolve_metrics(ctx: Context, names: tuple, retrieval: bool) -> dict[str, M.Metric]:
    out = {}
    for name in names:
        builtin = M.get_builtin(name)
        if builtin is not None:
            if M.is_retrieval(name) != retrieval:
                kind = "semantic indexes" if M.is_retrieval(name) else "supervised models"
                raise TrainingError(f"Metric {name!r} is for {kind}.", metric=name)
            out[name] = builtin
        else:
            out[name] = load_callable(ctx, "metrics", name)
    return out


def resolve_loss(ctx: Context, name: str | None, default: str, measure: str = "cosine") -> Any:
    from ..training.losses import get_builtin

    name = name or default
    return get_builtin(name, measure) or load_callable(ctx, "losses", name)


def _settings(spec: TrainSpec) -> TrainSettings:
    return TrainSettings(**spec.settings)


def _prefixed(validation: Any, values: dict[str, float]) -> dict[str, float]:
    return {f"{validation.name}/{k}": v for k, v in values.items()}


# -- imputations ----------------------------------------------------------------------------
def train_imputation(ctx: Context, job_id: str, spec: TrainSpec, reporter: JobReporter) -> tuple[dict, dict]:
    """Train ``spec.models[0]``; returns ``({model: trained Model}, metrics)``."""
    name = spec.models[0]
    model, _ = fresh_model(ctx, name)
    settings = _settings(spec)
    extract, projection = data.supervised_extractor(ctx, spec.keys[0], dict(spec.features), spec.target)
    query = load_filter(spec.filter)
    validations = data.load_validation(ctx, list(spec.validation_sets), query, extract, projection)
    exclude = set().union(*(v.source_ids for v in validations)) if validations else set()
    train = data.TrainingData(ctx, query, projection, extract, exclude=exclude, chunk_size=settings.chunk_size,
                              seed=settings.seed)
    metric_fns = resolve_metrics(ctx, spec.metrics, retrieval=False)
    ctx.log(f"training {name!r} ({model.kind}) on {train.count} documents; validation: "
            + (", ".join(f"{v.name} ({len(v)})" for v in validations) or "none"))

    def evaluate(loss_fn: Any = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for v in validations:
            xs, ys = [e[0] for e in v.examples], [e[1] for e in v.examples]
            values = M.evaluate(metric_fns, model.predict(xs), ys)
            if loss_fn is not None:
                from ..training.supervised import validation_loss

                values["loss"] = validation_loss(model, loss_fn, xs, ys, settings.batch_size, device)
            out.update(_prefixed(v, values))
        return out

    if model.kind == "sklearn":
        from ..training.supervised import fit_estimator

        examples = train.all()
        reporter.check_cancelled()
        fit_estimator(model, [e[0] for e in examples], [e[1] for e in examples], **spec.fit_kwargs)
        reporter.progress(1.0)
        result = evaluate()
        reporter.validation(1, 0, result)
        return {name: model}, result

    from ..models.torch_adapter import resolve_device
    from ..training.losses import default_supervised_loss
    from ..training.supervised import supervised_step, torch_module

    module = torch_module(model)
    device = resolve_device(model.device)
    module.to(device)
    first = next(iter(train.batches(0, settings.batch_size)), None)
    if first is None:
        raise TrainingError(f"No training documents with an input at {spec.keys[0]!r} and a target at "
                            f"{data.target_path(spec.target)!r} matched (skipped {train.skipped}).", model=name)
    loss_fn = resolve_loss(ctx, spec.loss, default_supervised_loss([e[1] for e in first]))
    step = supervised_step(model, loss_fn, device)
    loop = TrainLoop(settings, list(module.parameters()), modules=[module], reporter=reporter,
                     batches=lambda epoch: (([e[0] for e in b], [e[1] for e in b])
                                            for b in train.batches(epoch, settings.batch_size)),
                     step=step, validate=(lambda: evaluate(loss_fn)) if validations else None,
                     steps_per_epoch=max(1, math.ceil(train.count / settings.batch_size)))
    result = loop.run()
    return {name: model}, result.best


# -- semantic indexes -----------------------------------------------------------------------
def train_semantic_index(ctx: Context, job_id: str, spec: TrainSpec, reporter: JobReporter) -> tuple[dict, dict]:
    """Train the index's encoders contrastively; returns ``({model: trained Model}, metrics)``."""
    from ..models.torch_adapter import resolve_device
    from ..training.contrastive import contrastive_step, evaluate_retrieval
    from ..training.supervised import torch_module

    settings = _settings(spec)
    target_name, query_name = spec.models
    target_key, query_key = spec.keys
    trained: dict[str, Model] = {}
    for name in dict.fromkeys(spec.models):
        trained[name], _ = fresh_model(ctx, name)
    target_model, query_model = trained[target_name], trained[query_name]
    modules = list({id(m.object): torch_module(m) for m in trained.values()}.values())
    device = resolve_device(target_model.device)
    for module in modules:
        module.to(device)
    splitter = load_callable(ctx, "splitters", spec.splitter) if spec.splitter else None
    extract, projection = data.pair_extractor(ctx, query_key, target_key, splitter)
    query = load_filter(spec.filter)
    validations = data.load_validation(ctx, list(spec.validation_sets), query, extract, projection)
    exclude = set().union(*(v.source_ids for v in validations)) if validations else set()
    train = data.TrainingData(ctx, query, projection, extract, exclude=exclude, chunk_size=settings.chunk_size,
                              seed=settings.seed)
    metric_fns = resolve_metrics(ctx, spec.metrics, retrieval=True)
    loss_fn = resolve_loss(ctx, spec.loss, "contrastive", spec.measure)
    ctx.log(f"training index {spec.name!r} (models {list(dict.fromkeys(spec.models))}) on {train.count} documents; "
            "validation: " + (", ".join(f"{v.name} ({len(v)})" for v in validations) or "none"))

    def evaluate() -> dict[str, float]:
        out: dict[str, float] = {}
        for v in validations:
            out.update(_prefixed(v, evaluate_retrieval(query_model, target_model, v.examples, spec.measure, metric_fns,
                                                       spec.n_retrieve, loss_fn, settings.batch_size, device)))
        return out

    before = evaluate() if validations else {}
    if before:
        ctx.log("before training: " + ", ".join(f"{k}={v:.4g}" for k, v in before.items()))
        reporter.validation(0, 0, before)
    parameters = [p for module in modules for p in module.parameters()]
    loop = TrainLoop(settings, parameters, modules=modules, reporter=reporter,
                     batches=lambda epoch: train.batches(epoch, settings.batch_size, drop_last=2),
                     step=contrastive_step(query_model, target_model, loss_fn, device),
                     validate=evaluate if validations else None,
                     steps_per_epoch=max(1, math.ceil(train.count / settings.batch_size)))
    result = loop.run()
    return trained, {**result.best, **{f"before/{k}": v for k, v in before.items()}}


# -- saving versions ------------------------------------------------------------------------------
def save_version(ctx: Context, name: str, model: Model, metrics: dict, job_id: str, spec: TrainSpec) -> int:
    """Store ``model`` as the next version of ``name`` (not serving yet); return its number."""
    row = ctx.metadata.get("models", name)
    ref = ctx.artifacts.put(model, row["artifact"].get("serializer"), name=f"models/{name}")
    for _ in range(10):  # a concurrent training may take the same number: retry with the next one
        row = ctx.metadata.get("models", name)
        version = max([v["version"] for v in row.get("versions", [])] + [row.get("version", 0)]) + 1
        entry = {"version": version, "artifact": ctx.artifacts.sign(ref, name=f"models/{name}", version=version),
                 "created_at": utcnow(), "metrics": finite(metrics),
                 "job_id": job_id, "parent": row.get("version"), "trained_by": {spec.kind: spec.name}}
        done = ctx.metadata.table("models").update_one({"name": name, "versions.version": {"$ne": version}},
                                                       {"$push": {"versions": entry}})
        if done.modified_count:
            return version
    raise TrainingError(f"Could not store a new version of model {name!r}: too many concurrent trainings.", model=name)


@job_kind("train")
def train(ctx: Context, job_id: str, spec: TrainSpec) -> dict:
    """Train what ``spec`` describes and store the result as new versions (see the module docstring)."""
    start = time.perf_counter()
    settings = _settings(spec)  # validates the options before any work
    stride = max(1, (settings.n_iterations or 0) // MAX_STEP_ENTRIES)
    reporter = JobReporter(ctx, job_id, stride=stride)
    trainer = {"imputation": train_imputation, "semantic_index": train_semantic_index}[spec.kind]
    try:
        trained, metrics = trainer(ctx, job_id, spec, reporter)
        reporter.flush()  # last metrics, and a last look at the record: cancelled now means no new version
    except TrainingCancelled:
        ctx.log("training cancelled; no new version was stored")
        raise
    for model in trained.values():
        if model.kind == "torch":
            model.object.to("cpu")  # stored on the CPU: workers without the training's device can load it
    versions = {name: save_version(ctx, name, model, metrics, job_id, spec) for name, model in trained.items()}
    seconds = time.perf_counter() - start
    ctx.log(f"stored {', '.join(f'{n} version {v}' for n, v in versions.items())} in {seconds:.2f} s")
    return {"versions": versions, "metrics": finite(metrics), "seconds": seconds}
