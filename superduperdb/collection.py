"""The user facade: a pymongo-compatible collection that adds AI.

Every pymongo method a user relies on keeps pymongo's semantics and result
types (the results also carry ``.jobs``). Typed values (arrays, tensors,
images, user types) are encoded on the way in and decoded on the way out.
The facade delegates: types to :class:`~superduperdb.types.TypeRegistry`,
models and watchers to :mod:`superduperdb.models.registry`, jobs to
:mod:`superduperdb.jobs.service`, similarity search to :mod:`superduperdb.search`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo import ReturnDocument

from . import results
from .cursor import Cursor, substitute_features
from .errors import QueryError, suggest
from .store import ArtifactStore, MetadataStore
from .types import TypeRegistry

if TYPE_CHECKING:
    from .client import Database

logger = logging.getLogger(__name__)


def _check_filter(filter: Any, argument: str = "filter") -> dict:
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise QueryError(
            f"{argument} must be a dict such as {{'name': 'x'}} (a MongoDB query), not a "
            f"{type(filter).__name__}: {filter!r}. To find by id, use {{'_id': value}}.",
            argument=argument,
        )
    return dict(filter)


def _check_update(update: Any) -> Any:
    if isinstance(update, list):
        return update
    if not isinstance(update, Mapping) or not update:
        raise QueryError(
            f"update must be a non-empty dict of update operators such as {{'$set': {{'x': 1}}}}, not {update!r}.",
            argument="update",
        )
    if not all(str(k).startswith("$") for k in update):
        raise QueryError(
            f"update must only contain update operators ($set, $unset, $inc ...), got keys {list(update)}. "
            "To replace a whole document use replace_one(filter, replacement).",
            argument="update",
        )
    return dict(update)


class Collection:
    """A MongoDB collection with types, models, watchers, jobs and semantic search.

    Obtained from a database: ``client.my_db.my_collection`` or
    ``client["my_db"]["my_collection"]``.

    Examples
    --------
    >>> import numpy as np, superduperdb
    >>> docs = superduperdb.connect("mongomock://doctest", cluster=None).db.docs
    >>> _ = docs.insert_one({"x": np.arange(3)})
    >>> docs.find_one({}, {"_id": 0})["x"]
    array([0, 1, 2])
    """

    def __init__(self, database: Database, name: str) -> None:
        self._database = database
        self._raw = database._raw[name]
        self.name = name
        raw_db = database._raw
        self._metadata = MetadataStore(raw_db, name)
        self._artifacts = ArtifactStore(raw_db, name)
        self._types = TypeRegistry(
            self._metadata, self._artifacts, pickle_fallback=bool(database.client.config.types.pickle_fallback)
        )
        self._services: dict[str, Any] = {}

    # -- plumbing -------------------------------------------------------------------
    @property
    def database(self) -> Database:
        return self._database

    @property
    def full_name(self) -> str:
        return self._raw.full_name

    @property
    def raw(self):
        """The underlying pymongo (or mongomock) collection, without superduperdb."""
        return self._raw

    @property
    def _jobs(self):
        if "jobs" not in self._services:
            from .jobs.service import JobService

            self._services["jobs"] = JobService(self)
        return self._services["jobs"]

    @property
    def _models(self):
        from .services.models import ModelService

        return self._services.setdefault("models", ModelService(self))

    @property
    def _indexes(self):
        from .services.indexes import IndexService

        return self._services.setdefault("indexes", IndexService(self))

    @property
    def _watchers(self):
        from .services.watchers import WatcherService

        return self._services.setdefault("watchers", WatcherService(self))

    def __getitem__(self, name: str):
        """A sub-collection (``docs['_models']`` is ``docs._models``), raw pymongo."""
        return self._raw[name]

    def __getattr__(self, name: str) -> Any:
        raw = self.__dict__.get("_raw")
        if raw is not None and not name.startswith("_") and callable(getattr(type(raw), name, None)):
            return getattr(raw, name)
        public = [n for n in dir(type(self)) if not n.startswith("_")]
        raise AttributeError(
            f"Collection has no attribute {name!r}.{suggest(name, public)} "
            f"For a sub-collection use collection[{name!r}]."
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Collection) and other.full_name == self.full_name

    def __hash__(self) -> int:
        return hash(self.full_name)

    def __repr__(self) -> str:
        return f"Collection({self.full_name!r})"

    def _repr_html_(self) -> str:
        return f"<b>superduperdb Collection</b> <code>{self.full_name}</code>"

    def _query(self, filter: Any, argument: str = "filter") -> dict:
        """A checked and encoded filter of a read (its types are not marked as in use)."""
        return self._types.encode(_check_filter(filter, argument), argument, mark=False)

    def _decode(self, doc: dict | None) -> dict | None:
        return None if doc is None else self._types.decode(doc)

    def _transform(self, *, raw: bool = False, features: Mapping | None = None):
        def transform(doc: dict) -> dict:
            if not raw:
                doc = self._types.decode(doc)
            if features:
                doc = substitute_features(doc, features)
            return doc

        return transform

    # -- inserting ------------------------------------------------------------------
    def _prepare(self, document: Any, path: str) -> dict:
        if not isinstance(document, Mapping):
            raise QueryError(f"{path} must be a dict, not a {type(document).__name__}.", argument=path)
        if "_id" not in document and isinstance(document, dict):
            document["_id"] = ObjectId()  # pymongo sets _id on the caller's document too
        data = self._database.client.config.data
        if "_fold" not in document and isinstance(document, dict) and data.assign_folds:
            import random

            # The training/validation split of the original SuperDuperDB (see create_validation_set).
            document["_fold"] = "valid" if random.random() < float(data.valid_probability) else "train"
        return document

    def insert_one(self, document: dict, *args: Any, refresh: bool = True, **kwargs: Any) -> results.InsertOneResult:
        """Insert one document; its watchers' jobs start at once (``result.jobs``).

        ``refresh=False`` skips model processing, as in the original API.
        """
        self._prepare(document, "document")
        encoded = self._types.encode(document, "document")
        raw = self._raw.insert_one(encoded, *args, **kwargs)
        jobs = self._jobs.on_insert([raw.inserted_id], [encoded]) if refresh else None
        return results.InsertOneResult(raw.inserted_id, raw.acknowledged, jobs)

    def insert_many(
        self, documents: Iterable[dict], ordered: bool = True, *args: Any, refresh: bool = True, **kwargs: Any
    ) -> results.InsertManyResult:
        """Insert documents; watchers' jobs are submitted for all of them at once."""
        if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
            raise QueryError("documents must be a non-empty list of dicts.", argument="documents")
        documents = list(documents)
        if not documents:
            raise QueryError("documents must be a non-empty list of dicts.", argument="documents")
        for i, doc in enumerate(documents):
            self._prepare(doc, f"documents[{i}]")
        encoded = self._types.encode_many(documents)
        raw = self._raw.insert_many(encoded, ordered, *args, **kwargs)
        jobs = self._jobs.on_insert(list(raw.inserted_ids), encoded) if refresh else None
        return results.InsertManyResult(list(raw.inserted_ids), raw.acknowledged, jobs)

    # -- reading --------------------------------------------------------------------
    def find(
        self,
        filter: Mapping | None = None,
        projection: Any = None,
        *args: Any,
        like: Mapping | None = None,
        n: int = 10,
        semantic_index: str | None = None,
        similar_first: bool = False,
        raw: bool = False,
        features: Mapping[str, str] | None = None,
        similar_join: str | None = None,
        **kwargs: Any,
    ) -> Cursor:
        """Query the collection, as :meth:`pymongo.collection.Collection.find`.

        Parameters
        ----------
        filter, projection, *args, **kwargs
            As in pymongo. Typed values in the filter are encoded.
        like : dict, optional
            Semantic search: documents most similar to ``like`` (a document
            such as ``{'text': 'a query'}`` or ``{'_id': an_id}``), in order
            of similarity, each with ``_score``. The original form
            ``{'$like': {'document': ..., 'n': 10}}`` inside the filter works too.
        n : int
            How many similar documents ``like`` returns.
        semantic_index : str, optional
            The index to search (default: the collection's default index).
        similar_first : bool
            ``False`` (default): filter first, then similarity among the
            matches. ``True``: the ``n`` most similar, then the filter.
        raw : bool
            Return documents without decoding typed values.
        features : dict, optional
            ``{'x': 'model'}`` returns the stored output of ``model`` in
            place of the raw field ``x``.
        similar_join : str, optional
            A neighbourhood name: replace the ids at ``_like.<name>`` by the documents.

        Returns
        -------
        Cursor
        """
        filter = _check_filter(filter)
        if "$like" in filter:
            spec = filter.pop("$like")
            if not isinstance(spec, Mapping) or "document" not in spec:
                raise QueryError("$like must be {'document': {...}, 'n': 10}.", argument="$like")
            like, n = spec["document"], spec.get("n", n)
        if like is not None:
            from .search import find_like

            return find_like(
                self, filter, like, projection=projection, n=n, semantic_index=semantic_index,
                similar_first=similar_first, raw=raw, features=features, similar_join=similar_join,
            )
        source = self._raw.find(self._types.encode(filter, "filter", mark=False), projection, *args, **kwargs)
        transform = self._transform(raw=raw, features=features)
        if similar_join:
            from .search import join_neighbourhood

            transform = join_neighbourhood(self, similar_join, transform)
        return Cursor(source, transform, f"{self.full_name} filter={filter!r}")

    def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> dict | None:
        """The first document :meth:`find` would return, or ``None``."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}  # pymongo accepts a bare _id
        for doc in self.find(filter, *args, **kwargs).limit(-1 if "like" not in kwargs else 1):
            return doc
        return None

    def count_documents(self, filter: Mapping, **kwargs: Any) -> int:
        return self._raw.count_documents(self._query(filter), **kwargs)

    def estimated_document_count(self, **kwargs: Any) -> int:
        return self._raw.estimated_document_count(**kwargs)

    def distinct(self, key: str, filter: Mapping | None = None, **kwargs: Any) -> list:
        values = self._raw.distinct(key, self._query(filter), **kwargs)
        return [self._types.decode(v) for v in values]

    def aggregate(self, pipeline: list, *args: Any, raw: bool = False, **kwargs: Any) -> Cursor:
        """Run an aggregation pipeline; typed values in the output are decoded."""
        if not isinstance(pipeline, list):
            raise QueryError("pipeline must be a list of stages such as [{'$match': {...}}].", argument="pipeline")
        source = self._raw.aggregate(self._types.encode(pipeline, "pipeline"), *args, **kwargs)
        return Cursor(source, self._transform(raw=raw), f"{self.full_name} aggregate")

    # -- updating -------------------------------------------------------------------
    def _update(self, method: str, filter: Any, update: Any, refresh: bool, args, kwargs):
        filter = self._types.encode(_check_filter(filter), "filter")
        update = self._types.encode(_check_update(update), "update")
        plan = self._jobs.before_update(filter, update, many=(method == "update_many")) if refresh else None
        raw = getattr(self._raw, method)(filter, update, *args, **kwargs)
        jobs = self._jobs.after_update(plan, raw.upserted_id) if refresh else None
        return results.UpdateResult(results.update_raw(raw), raw.acknowledged, jobs)

    def update_one(self, filter: Mapping, update: Mapping, *args: Any, refresh: bool = True, **kwargs: Any):
        """As pymongo's; recomputes outputs if the update changes a watched key."""
        return self._update("update_one", filter, update, refresh, args, kwargs)

    def update_many(self, filter: Mapping, update: Mapping, *args: Any, refresh: bool = True, **kwargs: Any):
        """As pymongo's; recomputes outputs if the update changes a watched key."""
        return self._update("update_many", filter, update, refresh, args, kwargs)

    def replace_one(self, filter: Mapping, replacement: Mapping, *args: Any, refresh: bool = True, **kwargs: Any):
        """As pymongo's; recomputes the replaced document's outputs."""
        filter = self._types.encode(_check_filter(filter), "filter")
        if not isinstance(replacement, Mapping) or any(str(k).startswith("$") for k in replacement):
            raise QueryError("replacement must be a plain document without update operators.", argument="replacement")
        replacement = self._types.encode(replacement, "replacement")
        plan = self._jobs.before_update(filter, None, many=False) if refresh else None
        raw = self._raw.replace_one(filter, replacement, *args, **kwargs)
        jobs = self._jobs.after_update(plan, raw.upserted_id) if refresh else None
        return results.UpdateResult(results.update_raw(raw), raw.acknowledged, jobs)

    # -- deleting -------------------------------------------------------------------
    def _delete(self, method: str, filter: Any, args, kwargs):
        filter = self._query(filter)
        plan = self._jobs.before_delete(filter, many=(method == "delete_many"))
        raw = getattr(self._raw, method)(filter, *args, **kwargs)
        raw_result = dict(getattr(raw, "raw_result", None) or {"n": raw.deleted_count, "ok": 1.0})
        jobs = self._jobs.after_delete(plan)
        return results.DeleteResult(raw_result, raw.acknowledged, jobs)

    def delete_one(self, filter: Mapping, *args: Any, **kwargs: Any) -> results.DeleteResult:
        return self._delete("delete_one", filter, args, kwargs)

    def delete_many(self, filter: Mapping, *args: Any, **kwargs: Any) -> results.DeleteResult:
        return self._delete("delete_many", filter, args, kwargs)

    # -- find-and-modify ------------------------------------------------------------
    def _find_and_modify(self, method: str, filter: Any, second: Any, args, kwargs) -> dict | None:
        filter = self._types.encode(_check_filter(filter), "filter")
        if method == "find_one_and_delete":
            plan = self._jobs.before_delete(filter, many=False)
            doc = self._raw.find_one_and_delete(filter, *args, **kwargs)
            self._jobs.after_delete(plan)
            return self._decode(doc)
        if method == "find_one_and_update":
            second = self._types.encode(_check_update(second), "update")
        else:
            second = self._types.encode(second, "replacement")
        plan = self._jobs.before_update(filter, second if method == "find_one_and_update" else None, many=False)
        doc = getattr(self._raw, method)(filter, second, *args, **kwargs)
        upserted = None
        if doc is not None and kwargs.get("upsert") and kwargs.get("return_document") == ReturnDocument.AFTER:
            upserted = doc.get("_id")
        self._jobs.after_update(plan, upserted)
        return self._decode(doc)

    def find_one_and_update(self, filter: Mapping, update: Mapping, *args: Any, **kwargs: Any) -> dict | None:
        return self._find_and_modify("find_one_and_update", filter, update, args, kwargs)

    def find_one_and_replace(self, filter: Mapping, replacement: Mapping, *args: Any, **kwargs: Any) -> dict | None:
        return self._find_and_modify("find_one_and_replace", filter, replacement, args, kwargs)

    def find_one_and_delete(self, filter: Mapping, *args: Any, **kwargs: Any) -> dict | None:
        return self._find_and_modify("find_one_and_delete", filter, None, args, kwargs)

    # -- bulk -----------------------------------------------------------------------
    def bulk_write(self, requests: list, ordered: bool = True, *args: Any, refresh: bool = True, **kwargs: Any):
        """As pymongo's ``bulk_write``; also on mongomock, where it is emulated."""
        from .bulk import bulk_write

        return bulk_write(self, requests, ordered, refresh, args, kwargs)

    # -- indexes and the collection itself ----------------------------------------------
    def create_index(self, keys: Any, **kwargs: Any) -> str:
        return self._raw.create_index(keys, **kwargs)

    def index_information(self) -> dict:
        return self._raw.index_information()

    def drop(self, *args: Any, **kwargs: Any) -> None:
        """Drop the collection, its metadata and artifacts (as pymongo drops sub-collections' data)."""
        self._raw.drop(*args, **kwargs)
        for name in self._database._raw.list_collection_names():
            if name.startswith(f"{self.name}._"):
                self._database._raw.drop_collection(name)
        self._types.forget()
        self._database._forget(self.name)

    # -- types ----------------------------------------------------------------------
    def create_type(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a type: an object with ``encode(x) -> bytes``, ``decode(bytes)`` and ``types``.

        Values of the classes in ``object.types`` are stored as
        ``{'_content': {'bytes': ..., 'type': name}}`` and decoded on read.

        Examples
        --------
        >>> class Point:
        ...     def __init__(self, x, y): self.x, self.y = x, y
        >>> class PointType:
        ...     types = (Point,)
        ...     def encode(self, p): return f"{p.x},{p.y}".encode()
        ...     def decode(self, b): return Point(*map(float, b.decode().split(",")))
        >>> docs.create_type("point", PointType())   # doctest: +SKIP
        """
        return self._types.create(name, object, serializer)

    def list_types(self) -> list[str]:
        """Names of the built-in and registered types."""
        return self._types.names()

    def delete_type(self, name: str, force: bool = False) -> None:
        """Delete a registered type; refused while documents or models use it, unless ``force``."""
        users = [f"model {m['name']!r}" for m in self._metadata.list("models", {"type": name})]
        self._types.delete(name, force=force, users=users)

    @property
    def types(self) -> Mapping[str, Any]:
        """``{name: type object}``, loaded lazily."""
        from .registry_views import LazyMapping

        return LazyMapping(self._types.names, self._types.get)

    # -- models -------------------------------------------------------------------
    def create_model(
        self,
        name: str,
        object: Any,
        *,
        preprocess: Any = None,
        postprocess: Any = None,
        type: str | None = None,
        batch_size: int = 32,
        device: Any = None,
        method: str | None = None,
        serializer: str | None = None,
        key: str | None = None,
        filter: Mapping | None = None,
        features: Mapping[str, str] | None = None,
        active: bool = True,
    ):
        """Register a model: a ``torch.nn.Module``, a scikit-learn estimator or a callable.

        Parameters
        ----------
        name : str
            The model's name; outputs go to ``_outputs.<key>.<name>``.
        object : Any
            The model. Stored as a versioned artifact in GridFS.
        preprocess, postprocess : callable, optional
            Applied per item before batching / after splitting the batch (a
            torch module's own ``preprocess``/``postprocess`` methods are used
            by default).
        type : str, optional
            The type that encodes the outputs (default: chosen per value).
        batch_size, device, method
            See :class:`superduperdb.models.base.Model`.
        key : str, optional
            Shortcut: also :meth:`create_watcher` on ``key`` (with ``filter``,
            ``features``, ``active``), which starts a backfill job.

        Returns
        -------
        dict
            The model's metadata row; with ``key``, the backfill's :class:`JobGroup`.

        Examples
        --------
        >>> docs.create_model("length", len, key="text")   # doctest: +SKIP
        """
        row = self._models.create(name, object, preprocess=preprocess, postprocess=postprocess, type=type,
                                  batch_size=batch_size, device=device, method=method, serializer=serializer)
        if key is not None:
            return self.create_watcher(name, key, filter=filter, features=features, active=active)
        return row

    def list_models(self, **filter: Any) -> list[str]:
        return self._metadata.names("models", filter)

    def delete_model(self, name: str, force: bool = False) -> None:
        """Delete a model; refused while watchers or indexes use it, unless ``force``
        (which also deletes its watchers and their outputs)."""
        self._models.delete(name, force=force)

    def apply_model(self, name: str, inputs: list, *, key: str | None = None) -> list:
        """Apply a registered model ad hoc (in this process) to inputs, or to documents' ``key``."""
        return self._models.apply(name, inputs, key=key)

    @property
    def models(self) -> Mapping[str, Any]:
        """``{name: the user's model object}``, loaded lazily."""
        from .registry_views import LazyMapping

        return LazyMapping(lambda: self.list_models(), lambda n: self._models.load(n).object)

    # -- watchers -------------------------------------------------------------------
    def create_watcher(
        self,
        model: str,
        key: str,
        *,
        filter: Mapping | None = None,
        features: Mapping[str, str] | None = None,
        active: bool = True,
    ):
        """Keep ``_outputs.<key>.<model>`` computed for every matching document.

        Starts a backfill job over the documents already there (returned as a
        :class:`JobGroup`); from then on every insert, update and replace that
        touches ``key`` submits jobs. ``features={'x': 'other'}`` feeds the
        stored output of ``other`` on ``x`` instead of the raw field, and makes
        this watcher's jobs wait for ``other``'s. Cycles are refused.
        """
        row = self._watchers.create(model, key, filter=filter, features=features, active=active)
        if not active:
            return self._jobs_group()
        return self._jobs.submit_watchers(None, {row["name"]})

    def list_watchers(self, **filter: Any) -> list[str]:
        return self._metadata.names("watchers", filter)

    def delete_watcher(self, name: str, force: bool = False) -> None:
        """Delete a watcher; ``force=True`` also removes its outputs (refused otherwise while there are any)."""
        self._watchers.delete(name, force=force)

    # -- semantic search ------------------------------------------------------------
    def create_semantic_index(self, name: str, models: list[str], keys: list[str], measure: str = "cosine"):
        """Index the outputs of ``models[0]`` on ``keys[0]`` for ``find(like=...)``.

        Parameters
        ----------
        name : str
        models, keys : list of str
            The first model/key's outputs are indexed (a watcher is created if
            there is none); the other models encode ``like`` documents from
            their keys, e.g. a text encoder querying an image index.
        measure : {'cosine', 'dot', 'l2'}

        Returns
        -------
        JobGroup
            The backfill (if a watcher was created) and the index load.

        Examples
        --------
        >>> docs.create_model("minilm", load_minilm(), key="text")      # doctest: +SKIP
        >>> docs.create_semantic_index("text", ["minilm"], ["text"]).wait()   # doctest: +SKIP
        >>> docs.find({"lang": "en"}, like={"text": "arrays of numbers"}, n=5)   # doctest: +SKIP
        """
        return self._indexes.create(name, models, keys, measure)

    def list_semantic_indexes(self) -> list[str]:
        return self._metadata.names("semantic_indexes")

    def delete_semantic_index(self, name: str, force: bool = False) -> None:
        """Delete an index (refused while neighbourhoods use it, unless ``force``)."""
        self._indexes.delete(name, force=force)

    @property
    def semantic_index(self) -> str | None:
        """The default index of ``find(like=...)`` (the first one created, unless set)."""
        return self._metadata.get_setting("semantic_index")

    @semantic_index.setter
    def semantic_index(self, name: str) -> None:
        self._indexes.set_default(name)

    def create_neighbourhood(self, name: str, n: int = 10, semantic_index: str | None = None):
        """Store each document's ``n`` nearest neighbours' ids at ``_like.<name>``, kept current
        as documents arrive; ``find(..., similar_join=name)`` replaces the ids by the documents."""
        return self._indexes.create_neighbourhood(name, n, semantic_index)

    def list_neighbourhoods(self) -> list[str]:
        return self._metadata.names("neighbourhoods")

    def delete_neighbourhood(self, name: str, force: bool = False) -> None:
        self._indexes.delete_neighbourhood(name, force=force)

    # -- training -------------------------------------------------------------------
    @property
    def _training(self):
        from .services.training import TrainingService

        return self._services.setdefault("training", TrainingService(self))

    def create_metric(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a validation metric ``object(predictions, targets) -> float``.

        Built-ins need no registration: ``accuracy``, ``f1``, ``mse``,
        ``recall@k`` (any ``k``) and ``mrr``. For a semantic index,
        ``predictions[i]`` is the ranked list of validation rows retrieved for
        query ``i`` and ``targets[i]`` the row of its match.

        Examples
        --------
        >>> def within_one(predictions, targets):
        ...     return sum(abs(p - t) <= 1 for p, t in zip(predictions, targets)) / len(targets)
        >>> docs.create_metric("within_one", within_one)   # doctest: +SKIP
        """
        return self._training.create_callable("metrics", name, object, serializer)

    def list_metrics(self) -> list[str]:
        """Built-in and registered metric names."""
        return self._training.list_callables("metrics")

    def delete_metric(self, name: str, force: bool = False) -> None:
        """Delete a registered metric (refused while an imputation uses it, unless ``force``)."""
        self._training.delete_callable("metrics", name, force)

    def create_loss(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a torch loss ``object(outputs, targets) -> scalar tensor``.

        Built-ins: ``cross_entropy``, ``mse`` and ``contrastive`` (InfoNCE,
        for semantic indexes: ``object(query_vectors, target_vectors)``).

        Examples
        --------
        >>> import torch
        >>> docs.create_loss("l1", torch.nn.L1Loss())   # doctest: +SKIP
        """
        return self._training.create_callable("losses", name, object, serializer)

    def list_losses(self) -> list[str]:
        """Built-in and registered loss names."""
        return self._training.list_callables("losses")

    def delete_loss(self, name: str, force: bool = False) -> None:
        """Delete a registered loss (refused while an imputation uses it, unless ``force``)."""
        self._training.delete_callable("losses", name, force)

    def create_splitter(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register ``object(document) -> (query_document, target_document)`` for self-supervised
        semantic-index training (see :meth:`train_semantic_index`).

        Examples
        --------
        >>> def halves(doc):
        ...     words = doc["text"].split()
        ...     return {"text": " ".join(words[::2])}, {"text": " ".join(words[1::2])}
        >>> docs.create_splitter("halves", halves)   # doctest: +SKIP
        """
        return self._training.create_callable("splitters", name, object, serializer)

    def list_splitters(self) -> list[str]:
        return self._training.list_callables("splitters")

    def delete_splitter(self, name: str, force: bool = False) -> None:
        self._training.delete_callable("splitters", name, force)

    def create_validation_set(self, name: str, filter: Mapping | None = None, *, sample_size: int | None = None,
                              fold: str | None = "valid", seed: int | None = 0) -> dict:
        """Freeze a sample of documents as a validation set, so metrics stay comparable across versions.

        Parameters
        ----------
        name : str
        filter : dict, optional
            Which documents (a MongoDB query).
        sample_size : int, optional
            At most this many, sampled at random (default: all that match).
        fold : str or None
            Only documents of this ``_fold`` (default ``'valid'``: every insert
            gets ``_fold`` 'train' or 'valid'); None samples from all.
        seed : int, optional

        Returns
        -------
        dict
            The validation set's row (``size``: how many documents were copied).

        Examples
        --------
        >>> docs.create_validation_set("digits_valid", sample_size=200)["size"]   # doctest: +SKIP
        200
        """
        return self._training.create_validation_set(name, filter, sample_size=sample_size, fold=fold, seed=seed)

    def list_validation_sets(self) -> list[str]:
        return self._metadata.names("validation_sets")

    def get_validation_set(self, name: str) -> list[dict]:
        """The frozen documents of a validation set, decoded."""
        return self._training.validation_set(name)

    def delete_validation_set(self, name: str, force: bool = False) -> None:
        """Delete a validation set and its frozen documents (refused while an imputation uses it, unless ``force``)."""
        self._training.delete_validation_set(name, force)

    def create_imputation(self, name: str, model: str, key: str, target: str | Mapping[str, str], *,
                          filter: Mapping | None = None, features: Mapping[str, str] | None = None,
                          loss: str | None = None, metrics: list[str] = (), validation_sets: list[str] = (),
                          watch: bool = True, fit_kwargs: dict | None = None, **trainer: Any):
        """Train ``model`` on the cluster to predict ``target`` from ``key`` (supervised learning).

        A scikit-learn estimator is fitted on every matching training document;
        a torch module is trained with ``loss`` on batches streamed from MongoDB.
        Documents of the ``valid`` fold and of the validation sets are left out
        of training. The trained model becomes a new version of ``model``
        (with its validation metrics); its outputs are then recomputed and its
        semantic indexes switched to it (see :meth:`list_model_versions`).

        Parameters
        ----------
        name : str
            The imputation's name (train it again with :meth:`train_imputation`).
        model : str
            A registered scikit-learn estimator or torch module.
        key : str
            The input field (``'_base'``: the whole document).
        target : str or dict
            A field (``'label'``), or another model's stored output
            (``{'label': 'encoder'}`` reads ``_outputs.label.encoder``).
        filter : dict, optional
            Which documents to train (and watch) on.
        features : dict, optional
            ``{'x': 'other'}``: read the stored output of ``other`` instead of ``x``.
        loss : str, optional
            torch only: a built-in or registered loss (default ``cross_entropy``
            for integer targets, else ``mse``).
        metrics : list of str
            Computed on each validation set (``'<set>/<metric>'``).
        validation_sets : list of str
            Frozen validation sets; none: the live ``valid`` fold.
        watch : bool
            Create a watcher ``<model>/<key>`` (active once trained) if there is none.
        fit_kwargs : dict, optional
            scikit-learn only: extra arguments of ``fit``.
        **trainer
            torch only: ``batch_size``, ``lr``, ``optimizer``, ``n_epochs``,
            ``n_iterations``, ``validation_interval``, ``no_improve_then_stop``,
            ``watch``, ``seed``, ``chunk_size`` ... (:class:`~superduperdb.training.TrainSettings`).

        Returns
        -------
        JobGroup
            ``[train, promote, recomputes...]``: ``jobs[0]`` is the training job
            (metrics per step in its record; :meth:`plot_training` draws them).

        Examples
        --------
        >>> from sklearn.linear_model import LogisticRegression
        >>> docs.create_model("clf", LogisticRegression(max_iter=500))            # doctest: +SKIP
        >>> docs.create_validation_set("valid")                                   # doctest: +SKIP
        >>> jobs = docs.create_imputation("digits", "clf", key="img", target="label",
        ...                               metrics=["accuracy"], validation_sets=["valid"])  # doctest: +SKIP
        >>> jobs.wait()                                                           # doctest: +SKIP
        >>> docs.list_model_versions("clf")[-1]["metrics"]                        # doctest: +SKIP
        {'valid/accuracy': 0.96}
        """
        return self._training.create_imputation(
            name, model, key, target, filter=filter, features=features, loss=loss, metrics=metrics,
            validation_sets=validation_sets, watch=watch, fit_kwargs=fit_kwargs, **trainer)

    def train_imputation(self, name: str, **trainer: Any):
        """Train an imputation again (options override the stored ones); returns its :class:`JobGroup`."""
        return self._training.train_imputation(name, **trainer)

    def list_imputations(self) -> list[str]:
        return self._training.list_imputations()

    def delete_imputation(self, name: str) -> None:
        """Forget an imputation (its model, versions and watcher stay)."""
        self._training.delete_imputation(name)

    def train_semantic_index(self, name: str, *, splitter: str | None = None, loss: str | None = None,
                             metrics: list[str] = ("recall@10", "mrr"), validation_sets: list[str] = (),
                             filter: Mapping | None = None, n_retrieve: int = 100, **trainer: Any):
        """Fine-tune a semantic index's encoders contrastively, on the cluster.

        Each training document gives a (query, target) pair: the index's second
        key (encoded by its second model) and its first key (encoded by the
        indexed model); or, with ``splitter``, the two halves the splitter makes
        of the document, both encoded by the indexed model. The trained models
        become new versions; the index switches to them once their outputs are
        recomputed, never mixing versions.

        Parameters
        ----------
        name : str
            The semantic index.
        splitter : str, optional
            A registered splitter (self-supervision from one key).
        loss : str, optional
            Default ``contrastive`` (InfoNCE with the index's measure).
        metrics : list of str
            Retrieval metrics on each validation set: ``recall@k``, ``mrr`` or registered ones.
        validation_sets : list of str
            Frozen validation sets; none: the live ``valid`` fold.
        filter : dict, optional
            Which documents to train on.
        n_retrieve : int
            How many results are ranked per validation query.
        **trainer
            ``batch_size``, ``lr``, ``n_epochs`` ... as for :meth:`create_imputation`.

        Returns
        -------
        JobGroup
            ``jobs[0]`` is the training job; its result's ``metrics`` include
            ``before/...``: the metrics of the serving version.

        Examples
        --------
        >>> docs.create_semantic_index("qa", models=["enc", "enc"], keys=["answer", "question"])  # doctest: +SKIP
        >>> docs.train_semantic_index("qa", validation_sets=["valid"], n_epochs=5).wait()  # doctest: +SKIP
        """
        return self._training.train_semantic_index(
            name, splitter=splitter, loss=loss, metrics=metrics, validation_sets=validation_sets, filter=filter,
            n_retrieve=n_retrieve, **trainer)

    def list_model_versions(self, name: str) -> list[dict]:
        """A model's versions, oldest first: ``version``, ``serving``, ``created_at``, ``metrics``, ``job_id``.

        Examples
        --------
        >>> [(v["version"], v["serving"]) for v in docs.list_model_versions("clf")]   # doctest: +SKIP
        [(1, False), (2, True)]
        """
        return self._training.list_model_versions(name)

    def restore_model_version(self, name: str, version: int):
        """Serve an earlier (or any stored) version again: its outputs are recomputed, then its
        indexes switch, exactly as after a training. Returns the :class:`JobGroup`.

        Examples
        --------
        >>> docs.restore_model_version("clf", 1).wait()   # doctest: +SKIP
        """
        return self._training.restore_model_version(name, version)

    def plot_training(self, job: Any, metrics: list[str] | None = None, ax: Any = None):
        """Draw a training job's curves (loss per step, validation metrics) with matplotlib.

        ``job``: a :class:`Job`, its id, or a :class:`JobGroup` from a training.
        Returns the matplotlib ``Figure``.
        """
        from .plot import plot_training

        if hasattr(job, "ids") and not hasattr(job, "record"):
            job = job[0]
        return plot_training(job if hasattr(job, "record") else self.get_job(str(job)), metrics=metrics, ax=ax)

    # -- jobs -----------------------------------------------------------------------
    def _jobs_group(self, ids: list[str] = ()):
        from .jobs.handles import JobGroup

        return JobGroup([self._jobs._job(i) for i in ids])

    def get_job(self, job_id: str):
        """The :class:`Job` with this id."""
        job = self._jobs._job(job_id)
        job.record()
        return job

    def list_jobs(self, status: str | None = None, **filter: Any) -> list[dict]:
        """Job records, newest first (``status='failed'`` ...)."""
        if status is not None:
            filter["status"] = status
        return list(self._jobs.table.find(filter, {"logs": 0}).sort("created_at", -1))

    def watch_job(self, job_id: str, timeout: float | None = None) -> None:
        """Stream a job's logs to the ``superduperdb.jobs`` logger until it finishes."""
        from .jobs.watch import watch

        watch(self.get_job(job_id), timeout)

    # -- metadata -------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        return self._metadata.get_setting(key, default)

    def set_meta(self, key: str, value: Any) -> None:
        self._metadata.set_setting(key, value)
