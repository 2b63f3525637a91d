"""The write rules, each applied once to every write (see :mod:`superduperdb.services.writes`).

Each rule is a :class:`~superduperdb.services.writes.WriteRule`: ``before(write)``
runs before the store write, ``after(write)`` after it, on the operations the
store carried out. Their order is :meth:`WriteService.rules`. A rule gets the
narrowest collaborators it needs (the config, the raw collection, a callable),
never the Collection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bson import ObjectId

from ..jobs.planner import changed_keys
from ..store.layout import RESERVED, find_urls
from ..store.positions import (
    Positions,
    next_seq,
    pinned_id,
    stamp_document,
    stamp_replacement,
    stamp_update,
    stamp_upserted,
)
from ..store.writes import id_of, kept_fold, pin, prepare_new
from .checks import check_filter, check_replacement, check_update
from .write_ops import DELETE, INSERT, REPLACE, UPDATE, Write, WriteRule

if TYPE_CHECKING:
    from ..config import Config
    from ..jobs.service import JobService
    from ..types import TypeRegistry


class NewDocuments(WriteRule):
    """A new document gets an ``_id`` (on the caller's dict too, as pymongo), and no ``_fold``.

    Folds are given when training first needs the split (:mod:`superduperdb.store.folds`).
    """

    def before(self, write: Write) -> None:
        for op in write.ops:
            if op.kind == INSERT:
                prepare_new(op.document, op.path)


class Encode(WriteRule):
    """Filters, updates, replacements and documents checked, and their typed values encoded.

    The caller's objects are left as they are (encoding makes copies); the
    documents of one write are encoded together, so a type is marked as in use
    only once the whole write encodes.
    """

    def __init__(self, types: TypeRegistry) -> None:
        self.types = types

    def before(self, write: Write) -> None:
        inserts = [op for op in write.ops if op.kind == INSERT]
        if inserts:
            encoded = self.types.encode_many([op.document for op in inserts], paths=[op.path for op in inserts])
            for op, doc in zip(inserts, encoded):
                op.document = doc
        for op in write.ops:
            if op.kind == INSERT:
                continue
            where = f"{op.path}.filter" if op.path else "filter"
            op.filter = self.types.encode(check_filter(op.filter, where), where, mark=op.kind != DELETE)
            if op.kind == UPDATE:
                op.document = self.types.encode(check_update(op.document), f"{op.path}.update" if op.path else "update")
            elif op.kind == REPLACE:
                where = f"{op.path}.replacement" if op.path else "replacement"
                op.document = self.types.encode(check_replacement(op.document), where)


class Pinned(WriteRule):
    """A one-document update or replacement with ``sort`` is pinned to the ``_id`` the sort picks.

    The store then writes that document whatever it does with ``sort`` (servers
    before MongoDB 8 and the stand-ins ignore or refuse it), and the jobs follow
    the same document. Find-and-modify keeps its ``sort``: servers apply it
    atomically, and the document it returns names what it changed.
    """

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def before(self, write: Write) -> None:
        if write.find_and_modify:
            return
        for op in write.ops:
            if op.kind in (UPDATE, REPLACE) and op.sort is not None and not op.many:
                op.filter, op.sort = pin(self.raw, op.filter, op.sort), None


class Folds(WriteRule):
    """A replacement keeps the replaced document's ``_fold`` (writes add none; see :mod:`superduperdb.store.folds`).

    Needed although folds are given lazily: a replacement carries the caller's
    fields only, so without this rule it would drop the document's fold and the
    next training would draw a new one, moving a validation document into the
    training data. An operator update never removes ``_fold`` unless it says so.
    """

    def __init__(self, raw: Any, config: Config) -> None:
        self.raw = raw
        self.config = config

    def before(self, write: Write) -> None:
        for op in write.ops:
            if op.kind == REPLACE:
                op.document = kept_fold(self.raw, op.filter, op.document, self.config, op.sort)


class Position(WriteRule):
    """Every write takes a number of the collection's write position and stamps it; a delete leaves tombstones.

    See :mod:`superduperdb.store.positions`. ``before`` takes one number for the
    write and stamps ``_sdb: {seq, part}`` on each new document and each
    replacement that writes outputs (a replacement that does not keeps the
    replaced document's ``_sdb``), and ``_sdb.seq`` on each update that writes
    outputs (other updates are left as they are, so that ``modified_count`` is
    pymongo's). The caller's objects are never changed (:class:`Encode` made copies).
    ``after``, on what the store carried out: the documents upserts created get
    their position and partition (their ``_id`` may be the server's), and the
    ids deletes removed get tombstones, where an index must forget them (the
    ids the jobs planned; the deleted document of a find-and-modify).

    ``from_dask``: its documents are made on the workers, which stamp them when they
    insert them (:func:`superduperdb.tasks.frames.insert_partition`, with a number they
    take then: one taken here would be older than ``master.position_lag`` allows by the
    time a long ``from_dask`` writes its last partition).
    """

    def __init__(self, raw: Any, config: Config, deleting: Callable[[dict, bool, Any], list | None]) -> None:
        self.raw = raw
        self.lag = config.master.position_lag
        self.deleting = deleting  # the ids a delete will remove where an index must forget them (else None)

    def before(self, write: Write) -> None:
        if not write.ops:
            return  # from_dask: stamped on the workers
        seq = write.position = next_seq(self.raw, self.lag)
        for op in write.ops:
            if op.kind == INSERT:
                op.document = stamp_document(op.document, seq)
            elif op.kind == UPDATE:
                op.document = stamp_update(op.document, seq)
            elif op.kind == REPLACE:
                old = self.raw.find_one(op.filter, {"_id": 1, RESERVED: 1}, sort=op.sort)
                op.document = stamp_replacement(op.document, seq, old, pinned_id(op.filter))
            elif not write.refresh:  # a delete without jobs: its ids are not planned by the jobs rule
                op.deleting = self.deleting(op.filter, op.many, op.sort)

    def after(self, write: Write) -> None:
        seq = write.position
        if seq is None:
            return
        upserted, gone = [], []
        result = write.result  # delete_one/many that removed nothing leave no tombstones
        deleted_any = not getattr(result, "acknowledged", False) or getattr(result, "deleted_count", 1) != 0
        for i, op in write.ran():
            if op.kind in (UPDATE, REPLACE):
                created = write.upserted.get(i)
                if created is None and op.upsert_id is not None and not op.existed:
                    created = op.upsert_id  # a find-and-modify upsert (stamping an _id that is not there: no-op)
                if created is not None:
                    upserted.append(created)
            elif op.kind == DELETE:
                if write.find_and_modify:
                    gone += [write.found[i]] if i in write.found else []
                elif deleted_any:
                    gone += (op.plan if write.refresh else op.deleting) or []
        stamp_upserted(self.raw, upserted, seq)
        if gone:
            Positions(self.raw).tombstone(gone, seq)


class Watched(WriteRule):
    """The collection's first write here has the master's reconciler sweep it (when it has watchers)."""

    def __init__(self, watch: Callable[[], None]) -> None:
        self.watch = watch
        self.done = False

    def before(self, write: Write) -> None:
        if not self.done:
            self.done = True
            self.watch()


class Jobs(WriteRule):
    """The jobs a write implies: planned before it, submitted after it for what it wrote.

    New documents (inserted or upserted) get every active watcher's jobs;
    changed documents the jobs of the watchers their change concerns (which
    settle each document: compute, keep or remove its output); deleted ones
    the index and neighbourhood updates that forget them. An upsert's ``_id``
    is known before the write where the store would not say it (find-and-modify).
    """

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    def before(self, write: Write) -> None:
        if not write.refresh:
            return
        raw = self.jobs.scope.raw
        for op in write.ops:
            if op.kind in (UPDATE, REPLACE):
                if write.find_and_modify and op.upsert:
                    self._known_upsert_id(raw, op)
                op.plan = self.jobs.plan_update(op.filter, op.document, many=op.many, sort=op.sort)
            elif op.kind == DELETE:
                op.plan = self.jobs.before_delete(op.filter, many=op.many, sort=op.sort)

    @staticmethod
    def _known_upsert_id(raw: Any, op: Any) -> None:
        """Give a find-and-modify upsert an ``_id`` known now (whatever document it returns)."""
        if (pinned := id_of(op.filter)) is not None:
            op.upsert_id = pinned
            op.existed = bool(raw.count_documents({"_id": pinned}, limit=1))
            return
        op.existed = False
        if op.kind == UPDATE:
            keys = changed_keys(op.document)
            if keys is not None and "_id" not in keys:
                op.upsert_id = ObjectId()
                on_insert = {**(op.document.get("$setOnInsert") or {}), "_id": op.upsert_id}
                op.document = {**op.document, "$setOnInsert": on_insert}
        elif "_id" not in op.document and raw.count_documents(op.filter, limit=1) == 0:
            op.upsert_id = ObjectId()
            op.document = {**op.document, "_id": op.upsert_id}

    def after(self, write: Write) -> None:
        if not write.refresh:
            return
        raw = self.jobs.scope.raw
        new_ids: list = []
        download = write.urls
        plans: list = []
        changed: list = []
        deleted: list = []
        for i, op in write.ran():
            if op.kind == INSERT:
                new_ids.append(op.document["_id"])
                download = download or bool(find_urls(op.document))
            elif op.kind in (UPDATE, REPLACE):
                upserted = write.upserted.get(i)
                if upserted is None and op.upsert_id is not None and not op.existed \
                        and raw.count_documents({"_id": op.upsert_id}, limit=1):
                    upserted = op.upsert_id
                if upserted is not None:
                    new_ids.append(upserted)
                    download = download or bool(op.plan is not None and op.plan.download)
                if op.plan is not None:
                    plans.append(op.plan)
                    if i in write.found and write.found[i] != upserted:
                        changed.append(write.found[i])
            elif op.kind == DELETE:
                ids = [write.found[i]] if i in write.found else op.plan
                if ids:
                    deleted += ids
        write.jobs = self.jobs.for_write(new_ids, download=download, plans=plans, changed=changed, deleted=deleted)
