"""Registering, loading, applying and deleting models (client side).

A model row in ``<coll>._models``::

    {name, version, versions: [{version, artifact, created_at, metrics}],
     artifact, kind, class, method, batch_size, device, type}

The stored artifact is the :class:`~superduperdb.models.base.Model` wrapper
(object plus pre/post-processing), so a worker gets everything it needs.
Attribute models (``parent.attr``) and models assembled from registered
parts store a composite reference instead (:mod:`superduperdb.models.composite`),
and name where they come from: ``parent``/``attribute``, or ``parts``
(``{preprocessor, forward, postprocessor}``). An attribute model serves its
parent's version (``version``), and follows it when the parent is retrained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import AlreadyRegisteredError, InUseError, ModelError, QueryError
from ..models.base import Model
from ..models.composite import check_part, composite_ref
from ..models.resources import model_resources
from ..store.layout import MISSING, model_input
from ..store.metadata import utcnow
from ..store.models import load_model
from ..types.registry import drop_unreferenced

if TYPE_CHECKING:
    from ..jobs.handles import Job, JobGroup
    from ..jobs.service import JobService
    from .indexes import IndexService
    from .scope import Scope
    from .watchers import WatcherService


class ModelService:
    def __init__(self, scope: Scope, watchers: WatcherService, indexes: IndexService, jobs: JobService) -> None:
        self.scope = scope
        self.metadata = scope.metadata
        self.artifacts = scope.artifacts
        self.watchers = watchers
        self.indexes = indexes
        self.jobs = jobs

    def check_new(self, name: str, object: Any = None, *, preprocess=None, postprocess=None, type: str | None = None,
                  batch_size: int = 32, device: Any = None, method: str | None = None,
                  method_kwargs: dict | None = None, preprocessor: str | None = None, forward: str | None = None,
                  postprocessor: str | None = None, resources: Mapping | None = None) -> tuple[Model | None, dict]:
        """Validate a new model (nothing is stored); return the wrapper and its row (without artifact).

        A model assembled from registered parts, or an attribute model
        ``parent.attr``, has no wrapper (None): its row says what to assemble
        (:meth:`register` does).
        """
        if not isinstance(name, str) or not name or "/" in name or name.startswith("$") or ".." in name \
                or name.startswith(".") or name.endswith("."):
            raise ModelError(f"Model names must be non-empty strings without '/' or a leading '$' ('parent.attr' "
                             f"names an attribute of a registered model), not {name!r}.")
        if self.metadata.exists("models", name):
            raise AlreadyRegisteredError("model", name)
        if type is not None:
            if not isinstance(type, str):
                raise ModelError(f"type must be the name of a type (a str), not {type!r}.", argument="type")
            self.scope.types.get(type)  # NotRegisteredError now, not on the worker
        for hook, given, part in (("preprocess", preprocess, preprocessor), ("postprocess", postprocess, postprocessor)):
            if part is not None and given is not None:
                raise ModelError(f"Give {hook}= (a callable) or {hook}or= (a registered part's name), not both.",
                                 model=name)
        parent = name.split(".", 1)[0] if "." in name else None
        if parent is not None or forward is not None or preprocessor is not None or postprocessor is not None:
            if parent is not None and (object is not None or forward is not None):
                raise ModelError(f"{name!r} names the attribute {name.split('.', 1)[1]!r} of model {parent!r}: "
                                 "give no object or forward (it is resolved on the parent).", model=name)
            if forward is not None and object is not None:
                raise ModelError("Give object= or forward= (a registered forward's name), not both.", model=name)
            if preprocess is not None or postprocess is not None:
                raise ModelError("With registered parts, give the processors as parts too: "
                                 "preprocessor='name' / postprocessor='name' (create_preprocessor).", model=name)
            options = {"batch_size": batch_size, "device": None if device is None else str(device), "method": method,
                       "method_kwargs": dict(method_kwargs) if method_kwargs else None}
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ModelError(f"batch_size must be a positive integer, got {batch_size!r}.", model=name,
                                 argument="batch_size")
            if parent is not None:
                self.metadata.get("models", parent, hint=f"{name!r} is an attribute of model {parent!r}, "
                                                         "which must be registered first.")
            self._part("preprocessors", preprocessor)
            self._part("postprocessors", postprocessor)
            self._part("forwards", forward)
            if object is not None:
                check_part("forward", object)
            if parent is not None:  # an attribute of a model on a GPU runs where its parent does
                requests = dict(self.metadata.get("models", parent).get("resources") or {})
            else:
                requests = model_resources(object, device, resources) or {}
            return None, {"name": name, "type": type, **({"resources": requests} if requests else {}), "composite": {
                "object": object, "parent": parent, "forward": forward, "preprocessor": preprocessor,
                "postprocessor": postprocessor, "options": options}}
        if object is None:
            raise ModelError(f"create_model({name!r}) needs the model object (or forward='<registered forward>', or "
                             "a name 'parent.attr' for an attribute of a registered model).", model=name)
        requests = model_resources(object, device, resources)  # ModelError now, before anything is stored
        model = Model(object, preprocess=preprocess, postprocess=postprocess, batch_size=batch_size,
                      device=device, method=method, method_kwargs=method_kwargs, name=name)
        description = model.describe()  # validates the object, batch_size, method, hooks
        row = {"name": name, "version": 1, "type": type, **_plain(description)}
        if requests:
            row["resources"] = requests  # what its jobs request (GPU=1 ...)
        return model, row

    def create(self, name: str, object: Any = None, *, preprocess=None, postprocess=None, type: str | None = None,
               batch_size: int = 32, device: Any = None, method: str | None = None,
               serializer: str | None = None, preprocessor: str | None = None, forward: str | None = None,
               postprocessor: str | None = None, method_kwargs: dict | None = None,
               resources: Mapping | None = None) -> dict:
        model, row = self.check_new(name, object, preprocess=preprocess, postprocess=postprocess, type=type,
                                    batch_size=batch_size, device=device, method=method, method_kwargs=method_kwargs,
                                    preprocessor=preprocessor, forward=forward, postprocessor=postprocessor,
                                    resources=resources)
        return self.register(model, row, serializer)

    def register(self, model: Model | None, row: dict, serializer: str | None = None) -> dict:
        """Store a model checked by :meth:`check_new`: its artifact and its row, or neither."""
        composite = row.get("composite")
        if composite is not None:
            return self._create_composite(row["name"], composite["object"], composite["parent"], composite["forward"],
                                          composite["preprocessor"], composite["postprocessor"],
                                          composite["options"], row["type"], serializer, row.get("resources"))
        ref = self.artifacts.put(model, serializer, name=f"models/{row['name']}", version=1)
        row = {**row, "artifact": ref, "versions": [{"version": 1, "artifact": ref, "created_at": utcnow(), "metrics": {}}]}
        try:
            return self.metadata.insert("models", row)
        except BaseException:  # the row was not written (a single insert): the artifact goes too
            drop_unreferenced(self.metadata, self.artifacts, ref)
            raise

    def unregister(self, name: str) -> None:
        """Undo :meth:`register` (a later step of the same call failed): the row, and the artifact
        unless something else stores the same bytes."""
        row = self.metadata.find_one("models", name)
        self.metadata.delete("models", name)
        if row is not None:
            drop_unreferenced(self.metadata, self.artifacts, row["artifact"])

    def _create_composite(self, name: str, object: Any, parent: str | None, forward: str | None,
                          preprocessor: str | None, postprocessor: str | None, options: dict, type: str | None,
                          serializer: str | None, resources: dict | None = None) -> dict:
        pre = self._part("preprocessors", preprocessor)
        post = self._part("postprocessors", postprocessor)
        extra: dict = {"parts": {"preprocessor": preprocessor, "forward": forward, "postprocessor": postprocessor}}
        version = 1
        if parent is not None:
            parent_row = self.metadata.get("models", parent, hint=f"{name!r} is an attribute of model {parent!r}, "
                                                                  "which must be registered first.")
            if parent_row.get("parent"):
                raise ModelError(f"{parent!r} is itself an attribute model; name the attribute from its root "
                                 f"{parent_row['parent']!r} instead.", model=name)
            base, attribute, version = parent_row["artifact"], name.split(".", 1)[1], parent_row.get("version", 1)
            extra = {**extra, "parent": parent, "attribute": attribute}
        elif forward is not None:
            base, attribute = self._part("forwards", forward), None
        else:
            check_part("forward", object)
            base, attribute = self.artifacts.put(object, serializer, name=f"models/{name}", version=1), None
        ref = self.artifacts.sign(composite_ref(forward=base, attribute=attribute, preprocess=pre, postprocess=post,
                                                options=options, name=name), name=f"models/{name}", version=version)
        description = self.artifacts.get(ref).describe()  # resolves it now: a missing attribute fails here
        row = {"name": name, "version": version, "artifact": ref, "type": type, **_plain(description), **extra,
               "versions": [{"version": version, "artifact": ref, "created_at": utcnow(), "metrics": {}}]}
        if resources:
            row["resources"] = resources  # what its jobs request (GPU=1 ...)
        return self.metadata.insert("models", row)

    def _part(self, kind: str, name: str | None) -> dict | None:
        return None if name is None else self.metadata.get(kind, name)["artifact"]

    def ensure(self, name: str) -> dict:
        """The row of model ``name``; an unregistered ``parent.attr`` of a registered parent is registered now."""
        row = self.metadata.find_one("models", name)
        if row is not None:
            return row
        if isinstance(name, str) and "." in name and self.metadata.exists("models", name.split(".", 1)[0]):
            try:
                return self.create(name)
            except AlreadyRegisteredError:  # registered concurrently
                return self.metadata.get("models", name)
        return self.metadata.get("models", name)

    # -- parts ------------------------------------------------------------------------------------
    def create_part(self, kind: str, name: str, obj: Any, serializer: str | None = None) -> dict:
        singular = kind[:-1]
        if not isinstance(name, str) or not name or "." in name or "/" in name or name.startswith("$"):
            raise ModelError(f"{singular.capitalize()} names must be non-empty strings without '.', '/' or a "
                             f"leading '$', not {name!r}.")
        if self.metadata.exists(kind, name):
            raise AlreadyRegisteredError(singular, name)
        check_part(singular, obj)
        from ..models.base import class_path

        ref = self.artifacts.put(obj, serializer, name=f"{kind}/{name}")
        return self.metadata.insert(kind, {"name": name, "artifact": ref, "class": class_path(obj)})

    def delete_part(self, kind: str, name: str, force: bool = False) -> None:
        """Delete a registered part; refused while a model is assembled from it, unless ``force``
        (which deletes those models too, as :meth:`delete` with ``force``)."""
        singular = kind[:-1]
        self.metadata.get(kind, name)
        users = self.metadata.list("models", {f"parts.{singular}": name})
        if users and not force:
            raise InUseError(singular, name, [f"model {m['name']!r}" for m in users])
        for model in users:
            if self.metadata.exists("models", model["name"]):
                self.delete(model["name"], force=True)
        self.metadata.delete(kind, name)

    def load(self, name: str, version: int | None = None) -> Model:
        return load_model(self.metadata, self.artifacts, name, version)

    def users(self, name: str) -> list[str]:
        users = [f"attribute model {m['name']!r}" for m in self.metadata.list("models", {"parent": name})]
        users += [f"watcher {w['name']!r}" for w in self.metadata.list("watchers", {"model": name})]
        users += [f"watcher {w['name']!r} (features)" for w in self.metadata.list("watchers")
                  if name in (w.get("features") or {}).values()]
        users += [f"semantic index {s['name']!r}" for s in self.metadata.list("semantic_indexes") if name in s.get("models", [])]
        return users

    def delete(self, name: str, force: bool = False) -> None:
        """Delete a model. Refused while watchers or semantic indexes use it; ``force=True``
        deletes them too (with their outputs), so nothing serves what the model computed."""
        self.metadata.get("models", name)
        users = self.users(name)
        if users and not force:
            raise InUseError("model", name, users)
        for index in self.metadata.list("semantic_indexes"):
            if name in index.get("models", []):
                self.indexes.delete(index["name"], force=True)
        for attribute in self.metadata.list("models", {"parent": name}):
            self.delete(attribute["name"], force=True)
        for w in self.metadata.list("watchers"):
            uses = w["model"] == name or name in (w.get("features") or {}).values()
            if uses and self.metadata.exists("watchers", w["name"]):
                self.watchers.delete(w["name"], force=True)
        self.metadata.delete("models", name)

    def apply_batch(self, name: str, key: Any, filter: Any, write: bool, wait: bool, timeout: float | None,
                    progress: bool | None, registered_only: bool = False) -> Job | JobGroup | tuple[list, list]:
        """``apply_model(name, filter=..., key=..., write=...)``: ``apply`` jobs on the cluster, one per
        ``_id`` range (:meth:`partitions`: one per worker, each at least ``jobs.chunk_size`` documents).

        ``write=True``: the job, or the :class:`JobGroup` of the partitions' jobs when split (waited for
        if ``wait``). ``write=False``: waits, and returns ``(ids, decoded outputs)`` read from the jobs'
        parts (then deleted), in partition order.
        """
        from bson import ObjectId

        from ..jobs.handles import JobGroup

        if key is None:
            raise QueryError("apply_model on the collection needs key= (the field to apply the model to), e.g. "
                             f"apply_model({name!r}, filter={{}}, key='text').", argument="key")
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise QueryError(f"key must be a field name such as 'text', not {key!r}.", argument="key")
        model_row = self.row(name, registered_only)  # NotRegisteredError here, not on a worker
        query = self.scope.query(filter)
        chunk_size = self.scope.config.jobs.chunk_size
        queries = self.partitions(query, chunk_size)
        group = JobGroup([self.jobs.submit("apply", {"model": name, "key": key, "filter": q, "write": bool(write),
                                                     "chunk_size": chunk_size},
                                           record={"model": name, "field": key, "write": bool(write),
                                                   "partition": k, "partitions": len(queries)},
                                           resources=model_row.get("resources"))  # a model on a GPU: a GPU worker
                          for k, q in enumerate(queries)])
        job = group[0] if len(group) == 1 else group
        if write:
            if wait:
                job.wait(timeout, progress=progress)
            return job
        table = self.scope.table("_applied")
        job_ids = [ObjectId(j.id) for j in group]
        try:
            job.wait(timeout, progress=progress)
            parts = sorted(table.find({"job": {"$in": job_ids}}),
                           key=lambda p: (job_ids.index(p["job"]), p["n"], p["part"]))
        except BaseException:
            for j in group:
                if not j.done():
                    j.cancel()
            raise
        finally:
            table.delete_many({"job": {"$in": job_ids}})
        ids = [i for p in parts for i in p["ids"]]
        return ids, [v for p in parts for v in self.scope.types.decode(p["outputs"])]

    def partitions(self, query: dict, chunk_size: int) -> list[dict]:
        """``query`` split into ``_id`` ranges, one per worker, each at least ``chunk_size`` documents
        (as ``to_dask`` reads): the partitions of a batch ``apply_model``, run at once on several workers."""
        from ..store.frames import partition_queries

        cluster = self.scope.cluster
        if cluster.inline:
            return [query]
        total = self.scope.raw.count_documents(query)
        parts = max(1, min(len(cluster.workers()), -(-total // max(chunk_size, 1))))
        if parts == 1:
            return [query]
        return partition_queries(self.scope.raw, query, -(-total // parts))

    def row(self, name: str, registered_only: bool = False) -> dict:
        """The row of model ``name``: :meth:`ensure` (``'parent.attr'`` registered on first use), or with
        ``registered_only`` only a registered one (:class:`NotRegisteredError` otherwise)."""
        return self.metadata.get("models", name) if registered_only else self.ensure(name)

    def apply(self, name: str, inputs: list, key: str | None = None, registered_only: bool = False) -> list:
        """The model's outputs on ``inputs``, or on each document's ``key`` (``'a.b'`` reads
        ``doc['a']['b']``, ``'_base'`` the whole document, as a watcher does); ``registered_only``:
        see :meth:`row`."""
        if isinstance(inputs, (str, bytes, Mapping)) or not isinstance(inputs, Iterable):
            raise ModelError(f"inputs must be a list of inputs (or of documents, with key=...), not "
                             f"{type(inputs).__name__}: use [x] for a single input.", model=name, argument="inputs")
        if key is not None and (not isinstance(key, str) or not key):
            raise ModelError(f"key must be a field name such as 'text' or 'a.b', not {key!r}.", model=name,
                             argument="key")
        self.row(name, registered_only)
        model = self.load(name)
        inputs = list(inputs)
        if key is not None:
            values = []
            for i, doc in enumerate(inputs):
                if not isinstance(doc, Mapping):
                    values.append(doc)
                    continue
                value = model_input(self.scope.types.decode(dict(doc)), key, {})
                if value is MISSING:
                    raise ModelError(f"inputs[{i}] has no field {key!r} (documents: {list(doc)[:10]}).", model=name,
                                     argument="key", index=i)
                values.append(value)
            inputs = values
        return model.predict(inputs)


def _plain(description: dict) -> dict:
    return {k: v for k, v in description.items() if k != "name"}
