"""Writes that keep derived state in step: the fast path from each write to its jobs.

Every write encodes typed values, plans the jobs its changes imply
(:mod:`superduperdb.jobs.planner`), writes, and submits those jobs for every
document it actually wrote, also when it partly failed (the error is raised
after). Documents keep their ``_fold`` through replacements and get one on
upserts; an upsert's new ``_id`` is known (``$setOnInsert``) so its outputs are
computed like an insert's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError

from ..errors import QueryError
from ..jobs.handles import JobGroup
from ..jobs.planner import changed_keys
from ..store.layout import FOLD, RESERVED
from ..store.positions import (
    Positions,
    next_seq,
    pinned_id,
    stamp_document,
    stamp_replacement,
    stamp_update,
    stamp_upserted,
)
from .checks import check_filter, check_replacement, check_update

if TYPE_CHECKING:
    from ..jobs.service import JobService
    from .scope import Scope


def written_by(error: BulkWriteError, count: int, ordered: bool) -> list[int]:
    """Indexes of the operations a failed bulk write (or ``insert_many``) did carry out."""
    failed = {e["index"] for e in error.details.get("writeErrors", [])}
    if ordered:
        return list(range(min(failed) if failed else count))
    return [i for i in range(count) if i not in failed]


def new_fold(config: Any) -> str | None:
    """``'train'`` or ``'valid'`` for a new document under ``config`` (None if folds are off).

    Also used where documents are inserted on the workers (``insert_many`` of a Dask DataFrame).
    """
    data = config.data
    if not data.assign_folds:
        return None
    return "valid" if random.random() < data.valid_probability else "train"


class WriteService:
    """pymongo's writes on the raw collection, with types encoded and jobs submitted."""

    def __init__(self, scope: Scope, jobs: JobService, watch: Callable[[], None]) -> None:
        self.scope = scope
        self.jobs = jobs
        self._watch = watch
        self._watched = False

    # -- folds -------------------------------------------------------------------------
    def new_fold(self) -> str | None:
        """``'train'`` or ``'valid'`` (the original SuperDuperDB's split), or None if folds are off."""
        return new_fold(self.scope.config)

    def prepare(self, document: Any, path: str) -> dict:
        """Give a document to insert an ``_id`` (on the caller's dict too, as pymongo) and a ``_fold``."""
        if not isinstance(document, Mapping):
            raise QueryError(f"{path} must be a dict, not a {type(document).__name__}.", argument=path)
        if isinstance(document, dict):
            if "_id" not in document:
                document["_id"] = ObjectId()
            if FOLD not in document and (fold := self.new_fold()) is not None:
                document[FOLD] = fold
        return document

    def _first_write(self) -> None:
        """On this collection's first write here: make sure the reconciler sweeps it (if it has watchers)."""
        if not self._watched:
            self._watched = True
            self._watch()

    # -- the write position (see superduperdb.store.positions) ------------------------------
    def _seq(self) -> int:
        return next_seq(self.scope.raw, self.scope.config.master.position_lag)

    def _tombstone(self, ids: list | None, seq: int) -> None:
        if ids:
            Positions(self.scope.raw).tombstone(ids, seq)

    # -- inserts -----------------------------------------------------------------------
    def insert_one(self, document: Any, args: tuple, kwargs: dict, refresh: bool) -> tuple[Any, JobGroup | None]:
        self._first_write()
        self.prepare(document, "document")
        encoded = stamp_document(self.scope.types.encode(document, "document"), self._seq())
        raw = self.scope.raw.insert_one(encoded, *args, **kwargs)
        return raw, self.jobs.on_insert([raw.inserted_id], [encoded]) if refresh else None

    def insert_many(self, documents: Any, ordered: bool, args: tuple, kwargs: dict,
                    refresh: bool) -> tuple[Any, JobGroup | None]:
        if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
            raise QueryError("documents must be a non-empty list of dicts.", argument="documents")
        documents = list(documents)
        if not documents:
            raise QueryError("documents must be a non-empty list of dicts.", argument="documents")
        self._first_write()
        for i, doc in enumerate(documents):
            self.prepare(doc, f"documents[{i}]")
        seq = self._seq()
        encoded = [stamp_document(d, seq) for d in self.scope.types.encode_many(documents)]
        try:
            raw = self.scope.raw.insert_many(encoded, ordered, *args, **kwargs)
        except BulkWriteError as exc:  # the documents that were written still get their jobs
            if refresh:
                done = [encoded[i] for i in written_by(exc, len(encoded), ordered)]
                if done:
                    self.jobs.on_insert([d["_id"] for d in done], done)
            raise
        return raw, self.jobs.on_insert(list(raw.inserted_ids), encoded) if refresh else None

    # -- updates -----------------------------------------------------------------------
    def _upsert_fold(self, update: Any, kwargs: dict) -> Any:
        """An operator update that gives an upserted document a ``_fold`` (unless it sets one)."""
        keys = changed_keys(update)
        if not kwargs.get("upsert") or keys is None or FOLD in keys or (fold := self.new_fold()) is None:
            return update
        on_insert = dict(update.get("$setOnInsert") or {})
        on_insert.setdefault(FOLD, fold)
        return {**update, "$setOnInsert": on_insert}

    def _keep_fold(self, filter: dict, replacement: dict, kwargs: dict) -> dict:
        """A replacement keeps the replaced document's ``_fold`` (an upserted one gets a new one)."""
        if FOLD in replacement or self.new_fold() is None:
            return replacement
        old = self.scope.raw.find_one(filter, {FOLD: 1}, sort=kwargs.get("sort"))
        fold = (old or {}).get(FOLD) if old is not None else (self.new_fold() if kwargs.get("upsert") else None)
        return {**replacement, FOLD: fold} if fold is not None else replacement

    def update(self, method: str, filter: Any, update: Any, args: tuple, kwargs: dict,
               refresh: bool) -> tuple[Any, JobGroup | None]:
        """``update_one``/``update_many``: the raw result and the jobs."""
        self._first_write()
        filter = self.scope.types.encode(check_filter(filter), "filter")
        update = self._upsert_fold(self.scope.types.encode(check_update(update), "update"), kwargs)
        plan = self.jobs.plan_update(filter, update, many=method == "update_many", sort=kwargs.get("sort")) \
            if refresh else None
        seq = self._seq()
        raw = getattr(self.scope.raw, method)(filter, stamp_update(update, seq), *args, **kwargs)
        stamp_upserted(self.scope.raw, [raw.upserted_id], seq)
        return raw, self.jobs.after_update(plan, [raw.upserted_id]) if refresh else None

    def replace_one(self, filter: Any, replacement: Any, args: tuple, kwargs: dict,
                    refresh: bool) -> tuple[Any, JobGroup | None]:
        self._first_write()
        filter = self.scope.types.encode(check_filter(filter), "filter")
        replacement = self.scope.types.encode(check_replacement(replacement), "replacement")
        replacement = self._keep_fold(filter, replacement, kwargs)
        plan = self.jobs.plan_update(filter, replacement, many=False, sort=kwargs.get("sort")) if refresh else None
        raw = self.scope.raw.replace_one(filter, self._stamp_replacement(filter, replacement, kwargs), *args, **kwargs)
        return raw, self.jobs.after_update(plan, [raw.upserted_id]) if refresh else None

    def _stamp_replacement(self, filter: dict, replacement: dict, kwargs: dict) -> dict:
        """``replacement`` with the replaced document's bookkeeping, or a new position (see stamp_replacement)."""
        old = self.scope.raw.find_one(filter, {"_id": 1, RESERVED: 1}, sort=kwargs.get("sort"))
        return stamp_replacement(replacement, self._seq(), old, pinned_id(filter))

    # -- deletes -----------------------------------------------------------------------
    def delete(self, method: str, filter: Any, args: tuple, kwargs: dict) -> tuple[Any, JobGroup | None]:
        filter = self.scope.query(filter)
        plan = self.jobs.before_delete(filter, many=method == "delete_many")
        seq = self._seq()
        raw = getattr(self.scope.raw, method)(filter, *args, **kwargs)
        self._tombstone(plan if raw.deleted_count else None, seq)  # after the delete: see store.positions
        return raw, self.jobs.after_delete(plan)

    # -- find-and-modify ---------------------------------------------------------------
    def find_and_modify(self, method: str, filter: Any, second: Any, args: tuple, kwargs: dict) -> dict | None:
        """``find_one_and_update|replace|delete``: the raw document pymongo returns; jobs are submitted."""
        types, raw = self.scope.types, self.scope.raw
        filter = types.encode(check_filter(filter), "filter")
        if method == "find_one_and_delete":
            plan = self.jobs.before_delete(filter, many=False)
            seq = self._seq()
            doc = raw.find_one_and_delete(filter, *args, **kwargs)
            self._tombstone([doc["_id"]] if doc is not None and "_id" in doc else None, seq)
            self.jobs.after_delete([doc["_id"]] if doc is not None and "_id" in doc else plan)
            return doc
        upsert_id = None
        if method == "find_one_and_update":
            second = self._upsert_fold(types.encode(check_update(second), "update"), kwargs)
            keys = changed_keys(second)
            if kwargs.get("upsert") and "_id" not in filter and keys is not None and "_id" not in keys:
                upsert_id = ObjectId()  # so that an upserted document's id is known, whatever is returned
                second = {**second, "$setOnInsert": {**(second.get("$setOnInsert") or {}), "_id": upsert_id}}
        else:
            second = self._keep_fold(filter, types.encode(check_replacement(second), "replacement"), kwargs)
            if kwargs.get("upsert") and "_id" not in filter and "_id" not in second \
                    and raw.count_documents(filter, limit=1) == 0:
                upsert_id = second["_id"] = ObjectId()
        plan = self.jobs.plan_update(filter, second, many=False, sort=kwargs.get("sort"))
        if method == "find_one_and_update":
            stamped = stamp_update(second, self._seq())
        else:
            stamped = self._stamp_replacement(filter, second, kwargs)
        doc = getattr(raw, method)(filter, stamped, *args, **kwargs)
        written = [doc["_id"]] if doc is not None and "_id" in doc else []
        if upsert_id is not None and (kwargs.get("return_document") != ReturnDocument.AFTER or not written) \
                and raw.count_documents({"_id": upsert_id}, limit=1):
            written.append(upsert_id)
        if upsert_id is not None and upsert_id in written and method == "find_one_and_update":
            stamp_upserted(raw, [upsert_id], self._seq())
        self.jobs.after_update(plan, written)
        return doc
