"""The one write door: every write verb of a Collection passes through :class:`WriteService`.

As pymongo's ``insert_many`` and ``bulk_write`` both build one ``_Bulk`` and
execute it, every verb here (``insert_one``, ``insert_many``, ``update_one``,
``update_many``, ``replace_one``, ``delete_one``, ``delete_many``,
``find_one_and_update|replace|delete``, ``bulk_write``, and ``from_dask``)
builds one :class:`Write`, a list of :class:`Op` s plus pymongo's options, and
hands it to :meth:`WriteService.execute`, which runs::

    for rule in rules: rule.before(write)   # in order; may rewrite the operations
    store the write                          # the verb's one call to the store
    for rule in rules: rule.after(write)    # in order, on what the store carried out,
                                             # also when it partly failed (raised after)

So a rule about writes is written once and holds for every verb. The rules,
in order (:meth:`WriteService.rules`, defined in :mod:`.write_rules`; :class:`Write` and
:class:`Op` are in :mod:`.write_ops`):

1. ``NewDocuments``: a new document gets an ``_id``, and no ``_fold``
   (:func:`superduperdb.store.writes.prepare_new`, which the workers of
   ``from_dask`` apply to the documents they make);
2. ``Encode``: filters, updates, replacements and documents are checked and
   their typed values encoded;
3. ``Pinned``: a one-document update or replacement with ``sort`` is pinned
   to the ``_id`` the sort picks, so the store and the jobs agree on it;
4. ``Folds``: a replacement keeps the replaced document's ``_fold``. No
   write adds one (not an insert, an upsert, ``bulk_write`` or ``from_dask``):
   documents get a fold when training, a validation or a validation set first
   needs the split (:mod:`superduperdb.store.folds`), stable from then on. The
   rule stays for replacements only: a replacement holds the caller's fields
   alone, so without it a validation document would lose its fold and could
   be drawn into training by the next split;
5. ``Position``: the write takes a number of the collection's write position,
   stamped on what it writes (``_sdb``); deletes leave tombstones
   (:mod:`superduperdb.store.positions`);
6. ``Watched``: the collection's first write here has the master's
   reconciler sweep it;
7. ``Jobs``: the jobs the write implies are planned before it and submitted
   after it, for every document it inserted, upserted, changed or deleted.

**Where a new rule goes**: a :class:`WriteRule` subclass in :mod:`.write_rules`,
added to the list in :meth:`WriteService.rules` at the place its order needs
(each rule sees what the rules before it did). For example the write
position (``Position``) goes after ``Folds`` and before ``Jobs``
(``before`` stamps the operations; ``after`` records the deleted ids);
counters of writes and jobs go last
(``after`` reads ``write.ran()`` and ``write.jobs``). A rule about new documents
that must also hold for ``from_dask`` goes into :func:`~superduperdb.store.writes.prepare_new`.
A rule is a small class; for example one that counts what was written::

    class CountWrites(WriteRule):
        def __init__(self, counter):
            self.counter = counter

        def after(self, write):
            self.counter.labels(verb=write.verb).inc(len(write.ran()))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

import pymongo.collection
from pymongo.errors import BulkWriteError

from ..errors import QueryError
from ..store import bulk
from . import write_rules as rules
from .write_ops import DELETE, INSERT, REPLACE, UPDATE, Op, Write, WriteRule, op_of, pymongo_op, written_by

if TYPE_CHECKING:
    from ..jobs.handles import JobGroup
    from ..jobs.service import JobService
    from .scope import Scope

__all__ = ["Op", "Write", "WriteRule", "WriteService", "written_by"]


@cache
def _signature(method: str) -> inspect.Signature:
    return inspect.signature(getattr(pymongo.collection.Collection, method))


@cache
def _keywords(method: str, leading: int) -> tuple[frozenset, bool]:
    """The names pymongo's ``Collection.<method>`` takes after its ``leading`` arguments, and whether
    it takes any keyword (``**kwargs``)."""
    params = list(_signature(method).parameters.values())[1 + leading:]
    return (frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD),
            any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params))


def call_options(method: str, leading: int, args: tuple, kwargs: dict) -> dict:
    """pymongo's keyword arguments of ``Collection.<method>`` from a call's extra positional and
    keyword arguments (after its ``leading`` ones); a name pymongo does not know raises its ``TypeError``.

    >>> call_options("update_one", 2, (True,), {"hint": "x_1"})
    {'upsert': True, 'hint': 'x_1'}
    """
    if not args:  # the common case, without binding (a write's own cost matters: insert_one in a loop)
        names, any_keyword = _keywords(method, leading)
        if any_keyword or names.issuperset(kwargs):
            return dict(kwargs)
    bound = _signature(method).bind(None, *([None] * leading), *args, **kwargs).arguments
    names = list(_signature(method).parameters)[1 + leading:]
    options: dict = {}
    for name in names:
        if name not in bound:
            continue
        if _signature(method).parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            options.update(bound[name])
        else:
            options[name] = bound[name]
    return options


class WriteService:
    """Every write of one collection: builds a :class:`Write` per verb and executes it under the rules.

    Parameters
    ----------
    scope : Scope
    jobs : JobService
    watch : callable
        Has the master's reconciler sweep this collection (called on the first write).
    """

    def __init__(self, scope: Scope, jobs: JobService, watch: Callable[[], None]) -> None:
        self.scope = scope
        self.jobs = jobs
        self._hooks: tuple[list, list] | None = None  # the rules' own before and after methods, in order
        self._watch = watch

    def rules(self) -> list[WriteRule]:
        """The write rules, in the order they apply (the one place to add a rule)."""
        scope = self.scope
        return [
            rules.NewDocuments(),
            rules.Encode(scope.types),
            rules.Pinned(scope.raw),
            rules.Folds(scope.raw, scope.config),
            rules.Position(scope.raw, scope.config, self.jobs.before_delete),
            rules.Watched(self._watch),
            rules.Jobs(self.jobs),
        ]

    # -- the door ------------------------------------------------------------------------------
    def execute(self, write: Write, store: Callable[[Write], None]) -> Write:
        """Apply every rule's ``before``, ``store(write)``, then every rule's ``after``; return ``write``.

        When the store write fails after carrying out part of the write (a
        ``BulkWriteError``, a failed partition), ``store`` records what ran in
        ``write.executed``; the rules' ``after`` still run, then the error is raised.
        """
        if self._hooks is None:
            made = self.rules()
            self._hooks = ([r.before for r in made if type(r).before is not WriteRule.before],
                           [r.after for r in made if type(r).after is not WriteRule.after])
        before, after = self._hooks
        for hook in before:
            hook(write)
        error: BaseException | None = None
        try:
            store(write)
        except BaseException as exc:
            if write.executed is None:  # nothing is known to have been written
                raise
            error = exc
        for hook in after:
            hook(write)
        if error is not None:
            raise error
        return write

    # -- inserts -------------------------------------------------------------------------------
    def insert_one(self, document: Any, args: tuple, kwargs: dict, refresh: bool) -> tuple[Any, JobGroup | None]:
        options = call_options("insert_one", 1, args, kwargs)
        write = Write("insert_one", [Op(INSERT, document=document, path="document")], refresh, options=options)
        self.execute(write, self._store_insert_one)
        return write.result, write.jobs

    def _store_insert_one(self, write: Write) -> None:
        write.result = self.scope.raw.insert_one(write.ops[0].document, **write.options)

    def insert_many(self, documents: Any, ordered: bool, args: tuple, kwargs: dict,
                    refresh: bool) -> tuple[Any, JobGroup | None]:
        if isinstance(documents, Mapping) or not isinstance(documents, Iterable):
            raise QueryError("documents must be a non-empty list of dicts.", argument="documents")
        documents = list(documents)
        if not documents:
            raise QueryError("documents must be a non-empty list of dicts.", argument="documents")
        options = call_options("insert_many", 1, (ordered, *args), kwargs)
        ops = [Op(INSERT, document=doc, path=f"documents[{i}]") for i, doc in enumerate(documents)]
        write = Write("insert_many", ops, refresh, ordered=bool(options.get("ordered", True)), options=options)
        self.execute(write, self._store_insert_many)
        return write.result, write.jobs

    def _store_insert_many(self, write: Write) -> None:
        docs = [op.document for op in write.ops]
        try:
            write.result = self.scope.raw.insert_many(docs, **write.options)
        except BulkWriteError as exc:
            write.executed = written_by(exc, len(docs), write.ordered)
            raise

    # -- updates -------------------------------------------------------------------------------
    def update(self, method: str, filter: Any, update: Any, args: tuple, kwargs: dict,
               refresh: bool) -> tuple[Any, JobGroup | None]:
        """``update_one``/``update_many``: the raw result and the jobs."""
        return self._update(method, UPDATE, filter, update, args, kwargs, refresh)

    def replace_one(self, filter: Any, replacement: Any, args: tuple, kwargs: dict,
                    refresh: bool) -> tuple[Any, JobGroup | None]:
        return self._update("replace_one", REPLACE, filter, replacement, args, kwargs, refresh)

    def _update(self, method: str, kind: str, filter: Any, document: Any, args: tuple, kwargs: dict,
                refresh: bool) -> tuple[Any, JobGroup | None]:
        options = call_options(method, 2, args, kwargs)
        op = Op(kind, filter=filter, document=document, many=method == "update_many",
                upsert=bool(options.get("upsert")), sort=options.pop("sort", None))
        write = Write(method, [op], refresh, options=options)
        self.execute(write, self._store_update)
        return write.result, write.jobs

    def _store_update(self, write: Write) -> None:
        op = write.ops[0]
        write.result = getattr(self.scope.raw, write.verb)(op.filter, op.document, **write.options)
        if write.result.upserted_id is not None:
            write.upserted[0] = write.result.upserted_id

    # -- deletes -------------------------------------------------------------------------------
    def delete(self, method: str, filter: Any, args: tuple, kwargs: dict) -> tuple[Any, JobGroup | None]:
        options = call_options(method, 1, args, kwargs)
        write = Write(method, [Op(DELETE, filter=filter, many=method == "delete_many")], options=options)
        self.execute(write, self._store_delete)
        return write.result, write.jobs

    def _store_delete(self, write: Write) -> None:
        write.result = getattr(self.scope.raw, write.verb)(write.ops[0].filter, **write.options)

    # -- find-and-modify -----------------------------------------------------------------------
    def find_and_modify(self, method: str, filter: Any, second: Any, args: tuple, kwargs: dict) -> dict | None:
        """``find_one_and_update|replace|delete``: the raw document pymongo returns; jobs are submitted."""
        from ..store.writes import with_id

        leading = 1 if method == "find_one_and_delete" else 2
        options = call_options(method, leading, args, kwargs)
        options["projection"], hide_id = with_id(options.get("projection"))
        if options["projection"] is None:
            del options["projection"]
        kind = {"find_one_and_update": UPDATE, "find_one_and_replace": REPLACE}.get(method, DELETE)
        op = Op(kind, filter=filter, document=second, upsert=bool(options.get("upsert")), sort=options.get("sort"))
        write = Write(method, [op], options=options)
        self.execute(write, self._store_find_and_modify)
        doc = write.result
        if hide_id and isinstance(doc, dict):
            doc.pop("_id", None)
        return doc

    def _store_find_and_modify(self, write: Write) -> None:
        op = write.ops[0]
        raw = getattr(self.scope.raw, write.verb)
        args = (op.filter,) if op.kind == DELETE else (op.filter, op.document)
        write.result = doc = raw(*args, **write.options)
        if isinstance(doc, dict) and "_id" in doc:
            write.found[0] = doc["_id"]

    # -- bulk ----------------------------------------------------------------------------------
    def bulk_write(self, requests: Any, ordered: bool, refresh: bool, args: tuple,
                   kwargs: dict) -> tuple[dict, bool, JobGroup | None]:
        """``bulk_write`` on every store: ``(bulk_api_result, acknowledged, jobs)``."""
        if not isinstance(requests, list) or not requests:
            raise QueryError("requests must be a non-empty list of InsertOne/UpdateOne/... operations.",
                             argument="requests")
        options = call_options("bulk_write", 1, (ordered, *args), kwargs)
        ops = [op_of(request, f"requests[{i}]") for i, request in enumerate(requests)]
        write = Write("bulk_write", ops, refresh, ordered=bool(options.pop("ordered", True)), options=options)
        self.execute(write, self._store_bulk)
        bulk_api, acknowledged = write.result
        return bulk_api, acknowledged, write.jobs

    def _store_bulk(self, write: Write) -> None:
        requests = [pymongo_op(op) for op in write.ops]
        try:
            write.result = bulk.bulk_write(self.scope.raw, requests, write.ordered, **write.options)
        except BulkWriteError as exc:
            write.executed = written_by(exc, len(requests), write.ordered)
            write.upserted = {u["index"]: u["_id"] for u in exc.details.get("upserted", [])}
            raise
        write.upserted = {u["index"]: u["_id"] for u in write.result[0].get("upserted", [])}

    # -- from a Dask DataFrame -----------------------------------------------------------------
    def from_dask(self, ddf: Any, refresh: bool) -> tuple[list, JobGroup | None]:
        """Insert a Dask DataFrame's partitions, each by a worker: ``(inserted ids, jobs)``.

        A partition that fails raises its error after the jobs of those that were written are submitted.
        """
        write = Write("from_dask", [], refresh)
        self.execute(write, lambda w: self._store_partitions(w, ddf))
        return [op.document["_id"] for op in write.ops], write.jobs

    def _store_partitions(self, write: Write, ddf: Any) -> None:
        from ..store.dispatch import delayed
        from ..tasks.frames import insert_partition

        target = self.scope.target
        tasks = [delayed(insert_partition)(target, part) for part in ddf.to_delayed()]
        done, error = run_tasks(self.scope, tasks)
        write.ops = [Op(INSERT, document={"_id": i}) for r in done for i in r["ids"]]
        write.urls = any(r["urls"] for r in done)
        if error is not None:
            write.executed = set(range(len(write.ops)))
            raise error


def run_tasks(scope: Scope, tasks: list) -> tuple[list, BaseException | None]:
    """Results of delayed tasks on the cluster (inline: here, one after the other), and the first error."""
    import dask

    cluster = scope.cluster
    done, error = [], None
    if cluster.inline:
        for task in tasks:
            try:
                done.append(dask.compute(task, scheduler="sync")[0])
            except Exception as exc:  # noqa: BLE001 - raised after the others ran
                error = error or exc
        return done, error
    timeout = scope.config.jobs.wait_timeout
    for future in cluster.client.compute(tasks):
        try:
            done.append(future.result(timeout=timeout))
        except Exception as exc:  # noqa: BLE001 - raised after the others ran
            error = error or exc
    return done, error
