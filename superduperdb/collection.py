"""The user facade: a pymongo-compatible collection that adds AI.

Every pymongo method a user relies on keeps pymongo's semantics and result
types (the results also carry ``.jobs``). Typed values (arrays, tensors,
images, user types) are encoded on the way in and decoded on the way out.
The facade delegates: types to :class:`~superduperdb.types.TypeRegistry`,
models, watchers, indexes, search and training to :mod:`superduperdb.services`,
jobs to :mod:`superduperdb.jobs.service` (wired in :mod:`superduperdb.services.scope`).
The methods beyond pymongo's live in mixins in :mod:`superduperdb.facade`
(models and jobs, search, training); this module holds pymongo's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import results
from .cursor import SKIP, Cursor, ListSource, check_features, substitute_features
from .errors import DECODE_ERRORS, DecodingError, QueryError, unknown_name
from .facade.frames import DataFrameMixin
from .facade.models import ModelsMixin
from .facade.search import SearchMixin
from .facade.training import TrainingMixin
from .services.checks import check_filter
from .services.scope import Scope, Services
from .store.layout import FINGERPRINTS, RESERVED

if TYPE_CHECKING:
    from .client import Database

logger = logging.getLogger(__name__)


class Collection(ModelsMixin, SearchMixin, TrainingMixin, DataFrameMixin):
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
        client = database.client
        scope = Scope.open(database._raw, name, client.config, lambda: client.cluster)
        self._database = database
        self._raw = scope.raw
        self.name = name
        self._metadata = scope.metadata
        self._artifacts = scope.artifacts
        self._types = scope.types
        self._services = Services(scope)

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

    def __getitem__(self, name: str):
        """A sub-collection (``docs['_models']`` is ``docs._models``), raw pymongo."""
        return self._raw[name]

    def __getattr__(self, name: str) -> Any:
        raw = self.__dict__.get("_raw")
        if raw is not None and not name.startswith("_") and callable(getattr(type(raw), name, None)):
            return getattr(raw, name)
        public = [n for n in dir(type(self)) if not n.startswith("_")]
        raise AttributeError(
            unknown_name("Collection attribute", name, public, f"For a sub-collection use collection[{name!r}].",
                         limit=0)
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
        return self._services.scope.query(filter, argument)

    def _decode(self, doc: dict | None, errors: str = "raise") -> dict | None:
        """Typed values decoded; the bookkeeping (``_fingerprints``, the write position ``_sdb``) left out
        (``find(raw=True)`` shows it)."""
        if doc is None:
            return None
        doc = self._types.decode(doc, errors="raw" if errors == "raw" else "raise")
        if isinstance(doc, dict):
            doc.pop(FINGERPRINTS, None)
            doc.pop(RESERVED, None)
        return doc

    def _model_names(self) -> list[str]:
        return self._metadata.names("models")

    def _transform(self, *, raw: bool = False, features: Mapping | None = None, decode_errors: str = "raise"):
        check_decode_errors(decode_errors)
        features = check_features(features)

        def transform(doc: dict) -> Any:
            if not raw:
                try:
                    doc = self._decode(doc, decode_errors)
                except DecodingError as exc:
                    if decode_errors != "skip":
                        raise
                    logger.warning("%s: left out a document that cannot be decoded (decode_errors='skip'): %s",
                                   self.full_name, exc)
                    return SKIP
            if features:
                doc = substitute_features(doc, features)
            return doc

        return transform

    # -- inserting ------------------------------------------------------------------
    def insert_one(self, document: dict, *args: Any, refresh: bool = True, **kwargs: Any) -> results.InsertOneResult:
        """Insert one document; its watchers' jobs start at once (``result.jobs``).

        The jobs run to the end whether or not the result is kept. ``refresh=False``
        skips them now, as in the original API (the reconciler catches up later).
        """
        raw, jobs = self._services.writes.insert_one(document, args, kwargs, refresh)
        return results.InsertOneResult(raw.inserted_id, raw.acknowledged, jobs)

    def insert_many(
        self, documents: Iterable[dict], ordered: bool = True, *args: Any, refresh: bool = True, **kwargs: Any
    ) -> results.InsertManyResult:
        """Insert documents; watchers' jobs are submitted for all of them at once.

        ``documents`` may be a list of dicts, a pandas DataFrame (one document
        per row; a missing cell, NaN/None/NaT, is a missing field; numpy scalars
        are stored as numbers) or a Dask DataFrame (each partition inserted by a
        worker, see :meth:`from_dask`).

        If the write partly fails (``BulkWriteError``), the documents it did
        write still get their jobs before the error is raised.
        """
        from .store import frames

        if frames.is_dask(documents):
            return self.from_dask(documents, refresh=refresh)
        if frames.is_pandas(documents):
            documents = frames.frame_documents(documents)
        raw, jobs = self._services.writes.insert_many(documents, ordered, args, kwargs, refresh)
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
        decode_errors: str = "raise",
        download: bool = False,
        allow_partial: bool = False,
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
            How many similar documents ``like`` retrieves; ``skip``, ``limit``
            and ``sort`` (as keywords or cursor methods, checked as pymongo
            does) then apply to those, in that order. Without ``sort`` they
            come most similar first.
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
        decode_errors : {'raise', 'skip', 'raw'}
            What a stored value that cannot be decoded does when its document is
            read: ``'raise'`` (default) raises :class:`~superduperdb.errors.DecodingError`
            naming the document's ``_id`` and the field; ``'skip'`` leaves the
            document out (and logs a warning); ``'raw'`` returns it with that value
            as stored (``{'_content': {...}}``), the other fields decoded.
        download : bool
            Fetch the content of ``{'_content': {'url': ...}}`` fields still
            pending in the results as they are read (stored in the documents, as
            the download job would), and of URLs in ``like`` before encoding it.
        allow_partial : bool
            With ``like``: when a shard of the index is lost (its worker died), answer
            from the other shards at once instead of waiting for it (``master.shard_wait``);
            ``cursor.explain()["partial"]`` then says so. Without it, an answer is never
            incomplete: it waits, or fails with :class:`~superduperdb.errors.ShardUnavailableError`.

        Returns
        -------
        Cursor

        Examples
        --------
        >>> docs.find({}, decode_errors="skip").to_list()   # doctest: +SKIP
        """
        filter = check_filter(filter)
        if "$like" in filter:
            spec = filter.pop("$like")
            if not isinstance(spec, Mapping) or "document" not in spec:
                raise QueryError("$like must be {'document': {...}, 'n': 10}.", argument="$like")
            like, n = spec["document"], spec.get("n", n)
        transform = self._transform(raw=raw, features=features, decode_errors=decode_errors)
        if similar_join:
            transform = self._services.search.join_neighbourhood(similar_join, transform, raw=raw,
                                                                 decode_errors=decode_errors)
        preview = transform
        if download:
            transform = self._services.downloads.on_read(transform)
            if like is not None:
                like = self._services.downloads.like_document(like)
        if like is not None:
            source = ListSource([], **_like_options(filter, projection, args, kwargs))  # checked before searching
            source.documents, index = self._services.search.find_like(
                filter, like, projection=projection, n=n, semantic_index=semantic_index, similar_first=similar_first,
                allow_partial=allow_partial, explain=source.plan)
            return Cursor(source, transform, f"{self.full_name} like={list(like)} n={n} index={index!r}",
                          self._model_names, preview)
        source = self._raw.find(self._types.encode(filter, "filter", mark=False), projection, *args, **kwargs)
        return Cursor(source, transform, f"{self.full_name} filter={filter!r}", self._model_names, preview)

    def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> dict | None:
        """The first document :meth:`find` would return, or ``None``."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}  # pymongo accepts a bare _id
        cursor = self.find(filter, *args, **kwargs)
        if kwargs.get("decode_errors") != "skip":  # with 'skip': the first document that decodes
            cursor = cursor.limit(-1 if "like" not in kwargs else 1)
        for doc in cursor:
            return doc
        return None

    def count_documents(self, filter: Mapping, **kwargs: Any) -> int:
        return self._raw.count_documents(self._query(filter), **kwargs)

    def estimated_document_count(self, **kwargs: Any) -> int:
        return self._raw.estimated_document_count(**kwargs)

    def distinct(self, key: str, filter: Mapping | None = None, **kwargs: Any) -> list:
        values = self._raw.distinct(key, self._query(filter), **kwargs)
        return [self._types.decode(v) for v in values]

    def aggregate(self, pipeline: list, *args: Any, raw: bool = False, decode_errors: str = "raise",
                  **kwargs: Any) -> Cursor:
        """Run an aggregation pipeline; typed values in the output are decoded (``decode_errors`` as in :meth:`find`)."""
        if not isinstance(pipeline, list):
            raise QueryError("pipeline must be a list of stages such as [{'$match': {...}}].", argument="pipeline")
        transform = self._transform(raw=raw, decode_errors=decode_errors)
        source = self._raw.aggregate(self._types.encode(pipeline, "pipeline"), *args, **kwargs)
        return Cursor(source, transform, f"{self.full_name} aggregate", self._model_names)

    # -- updating -------------------------------------------------------------------
    def update_one(self, filter: Mapping, update: Mapping, *args: Any, refresh: bool = True, **kwargs: Any):
        """As pymongo's; outputs follow: recomputed if the update changes a watched key or
        filter field, removed if the document lost its key or left the watcher's filter."""
        raw, jobs = self._services.writes.update("update_one", filter, update, args, kwargs, refresh)
        return results.UpdateResult(results.update_raw(raw), raw.acknowledged, jobs)

    def update_many(self, filter: Mapping, update: Mapping, *args: Any, refresh: bool = True, **kwargs: Any):
        """As pymongo's; outputs follow as with :meth:`update_one`."""
        raw, jobs = self._services.writes.update("update_many", filter, update, args, kwargs, refresh)
        return results.UpdateResult(results.update_raw(raw), raw.acknowledged, jobs)

    def replace_one(self, filter: Mapping, replacement: Mapping, *args: Any, refresh: bool = True, **kwargs: Any):
        """As pymongo's; recomputes the replaced document's outputs (it keeps its ``_fold``)."""
        raw, jobs = self._services.writes.replace_one(filter, replacement, args, kwargs, refresh)
        return results.UpdateResult(results.update_raw(raw), raw.acknowledged, jobs)

    # -- deleting -------------------------------------------------------------------
    def _delete(self, method: str, filter: Any, args, kwargs):
        raw, jobs = self._services.writes.delete(method, filter, args, kwargs)
        raw_result = dict(getattr(raw, "raw_result", None) or {"n": raw.deleted_count, "ok": 1.0})
        return results.DeleteResult(raw_result, raw.acknowledged, jobs)

    def delete_one(self, filter: Mapping, *args: Any, **kwargs: Any) -> results.DeleteResult:
        return self._delete("delete_one", filter, args, kwargs)

    def delete_many(self, filter: Mapping, *args: Any, **kwargs: Any) -> results.DeleteResult:
        return self._delete("delete_many", filter, args, kwargs)

    # -- find-and-modify ------------------------------------------------------------
    def _find_and_modify(self, method: str, filter: Any, second: Any, args, kwargs) -> dict | None:
        return self._decode(self._services.writes.find_and_modify(method, filter, second, args, kwargs))

    def find_one_and_update(self, filter: Mapping, update: Mapping, *args: Any, **kwargs: Any) -> dict | None:
        return self._find_and_modify("find_one_and_update", filter, update, args, kwargs)

    def find_one_and_replace(self, filter: Mapping, replacement: Mapping, *args: Any, **kwargs: Any) -> dict | None:
        return self._find_and_modify("find_one_and_replace", filter, replacement, args, kwargs)

    def find_one_and_delete(self, filter: Mapping, *args: Any, **kwargs: Any) -> dict | None:
        return self._find_and_modify("find_one_and_delete", filter, None, args, kwargs)

    # -- bulk -----------------------------------------------------------------------
    def bulk_write(self, requests: list, ordered: bool = True, *args: Any, refresh: bool = True, **kwargs: Any):
        """As pymongo's ``bulk_write`` (also on the embedded store); the jobs of every operation follow,
        as for the single writes (:attr:`BulkWriteResult.jobs`)."""
        bulk_api, acknowledged, jobs = self._services.writes.bulk_write(requests, ordered, refresh, args, kwargs)
        return results.BulkWriteResult(bulk_api, acknowledged, jobs)

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


def check_decode_errors(value: Any) -> str:
    """``value`` if it is one of :data:`~superduperdb.errors.DECODE_ERRORS`, else :class:`QueryError`."""
    if not isinstance(value, str) or value not in DECODE_ERRORS:
        raise QueryError(unknown_name("decode_errors value", value, DECODE_ERRORS,
                                      "'skip' leaves out documents that cannot be decoded; 'raw' returns their "
                                      "undecodable values as stored."), argument="decode_errors")
    return value


def _like_options(filter: Any, projection: Any, args: tuple, kwargs: dict) -> dict:
    """``skip``/``limit``/``sort`` of a ``find(..., like=...)`` call, from pymongo's own ``find``
    arguments (positional or keyword; a name pymongo does not know raises its ``TypeError``).
    The remaining options (``batch_size``, ``max_time_ms`` ...) concern a server cursor; the
    similarity results are already in memory, so they have no effect there."""
    import inspect

    from pymongo.cursor import Cursor as PymongoCursor

    bound = inspect.signature(PymongoCursor.__init__).bind(None, None, filter, projection, *args, **kwargs)
    given = bound.arguments
    options: dict = {"skip": given.get("skip", 0), "limit": given.get("limit", 0)}
    if given.get("sort") is not None:
        options["sort"] = given["sort"]
    return options
