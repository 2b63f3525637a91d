"""The embedded store's client: mongomock's API on :mod:`.storage`'s indexed stores.

What it adds to mongomock, so that the in-process default behaves (and scales)
like a MongoDB server:

* queries that pin ``_id``, or use a field that ``create_index`` indexed
  (equality, ``$in``, ranges), read only the documents the index selects;
* cursors iterate in linear time (mongomock re-slices its results on every
  ``next``);
* ``bulk_write`` runs ``UpdateOne``/``ReplaceOne`` (mongomock's raises
  TypeError with pymongo >= 4.11) and reports pymongo's ``BulkWriteResult``;
* ``gridfs.GridFSBucket`` works (it reads ``client.options``);
* the 16 MiB document limit, as :class:`pymongo.errors.DocumentTooLarge`; an
  update that fails leaves the document as it was.

Every ``Database``/``Collection`` handle it gives out is of the classes below
(mongomock builds its own classes by name, so each way in is overridden).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mongomock
from bson import BSON
from mongomock import filtering
from mongomock.collection import Cursor
from pymongo.errors import DocumentTooLarge, OperationFailure, WriteError
from pymongo.results import BulkWriteResult

from .storage import IndexedServerStore

# MongoDB's limit on the size of one BSON document.
MAX_BSON_SIZE = 16 * 1024 * 1024
# MongoDB's code for an update that cannot apply to a document (TypeMismatch).
UPDATE_FAILED = 14


def check_size(doc: dict) -> None:
    """Raise :class:`DocumentTooLarge` if ``doc`` is over MongoDB's 16 MiB limit."""
    size = len(BSON.encode(doc))
    if size > MAX_BSON_SIZE:
        raise DocumentTooLarge(
            f"BSON document too large ({size} bytes) - the connected server supports BSON document "
            f"sizes up to {MAX_BSON_SIZE} bytes. Store large values in GridFS or split the document.")


# What mongomock raises where a server answers with an error of its own (an operator it cannot
# evaluate on a value, a filter it cannot run): Python's errors, made pymongo's here.
PYTHON_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError)
# MongoDB's code for a valid operation the server cannot do (CommandNotSupported).
NOT_SUPPORTED = 115


@contextmanager
def server_errors(error: type[OperationFailure], what: str) -> Iterator[None]:
    """Raise ``error`` (pymongo's) for what mongomock raises as Python's errors inside the block.

    An operation mongomock does not implement (``$where``, ``$text`` ...) raises
    :class:`OperationFailure` saying so, with code 115 (CommandNotSupported).
    """
    try:
        yield
    except NotImplementedError as exc:
        raise OperationFailure(f"{exc}: the embedded store (mongomock://) cannot do this; a MongoDB server can.",
                               code=NOT_SUPPORTED) from exc
    except PYTHON_ERRORS as exc:
        code = UPDATE_FAILED if error is WriteError else 2  # TypeMismatch / BadValue
        raise error(f"{what}: {type(exc).__name__}: {exc}", code=code) from exc


def check_skip(skip: Any, type_message: str) -> int:
    """``skip`` as pymongo checks it: an ``int`` (``TypeError``), not negative (``ValueError``)."""
    if not isinstance(skip, int) or isinstance(skip, bool):
        raise TypeError(type_message)
    if skip < 0:
        raise ValueError("skip must be >= 0")
    return skip


def _as_server_errors(docs: Iterable[dict], lock: Any) -> Iterator[dict]:
    # mongomock applies filters lazily: errors arise while the documents are iterated. Each
    # document is tested under the lock that in-place updates hold (see EmbeddedCursor).
    docs = iter(docs)
    with server_errors(OperationFailure, "Cannot run the filter"):
        while True:
            with lock:
                try:
                    doc = next(docs)
                except StopIteration:
                    return
            yield doc


class EmbeddedCursor(Cursor):
    """mongomock's cursor, iterating its results in linear time, and lazily without a sort.

    mongomock computes (and copies) every result before the first, and re-slices
    them on every ``next``: ``find_one`` or ``limit(10)`` over 20k documents copied
    20k documents. Here an unsorted cursor reads only as far as it is iterated.
    """

    _lazy: Iterator[dict] | None = None
    _lazy_results: list[dict] | None = None
    _lazy_factory: Any = None

    def _compute_results(self, with_limit_and_skip: bool = False) -> list:
        # The results are copies of the stored documents, made here: not while another thread
        # updates one of them in place (mongomock's updates do), or the copy fails with
        # "dictionary changed size during iteration".
        with self.collection._store.documents_lock:
            return super()._compute_results(with_limit_and_skip)

    def __next__(self) -> dict:
        if self._limit and self._emitted >= abs(self._limit):
            raise StopIteration
        position = (self._skip or 0) + self._emitted
        results = self._results_upto(position + 1)
        if position >= len(results):
            raise StopIteration
        self._emitted += 1
        return results[position]

    def _results_upto(self, n: int) -> list[dict]:
        if self._sort:  # a sort needs every result first
            return self._compute_results(with_limit_and_skip=False)
        if self._lazy_results is None or self._lazy_factory is not self._factory:
            self._lazy, self._lazy_results, self._lazy_factory = iter(self._factory()), [], self._factory
        while len(self._lazy_results) < n and self._lazy is not None:
            try:
                with self.collection._store.documents_lock:  # the copy is made here: see _compute_results
                    doc = next(self._lazy)
            except StopIteration:
                self._lazy = None
                break
            if self.collection.codec_options.tz_aware:
                doc = mongomock.helpers.make_datetime_timezone_aware_in_document(doc)
            self._lazy_results.append(doc)
        return self._lazy_results

    next = __next__

    def skip(self, skip: int) -> EmbeddedCursor:
        """As pymongo's: a negative or non-integer ``skip`` is refused."""
        return super().skip(check_skip(skip, "skip must be an integer"))

    def clone(self) -> EmbeddedCursor:
        cursor = EmbeddedCursor(self.collection, self._spec, self._sort, self._projection, self._skip, self._limit)
        cursor._factory = self._factory
        return cursor


class EmbeddedCollection(mongomock.Collection):
    """A mongomock collection that uses the indexes of its store."""

    def _iter_documents(self, filter: Any):
        filter = {} if filter is None else filter  # gridfs's cursors pass None
        with server_errors(OperationFailure, "Cannot run the filter"):
            found = self._store.matching(filter)
            if found is None:
                return _as_server_errors(super()._iter_documents(filter), self._store.documents_lock)
            docs, residual = found
            if not docs:
                filtering.filter_applies(filter, {})  # still refuse a malformed filter, as a scan would
        if not residual:
            return iter(docs)
        return _as_server_errors((doc for doc in docs if filtering.filter_applies(residual, doc)),
                                 self._store.documents_lock)

    def _update(self, *args: Any, **kwargs: Any) -> dict:
        with server_errors(WriteError, "Cannot apply the update"):
            return super()._update(*args, **kwargs)

    def find(self, filter: Any = None, projection: Any = None, skip: int = 0, limit: int = 0,
             no_cursor_timeout: bool = False, cursor_type: Any = None, sort: Any = None,
             allow_partial_results: bool = False, oplog_replay: bool = False, modifiers: Any = None,
             batch_size: int = 0, manipulate: bool = True, collation: Any = None, session: Any = None,
             max_time_ms: Any = None, allow_disk_use: bool = False, **kwargs: Any) -> EmbeddedCursor:
        spec = {} if filter is None else filter
        mongomock.collection.validate_is_mapping("filter", spec)
        if not isinstance(skip, int) or isinstance(skip, bool):
            raise TypeError("skip must be an instance of int")
        if skip < 0:  # a server refuses it when the query runs
            raise OperationFailure(f"skip value must be non-negative, but received: {skip}", code=2)
        for kwarg, value in kwargs.items():
            if value:
                raise OperationFailure(f"Unrecognized field '{kwarg}'")
        cursor = EmbeddedCursor(self, spec, sort, projection, skip, limit, collation=collation)
        return cursor.max_time_ms(max_time_ms).allow_disk_use(allow_disk_use)

    def _insert(self, data: Any, session: Any = None, ordered: bool = True) -> Any:
        if isinstance(data, Mapping):
            check_size(data)  # also refuses what BSON cannot encode, with bson's InvalidDocument
        return super()._insert(data, session, ordered=ordered)

    def _apply_update_document(self, existing_document: dict, spec: Any, document: Any, was_insert: bool) -> None:
        self._guarded(super()._apply_update_document, existing_document, spec, document, was_insert)

    def _apply_update_pipeline(self, existing_document: dict, pipeline: Any, session: Any) -> None:
        self._guarded(super()._apply_update_pipeline, existing_document, pipeline, session)

    def _guarded(self, apply, existing_document: dict, *args: Any) -> None:
        # mongomock updates the stored document in place: restore it if the update fails, and
        # index it again once it succeeded.
        # mongomock raises Python's errors where the update cannot apply ($inc of a string ...):
        # a server answers those with a WriteError.
        with self._store.documents_lock:
            self._guarded_locked(apply, existing_document, *args)

    def _guarded_locked(self, apply, existing_document: dict, *args: Any) -> None:
        before = copy.deepcopy(existing_document)
        try:
            apply(existing_document, *args)
            check_size(existing_document)
            if existing_document != before:
                self._store.journal_update(existing_document)  # a folder store: on disk before the call returns
        except BaseException as exc:
            existing_document.clear()
            existing_document.update(before)
            if isinstance(exc, PYTHON_ERRORS):
                raise WriteError(f"Cannot apply the update: {exc}", code=UPDATE_FAILED) from exc
            raise
        finally:
            self._store.reindex(existing_document)

    # -- one-document writes with sort (pymongo >= 4.9; mongomock has no sort there) --------------
    def _pinned(self, filter: Any, sort: Any) -> Any:
        """``filter`` narrowed to the ``_id`` of the first document ``sort`` picks (as a server does)."""
        if sort is None:
            return filter
        from ..writes import pin

        return pin(self, filter, sort)

    def update_one(self, filter: Any, update: Any, upsert: bool = False, bypass_document_validation: bool = False,
                   collation: Any = None, array_filters: Any = None, hint: Any = None, session: Any = None,
                   let: Any = None, sort: Any = None, comment: Any = None) -> Any:
        return super().update_one(self._pinned(filter, sort), update, upsert, bypass_document_validation, collation,
                                  array_filters, hint, session, let)

    def replace_one(self, filter: Any, replacement: Any, upsert: bool = False,
                    bypass_document_validation: bool = False, collation: Any = None, hint: Any = None,
                    session: Any = None, let: Any = None, sort: Any = None, comment: Any = None) -> Any:
        if collation is not None or let is not None:
            mongomock.collection.raise_not_implemented("collation", "The embedded store has no collations.")
        return super().replace_one(self._pinned(filter, sort), replacement, upsert, bypass_document_validation,
                                   session, hint)

    def _find_and_modify(self, query: Any, projection: Any = None, update: Any = None, upsert: bool = False,
                         sort: Any = None, *args: Any, **kwargs: Any) -> Any:
        # mongomock finds the document with the caller's projection, and without its _id it writes the
        # first match in natural order (not the one ``sort`` picked): pin the _id first, as a server does.
        found = self.find_one(query, {"_id": 1}, sort=sort)
        if found is not None:
            query = {"_id": found["_id"]}
        return super()._find_and_modify(query, projection, update, upsert, None, *args, **kwargs)

    def bulk_write(self, requests: list, ordered: bool = True, bypass_document_validation: bool = False,
                   session: Any = None) -> BulkWriteResult:
        from ..bulk import run_one_by_one

        if session:
            mongomock.collection.raise_not_implemented("session", "The embedded store has no sessions.")
        return BulkWriteResult(run_one_by_one(self, list(requests), ordered), True)

    def with_options(self, codec_options: Any = None, read_preference: Any = None, write_concern: Any = None,
                     read_concern: Any = None) -> EmbeddedCollection:
        other = super().with_options(codec_options, read_preference, write_concern, read_concern)
        if other is self:
            return self
        return EmbeddedCollection(
            self.database, self.name, write_concern=other._write_concern, read_concern=other._read_concern,
            read_preference=other._read_preference, codec_options=other._codec_options, _db_store=self._db_store)


class EmbeddedDatabase(mongomock.Database):
    """A mongomock database whose collections are :class:`EmbeddedCollection` s."""

    def get_collection(self, name: str, codec_options: Any = None, read_preference: Any = None,
                       write_concern: Any = None, read_concern: Any = None) -> EmbeddedCollection:
        if name not in self._collection_accesses:
            self._ensure_valid_collection_name(name)
            self._collection_accesses[name] = EmbeddedCollection(
                self, name=name, read_preference=self.read_preference, codec_options=self._codec_options,
                _db_store=self._store)
        return super().get_collection(name, codec_options, read_preference, write_concern, read_concern)

    def with_options(self, codec_options: Any = None, read_preference: Any = None, write_concern: Any = None,
                     read_concern: Any = None) -> EmbeddedDatabase:
        other = super().with_options(codec_options, read_preference, write_concern, read_concern)
        if other is self:
            return self
        return EmbeddedDatabase(self._client, self.name, self._store, read_preference=other._read_preference,
                                codec_options=other._codec_options, read_concern=other._read_concern)


@dataclass(frozen=True)
class ClientOptions:
    """The part of :class:`pymongo.client_options.ClientOptions` an in-process store has."""

    timeout: float | None = None


class EmbeddedClient(mongomock.MongoClient):
    """An in-process MongoDB stand-in: mongomock's API with indexes and linear cursors.

    ``EmbeddedClient(folder="./my-data")`` keeps the store in that folder (see
    :mod:`.folder`): opened again, by this or another process, it has everything.

    Examples
    --------
    >>> client = EmbeddedClient()
    >>> docs = client.db.docs
    >>> docs.create_index("lang")
    'lang_1'
    >>> _ = docs.insert_many([{"_id": i, "lang": "en" if i % 2 else "fr"} for i in range(6)])
    >>> [d["_id"] for d in docs.find({"lang": "en", "_id": {"$in": [1, 2, 3]}})]
    [1, 3]
    """

    def __init__(self, *args: Any, folder: Any = None, **kwargs: Any) -> None:
        if folder is not None:
            from .folder import Folder

            kwargs["_store"] = IndexedServerStore(folder if isinstance(folder, Folder) else Folder(folder))
        kwargs.setdefault("_store", IndexedServerStore())
        super().__init__(*args, **kwargs)

    @property
    def folder(self) -> Any:
        """The :class:`~.folder.Folder` that keeps this store on disk (None: in memory only)."""
        return self._store.folder

    @property
    def storage(self) -> str:
        """Where the data lives, in words: ``"in memory: gone when this process exits"`` or the folder."""
        if self.folder is None:
            return "in memory: gone when this process exits"
        return f"folder {str(self.folder.path)!r}: kept on disk"

    def close(self) -> None:
        """Sync the journal and release the folder (a folder store); an in-memory store keeps its data."""
        self._store.close()
        super().close()

    @property
    def options(self) -> ClientOptions:
        """What pymongo's ``MongoClient.options`` holds and its helpers read (GridFSBucket: ``timeout``)."""
        return ClientOptions()

    def get_database(self, name: str | None = None, codec_options: Any = None, read_preference: Any = None,
                     write_concern: Any = None, read_concern: Any = None) -> EmbeddedDatabase:
        if name is not None and name not in self._database_accesses:
            self._database_accesses[name] = EmbeddedDatabase(
                self, name, read_preference=read_preference or self.read_preference,
                codec_options=codec_options or self._codec_options, _store=self._store[name],
                read_concern=read_concern)
        return super().get_database(name, codec_options, read_preference, write_concern, read_concern)
