"""Training on the cluster (client side): imputations, semantic-index training, metrics,
losses, splitters, validation sets and model versions.

Registrations live beside the data, as in the original SuperDuperDB:

* ``<coll>._metrics``, ``._losses``, ``._splitters``: ``{name, artifact, class}``
  (the callable is an artifact in GridFS);
* ``<coll>._validation_sets``: ``{name, filter, fold, sample_size, size}``, and
  the frozen copies of the sampled documents in ``<coll>._validation_data``
  (``_validation_set``, ``_source_id`` added), so metrics stay comparable
  across versions however the collection changes;
* ``<coll>._imputations``: the supervised trainings (model, key, target, ...).

A training submits three kinds of jobs: ``train`` (stores a new, not yet
serving version), ``promote`` (depends on it: recompute outputs with the new
version, then switch the model, its outputs and its indexes; see
:mod:`superduperdb.tasks.versions`), and the recompute of watchers downstream
of the model (depending on ``promote``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from ..errors import (
    AlreadyRegisteredError,
    InUseError,
    ModelError,
    NotRegisteredError,
    QueryError,
    TrainingError,
    unknown_name,
)
from ..index.measures import MEASURES
from ..jobs.handles import Job, JobGroup
from ..models.composite import is_composite
from ..store import folds
from ..store.watchers import active_watchers, downstream, dump_filter, topological, watcher_name
from ..training import metrics as M
from ..training.loop import TrainSettings

if TYPE_CHECKING:
    from ..jobs.service import JobService
    from .indexes import IndexService
    from .scope import Scope

CALLABLES = {"metrics": "metric", "losses": "loss", "splitters": "splitter"}
IMPUTATIONS = "_imputations"
VALIDATION_DATA = "_validation_data"


def check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or not name or "." in name or "/" in name or name.startswith("$"):
        raise TrainingError(f"{what} names must be non-empty strings without '.', '/' or a leading '$', not {name!r}.")
    return name


def check_trainable(row: dict, name: str) -> None:
    """Refuse to train a model that stores no object of its own (an attribute model, or one assembled from parts)."""
    if is_composite(row.get("artifact") or {}):
        what = (f"an attribute of model {row['parent']!r}: train {row['parent']!r}, and {name!r} follows its versions"
                if row.get("parent") else "assembled from registered parts: train a model registered with its object")
        raise TrainingError(f"Model {name!r} is {what}.", model=name)


def settings_from(kwargs: dict) -> dict:
    """Trainer keyword arguments, checked (unknown names are refused with a suggestion)."""
    allowed = set(TrainSettings.__dataclass_fields__)
    for key in kwargs:
        if key not in allowed:
            raise TrainingError(unknown_name("training option", key, allowed))
    TrainSettings(**kwargs)  # validates values now, not on the worker
    return dict(kwargs)


class VersionTable(list):
    """``list_model_versions`` result: a list of dicts with a table in notebooks."""

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f"<tr><td>{v['version']}{' (serving)' if v['serving'] else ''}</td><td>{html.escape(str(v['created_at']))}</td>"
            f"<td>{html.escape(', '.join(f'{k}={x:.4g}' if isinstance(x, float) else f'{k}={x}' for k, x in (v['metrics'] or {}).items()))}</td></tr>"
            for v in self)
        return f"<table><tr><th>version</th><th>created</th><th>metrics</th></tr>{rows}</table>"


class TrainingService:
    def __init__(self, scope: Scope, jobs: JobService, indexes: IndexService) -> None:
        self.scope = scope
        self.metadata = scope.metadata
        self.artifacts = scope.artifacts
        self.jobs = jobs
        self.indexes = indexes

    @property
    def imputations(self) -> Any:
        return self.scope.table(IMPUTATIONS)

    @property
    def validation_data(self) -> Any:
        return self.scope.table(VALIDATION_DATA)

    # -- metrics, losses, splitters --------------------------------------------------------------
    def create_callable(self, kind: str, name: str, obj: Any, serializer: str | None = None) -> dict:
        check_name(CALLABLES[kind], name)
        builtin = M.is_builtin(name) if kind == "metrics" else kind == "losses" and name in builtin_losses()
        if builtin:
            raise TrainingError(f"{name!r} is a built-in {CALLABLES[kind]}; choose another name.")
        if not callable(obj):
            raise TrainingError(f"A {CALLABLES[kind]} must be callable, not a {type(obj).__name__}.")
        if self.metadata.exists(kind, name):
            raise AlreadyRegisteredError(CALLABLES[kind], name)
        from ..models.base import class_path

        ref = self.artifacts.put(obj, serializer, name=f"{kind}/{name}")
        return self.metadata.insert(kind, {"name": name, "artifact": ref, "class": class_path(obj)})

    def list_callables(self, kind: str) -> list[str]:
        builtins = {"metrics": [m for m in M.BUILTIN_METRICS if m != "recall@k"] + ["recall@10"],
                    "losses": list(builtin_losses()), "splitters": []}[kind]
        return sorted(set(builtins) | set(self.metadata.names(kind)))

    def load_callable(self, kind: str, name: str) -> Any:
        """The metric, loss or splitter ``name``: a built-in one, or the registered callable."""
        if kind == "metrics" and M.is_builtin(name):
            return M.get_builtin(name)
        if kind == "losses" and name in builtin_losses():
            from ..training.losses import get_builtin

            return get_builtin(name)
        row = self.metadata.get(kind, name)
        return self.artifacts.get(row["artifact"], (f"{kind}/{name}", None))

    def delete_callable(self, kind: str, name: str, force: bool = False) -> None:
        self.metadata.get(kind, name)
        field = {"metrics": "metrics", "losses": "loss", "splitters": "splitter"}[kind]
        users = [f"imputation {r['name']!r}" for r in self.imputations.find({}, {"name": 1, field: 1})
                 if name == r.get(field) or (isinstance(r.get(field), list) and name in r[field])]
        if users and not force:
            raise InUseError(CALLABLES[kind], name, users)
        self.metadata.delete(kind, name)

    # -- validation sets -------------------------------------------------------------------------
    def create_validation_set(self, name: str, filter: Mapping | None = None, *, sample_size: int | None = None,
                              fold: str | None = "valid", seed: int | None = 0) -> dict:
        check_name("Validation set", name)
        if self.metadata.exists("validation_sets", name):
            raise AlreadyRegisteredError("validation set", name)
        if filter is not None and not isinstance(filter, Mapping):
            raise QueryError(f"filter must be a dict (a MongoDB query), not {filter!r}.", argument="filter")
        if sample_size is not None and (isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1):
            raise TrainingError(f"sample_size must be a positive integer or None, not {sample_size!r}.")
        encoded = self.scope.query(filter)
        # Validation sets are for training, which needs the split: documents without a _fold get one
        # now (kept from then on), whichever fold this set samples.
        folds.ensure(self.scope.raw, self.scope.config)
        query = {"$and": [encoded, {"_fold": fold}]} if fold and encoded else ({"_fold": fold} if fold else encoded)
        rng = random.Random(seed)
        sample: list[dict] = []
        for i, doc in enumerate(self.scope.raw.find(query)):
            if sample_size is None or len(sample) < sample_size:
                sample.append(doc)
            else:  # reservoir sampling: one pass, at most sample_size documents in memory
                j = rng.randint(0, i)
                if j < sample_size:
                    sample[j] = doc
        if not sample:
            where = f" in fold {fold!r}" if fold else ""
            raise TrainingError(f"No documents match {filter or {}!r}{where}, so the validation set would be empty. "
                                "Documents get '_fold' ('train' or 'valid', see data.valid_probability) when training "
                                "or a validation set first needs it; fold=None samples from every document.")
        copies = [{**doc, "_id": ObjectId(), "_source_id": doc["_id"], "_validation_set": name} for doc in sample]
        for start in range(0, len(copies), 1000):
            self.validation_data.insert_many(copies[start:start + 1000])
        return self.metadata.insert("validation_sets", {"name": name, "filter": dump_filter(filter), "fold": fold,
                                                        "sample_size": sample_size, "size": len(copies)})

    def delete_validation_set(self, name: str, force: bool = False) -> None:
        self.metadata.get("validation_sets", name)
        users = [f"imputation {r['name']!r}" for r in self.imputations.find({"validation_sets": name}, {"name": 1})]
        if users and not force:
            raise InUseError("validation set", name, users)
        self.validation_data.delete_many({"_validation_set": name})
        self.metadata.delete("validation_sets", name)

    def validation_set(self, name: str) -> list[dict]:
        self.metadata.get("validation_sets", name)
        return [self.scope.types.decode(d) for d in self.validation_data.find({"_validation_set": name})]

    # -- imputations -----------------------------------------------------------------------------
    def create_imputation(self, name: str, model: str, key: str, target: str | Mapping, *,
                          filter: Mapping | None = None, features: Mapping | None = None, loss: str | None = None,
                          metrics: list[str] = (), validation_sets: list[str] = (), watch: bool = True,
                          fit_kwargs: dict | None = None, **trainer: Any) -> JobGroup:
        check_name("Imputation", name)
        if self.imputations.count_documents({"name": name}, limit=1):
            raise AlreadyRegisteredError("imputation", name)
        row = self.metadata.get("models", model)
        check_trainable(row, model)
        if row.get("kind") not in ("sklearn", "torch"):
            raise TrainingError(f"Model {model!r} is a {row.get('kind')!r} model; only scikit-learn estimators and "
                                "torch modules can be trained.", model=model)
        if not isinstance(key, str) or not key or key.startswith("$") or key.startswith("_outputs"):
            raise ModelError(f"key must be a field name (or '_base' for the whole document), not {key!r}.")
        if isinstance(target, Mapping):
            if len(target) != 1:
                raise TrainingError(f"target must be a field name or {{key: model}} (one model's output), not {target!r}.")
            (tkey, tmodel), = target.items()
            self.metadata.get("models", tmodel, hint=f"target={dict(target)!r} names an unknown model.")
            target = {str(tkey): str(tmodel)}
        elif not isinstance(target, str) or not target:
            raise TrainingError(f"target must be a field name or {{key: model}}, not {target!r}.")
        features = dict(features or {})
        for fmodel in features.values():
            self.metadata.get("models", fmodel, hint=f"features names an unknown model {fmodel!r}.")
        check_known(self.metadata, metrics=metrics, losses=[loss] if loss else [], validation_sets=validation_sets)
        spec = {"name": name, "model": model, "key": key, "target": target, "features": features,
                "filter": dump_filter(self.scope.query(filter)), "loss": loss, "metrics": list(metrics),
                "validation_sets": list(validation_sets), "trainer": settings_from(trainer),
                "fit_kwargs": dict(fit_kwargs or {}), "watcher": watcher_name(model, key) if watch else None}
        if watch and not self.metadata.exists("watchers", spec["watcher"]):
            self.awaiting_watcher(model, key, filter, features)
        self.imputations.insert_one(dict(spec))
        return self.train_imputation(name)

    def awaiting_watcher(self, model: str, key: str, filter: Mapping | None, features: dict) -> dict:
        """An inactive watcher that the first successful training activates (``promote``).

        Stored directly rather than through ``create_watcher``, which refuses an
        unfitted estimator: this watcher computes nothing before it is trained.
        """
        if filter is not None and not isinstance(filter, Mapping):
            raise QueryError(f"filter must be a dict (a MongoDB query), not {filter!r}.", argument="filter")
        row = {"name": watcher_name(model, key), "model": model, "key": key, "filter": dump_filter(filter),
               "features": features, "active": False, "awaiting_training": True}
        topological([*self.metadata.list("watchers"), row])  # refuse cycles before storing anything
        return self.metadata.insert("watchers", row)

    def get_imputation(self, name: str) -> dict:
        row = self.imputations.find_one({"name": name}, {"_id": 0})
        if row is None:
            raise NotRegisteredError("imputation", name, self.list_imputations())
        return row

    def list_imputations(self) -> list[str]:
        return sorted(r["name"] for r in self.imputations.find({}, {"name": 1}))

    def delete_imputation(self, name: str) -> None:
        self.get_imputation(name)
        self.imputations.delete_one({"name": name})

    def train_imputation(self, name: str, **overrides: Any) -> JobGroup:
        from ..tasks.training import TrainSpec

        row = self.get_imputation(name)
        trainer = {**row["trainer"], **settings_from(overrides)}
        spec = TrainSpec(kind="imputation", name=name, models=(row["model"],), keys=(row["key"],),
                         features=row["features"], target=row["target"], filter=row["filter"], loss=row["loss"],
                         metrics=tuple(row["metrics"]), validation_sets=tuple(row["validation_sets"]),
                         settings=trainer, fit_kwargs=row.get("fit_kwargs") or {})
        return self.submit_training(spec, {"imputation": name})

    # -- semantic indexes --------------------------------------------------------------------------
    def train_semantic_index(self, name: str, *, splitter: str | None = None, loss: str | None = None,
                             metrics: list[str] = ("recall@10", "mrr"), validation_sets: list[str] = (),
                             filter: Mapping | None = None, n_retrieve: int = 100, **trainer: Any) -> JobGroup:
        from ..tasks.training import TrainSpec

        index = self.indexes.get(name)
        if index["measure"] not in MEASURES:
            raise TrainingError(f"Index {name!r} uses the custom measure {index['measure']!r}: contrastive training "
                                f"and its validation rank with a built-in measure ({', '.join(MEASURES)}). Train an "
                                "index with a built-in measure over the same models; validate_semantic_index works "
                                "with custom measures.")
        models, keys = list(index["models"]), list(index["keys"])
        if splitter is not None:
            check_known(self.metadata, splitters=[splitter])
            models, keys = [models[0], models[0]], [keys[0], keys[0]]
        elif len(models) < 2:
            raise TrainingError(f"Index {name!r} has one model/key: give a splitter (create_splitter) to split each "
                                "document into a query and a target, or create the index with a query model and key.")
        for m in set(models[:2]):
            check_trainable(self.metadata.get("models", m), m)
            if self.metadata.get("models", m).get("kind") != "torch":
                raise TrainingError(f"Model {m!r} of index {name!r} is not a torch module: only torch encoders are "
                                    "trained contrastively.", model=m)
        check_known(self.metadata, metrics=metrics, losses=[loss] if loss else [], validation_sets=validation_sets)
        spec = TrainSpec(kind="semantic_index", name=name, models=(models[0], models[1]), keys=(keys[0], keys[1]),
                         filter=dump_filter(self.scope.query(filter)), loss=loss, metrics=tuple(metrics),
                         validation_sets=tuple(validation_sets), splitter=splitter, measure=index["measure"],
                         n_retrieve=int(n_retrieve), settings=settings_from(trainer))
        return self.submit_training(spec, {"semantic_index": name})

    # -- versions ----------------------------------------------------------------------------------
    def list_model_versions(self, name: str) -> VersionTable:
        row = self.metadata.get("models", name)
        return VersionTable(
            {"version": v["version"], "serving": v["version"] == row.get("version"), "created_at": v.get("created_at"),
             "metrics": v.get("metrics") or {}, "job_id": v.get("job_id"), "parent": v.get("parent"),
             "trained_by": v.get("trained_by")}
            for v in row.get("versions", []))

    def restore_model_version(self, name: str, version: int) -> JobGroup:
        from ..tasks.versions import PromoteSpec

        row = self.metadata.get("models", name)
        known = [v["version"] for v in row.get("versions", [])]
        if version not in known:
            raise ModelError(f"Model {name!r} has no version {version!r}; versions: {known}.", model=name)
        promote = self.jobs.submit("promote", {"spec": PromoteSpec(versions={name: version})},
                                               record={"model": name, "versions": {name: version}})
        return JobGroup([promote, *self._after_promote({name}, promote)])

    # -- jobs --------------------------------------------------------------------------------------
    def submit_training(self, spec: Any, record: dict, kind: str = "train") -> JobGroup:
        """The jobs of one training: ``kind`` (a ``train`` or ``learn`` job for ``spec``), then ``promote``
        (the new versions), then what is downstream of the models' outputs."""
        from ..tasks.versions import PromoteSpec

        jobs = self.jobs
        models = list(dict.fromkeys(spec.models))
        requested: dict = {}  # what the models' jobs request (GPU=1 ...): training them needs it too
        for model in models:
            requested.update((self.metadata.find_one("models", model) or {}).get("resources") or {})
        train = jobs.submit(kind, {"spec": spec}, record={"model": models[0], "models": models, "metrics": [],
                                                             **record}, resources=requested or None)
        promote = jobs.submit("promote", {"spec": PromoteSpec(from_job=train.id)}, depends_on=[train],
                              record={"model": models[0], "models": models, "training_job": train.id})
        return JobGroup([train, promote, *self._after_promote(set(models), promote)])

    def _after_promote(self, models: set[str], promote: Job) -> list[Job]:
        """Recompute watchers downstream of the models' outputs, then their indexes and neighbourhoods."""
        rows = active_watchers(self.metadata)
        own = {r["name"] for r in rows if r["model"] in models}
        # attribute models (parent.attr) follow their parent's promotion: their watchers recompute too
        attributes = set(self.metadata.names("models", {"parent": {"$in": sorted(models)}}))
        own_attributes = {r["name"] for r in rows if r["model"] in attributes}
        out = list(self.jobs.submit_watchers(None, downstream(rows, own | own_attributes) - own, after=[promote]))
        for index in self.metadata.list("semantic_indexes"):
            if models & set(index.get("models", [])):
                out += self.jobs.neighbourhood_jobs(index["name"], None, [promote])
        return out


def builtin_losses() -> tuple[str, ...]:
    """The names of the built-in losses."""
    from ..training.losses import BUILTIN_LOSSES

    return BUILTIN_LOSSES


def check_known(metadata: Any, *, metrics: Any = (), losses: Any = (), validation_sets: Any = (),
                splitters: Any = ()) -> None:
    """The one check that what a training or validation names exists: every metric and loss built in
    or registered, every validation set and splitter registered (else :class:`NotRegisteredError`
    naming the first that is not, and how to register it)."""
    metadata.check_registered("metrics", metrics, M.is_builtin)
    metadata.check_registered("losses", losses, lambda name: name in builtin_losses())
    metadata.check_registered("validation_sets", validation_sets)
    metadata.check_registered("splitters", splitters)
