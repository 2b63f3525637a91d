"""The ``model`` job: compute a watcher's outputs and store them in the documents.

Each output goes to ``_outputs.<key>.<model>`` together with its fingerprint
at ``_fingerprints.<key>.<model>`` (see :mod:`superduperdb.store.layout`),
with ``$set`` keyed by ``_id``: a job that runs again (a retry, a
recomputation after a lost worker) rewrites the same values, and skips the
documents whose output is already current.

With ``ids`` and ``settle`` (the jobs of updates), the job also removes the outputs of those documents that no
longer match the watcher's filter or lost the watched key, so every write
path (``$unset``, ``$rename``, a changed filter field, a replacement) ends
with exactly the outputs the document's current content implies.

Bad documents: a model batch that raises is split until the failing
documents are found (:func:`~superduperdb.models.batching.isolate`); every
other document gets its output, and each failing one a record in
``<collection>._errors`` (:mod:`superduperdb.store.failures`), which keeps it
from being tried again until its input or the model's version changes. The
job succeeds with ``failed: n`` in its result, unless every document it tried
failed (then the model, not the data, is the likely cause: the job fails with
the first document's error, after recording them all). A watcher created with
``on_error='raise'`` keeps the all-or-nothing rule: the first error fails the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pymongo.errors
from bson.binary import Binary

from ..errors import JobCancelledError
from ..models.batching import isolate
from ..store import failures as failure_records
from ..store import records
from ..store.bulk import update_each
from ..store.context import Context, Target
from ..store.failures import Failure
from ..store.layout import (
    MISSING,
    fingerprint,
    fingerprint_path,
    get_path,
    input_projection,
    model_input,
    output_path,
    pending_download,
)
from ..store.models import model_identity
from ..store.positions import SEQ, next_seq
from ..store.watchers import and_, load_filter
from ..types.encoding import CONTENT
from .kinds import job_kind
from .pipeline import Progress, chunks, run_pipelined, step_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatcherView:
    """What a job needs of one watcher: where its input and output live, and its filter."""

    name: str
    model: str
    key: str
    features: dict
    filter: dict
    path: str
    fingerprint_path: str

    @classmethod
    def of(cls, row: dict) -> WatcherView:
        return cls(row["name"], row["model"], row["key"], dict(row.get("features") or {}),
                   load_filter(row.get("filter")), output_path(row["key"], row["model"]),
                   fingerprint_path(row["key"], row["model"]))

    @property
    def projection(self) -> dict | None:
        """The input fields and the stored fingerprint (None: whole documents)."""
        fields = input_projection(self.key, self.features)
        return None if fields is None else {**{f: 1 for f in fields}, self.fingerprint_path: 1}

    @property
    def input_missing(self) -> dict | None:
        """A query for documents without the watched input (None: never missing, ``_base``)."""
        fields = input_projection(self.key, self.features)
        return None if fields is None else {fields[0]: {"$exists": False}}

    def orphans(self, scope: dict) -> dict:
        """Documents in ``scope`` that have an output but should not: outside the filter, or without input."""
        wrong = [{"$nor": [self.filter]}] if self.filter else []
        if self.input_missing is not None:
            wrong.append(self.input_missing)
        if not wrong:
            return {}
        return and_(scope, {"$or": [{self.path: {"$exists": True}}, {self.fingerprint_path: {"$exists": True}}]},
                    wrong[0] if len(wrong) == 1 else {"$or": wrong})


def encode_outputs(ctx: Context, model_row: dict, outputs: list) -> list:
    """Outputs encoded for MongoDB: with the model's ``type`` if it has one, else per value."""
    if model_row.get("type"):
        out_type = ctx.types.get(model_row["type"])
        return [{CONTENT: {"bytes": Binary(out_type.encode(y)), "type": model_row["type"]}} for y in outputs]
    return ctx.types.encode_many(outputs, path="outputs")


class Computed(NamedTuple):
    """One output to store: the document's id, the raw input it was computed from, its fingerprint, the output."""

    id: Any
    input: Any
    fingerprint: str
    output: Any


def write_outputs(ctx: Context, view: WatcherView, computed: list[Computed], guard: bool = True) -> None:
    """``$set`` each output and its fingerprint, in unordered bulk writes.

    ``guard``: write only where the input is still the one the output was
    computed from, so that a job that read a document before a later write
    cannot overwrite the output of that write's job with a stale one (the
    later write's own job computes it).
    """
    field = input_projection(view.key, view.features) if guard else None
    seq = next_seq(ctx.collection, ctx.config.master.position_lag)  # the write position: a new master catches up from it
    update_each(ctx.collection, (({"_id": c.id, **({field[0]: c.input} if field else {})},
                                  {"$set": {view.path: c.output, view.fingerprint_path: c.fingerprint, SEQ: seq}})
                                 for c in computed))


def remove_outputs(ctx: Context, view: WatcherView, query: dict) -> int:
    """``$unset`` the output and fingerprint of the documents matching ``query``; return how many."""
    if not query:
        return 0
    result = ctx.collection.update_many(query, {"$unset": {view.path: "", view.fingerprint_path: ""},
                                                "$set": {SEQ: next_seq(ctx.collection, ctx.config.master.position_lag)}})
    return result.modified_count


def stale_inputs(ctx: Context, view: WatcherView, docs: list[dict], version: Any,
                 without_output: set | None = None, failed: dict | None = None) -> list[tuple[Any, Any, str]]:
    """``(id, raw input, new fingerprint)`` of the documents whose output is missing or not current.

    Documents without their input (or with a download still pending) are left
    out, and so are those whose recorded failure (``failed``: ``{id:
    fingerprint}``, :func:`superduperdb.store.failures.known`) is for this very
    input and version. A fingerprint whose output was removed (by hand) is not current:
    ``without_output`` names such documents when the caller knows them
    (:func:`fingerprints_without_output`), else they are looked up here.
    """
    todo, current = [], []
    failed = failed or {}
    for doc in docs:
        value = model_input(doc, view.key, view.features)
        if value is MISSING or pending_download(value):
            continue
        fp = fingerprint(version, value)
        if failed.get(doc["_id"]) == fp:
            continue
        (current if get_path(doc, view.fingerprint_path) == fp else todo).append((doc["_id"], value, fp))
    if current:
        if without_output is None:
            without_output = fingerprints_without_output(ctx, view, {"_id": {"$in": [i for i, _, _ in current]}})
        todo += [t for t in current if t[0] in without_output]
    return todo


def fingerprints_without_output(ctx: Context, view: WatcherView, scope: dict) -> set:
    """Ids of the documents in ``scope`` that have a fingerprint but no output."""
    query = and_(scope, {view.fingerprint_path: {"$exists": True}, view.path: {"$exists": False}})
    return {d["_id"] for d in ctx.collection.find(query, {"_id": 1})}


def predict(ctx: Context, model: Any, model_row: dict, todo: list[tuple[Any, Any, str]],
            key: str = "input") -> list[Computed]:
    """The model's encoded outputs for ``(id, raw input, fingerprint)`` items.

    An input that cannot be decoded fails the job with a :class:`DecodingError`
    naming its document's ``_id`` and ``key`` (the watched field).
    """
    inputs = [ctx.types.decode({"_id": i, key: x})[key] for i, x, _ in todo]
    outputs = encode_outputs(ctx, model_row, model.predict(inputs))
    return [Computed(i, x, fp, y) for (i, x, fp), y in zip(todo, outputs)]


# Never isolated per document: they stop the job (a lost database is retried, a cancel is a cancel).
NOT_ISOLATED = (pymongo.errors.ConnectionFailure, JobCancelledError)


def predict_each(ctx: Context, model: Any, model_row: dict, todo: list[tuple[Any, Any, str]],
                 key: str = "input") -> tuple[list[Computed], list[Failure]]:
    """:func:`predict`, with the documents the model raises on set aside: ``(computed, failures)``.

    A batch that raises is split until the failing documents are found
    (:func:`~superduperdb.models.batching.isolate`); every other one is computed.
    """
    found = isolate(lambda batch: predict(ctx, model, model_row, batch, key), todo, reraise=NOT_ISOLATED)
    computed = [c for i, c in enumerate(found.outputs) if i not in found.failures]
    failed = [Failure(todo[i][0], todo[i][1], todo[i][2], exc, tb) for i, (exc, tb) in sorted(found.failures.items())]
    return computed, failed


# A job logs its first failed documents one line each, the rest in one line per batch.
LOGGED_FAILURES = 20


class FailureLog:
    """A job's failed documents: recorded in ``<collection>._errors`` and logged, once each.

    It also knows which documents had failed before (so they are not tried
    again while their input and the model's version are the same) and clears
    the records of those that succeed now.
    """

    def __init__(self, ctx: Context, view: WatcherView, model_row: dict) -> None:
        self.ctx, self.view, self.model_row = ctx, view, model_row
        self.table = ctx.metadata.table("errors")
        self.count = 0
        self.first: Failure | None = None
        self._before = failure_records.any_for(self.table, view.name)  # no look-ups at all when there are none

    def known(self, docs: list[dict]) -> dict:
        """``{id: fingerprint}`` of earlier failures among ``docs``."""
        if not self._before:
            return {}
        return failure_records.known(self.table, self.view.name, [d["_id"] for d in docs])

    def forget_gone(self) -> int:
        """Remove the records of documents that no longer exist (deleted since they failed); return how many."""
        if not self._before:
            return 0
        known = list(failure_records.known(self.table, self.view.name))
        present = {d["_id"] for d in self.ctx.collection.find({"_id": {"$in": known}}, {"_id": 1})}
        return failure_records.clear(self.table, self.view.name, [i for i in known if i not in present])

    def succeeded(self, computed: list[Computed]) -> None:
        if self._before and computed:
            failure_records.clear(self.table, self.view.name, [c.id for c in computed])

    def add(self, failed: list[Failure]) -> None:
        if not failed:
            return
        self.first = self.first or failed[0]
        self.count += len(failed)
        failure_records.record(self.table, self.view.name, self.view.model, self.view.key,
                               self.model_row.get("version"), failed, self.ctx.job_id)
        shown = max(0, LOGGED_FAILURES - (self.count - len(failed)))  # one line each, up to a bound per job
        for f in failed[:shown]:
            message = (f"{self.view.name}: model {self.view.model!r} failed on document {f.id!r} "
                       f"({type(f.error).__name__}: {f.error}); recorded in list_errors()")
            self.ctx.log(message)
            logger.warning("%s", message)
        if len(failed) > shown:
            message = (f"{self.view.name}: model {self.view.model!r} failed on {len(failed) - shown} more "
                       "document(s); list_errors() has them all")
            self.ctx.log(message)
            logger.warning("%s", message)


def compute(ctx: Context, view: WatcherView, model: Any, model_row: dict, version: Any, query: dict,
            chunk_size: int, write: Callable[[list[Computed]], None], on_progress: Callable[[int], None] | None = None,
            cancellable: bool = True, on_chunk: Callable[[], None] | None = None,
            failures: FailureLog | None = None) -> tuple[int, int]:
    """Apply ``model`` to the stale inputs among the documents matching ``query``; ``write(computed)`` per batch.

    Chunks of ``chunk_size`` documents are read one ahead, each chunk's stale
    inputs go to the model in batches (:func:`~.pipeline.step_size`), and each
    batch's outputs are written while the model works on the next one
    (:func:`~.pipeline.run_pipelined`). ``on_progress(n)`` counts documents done;
    ``on_chunk()`` is called after each chunk's outputs are computed.
    ``cancellable``: stop (:class:`JobCancelledError`) when the job's record says cancelled.
    ``failures``: documents the model raises on are set aside and handed to it
    (:class:`FailureLog`); without it, the first error stops everything.
    Returns ``(documents read, outputs computed)`` (computed: attempted, failures included).
    """
    check = ctx.check_cancelled if cancellable else (lambda: None)
    step = step_size(model, chunk_size)
    counts = [0, 0]

    def work(chunk: list[dict]) -> Iterator[list[Computed] | None]:
        todo = stale_inputs(ctx, view, chunk, version, failed=failures.known(chunk) if failures else None)
        counts[0] += len(chunk)
        counts[1] += len(todo)
        if on_progress is not None:
            on_progress(len(chunk) - len(todo))  # current outputs: done already
        for batch in chunks(todo, step):
            if failures is None:
                results = predict(ctx, model, model_row, batch, view.key)
            else:
                results, failed = predict_each(ctx, model, model_row, batch, view.key)
                failures.add(failed)
                failures.succeeded(results)
            if on_progress is not None:
                on_progress(len(batch))
            yield results
        if on_chunk is not None:
            on_chunk()

    with ctx.collection.find(query, view.projection).batch_size(chunk_size) as cursor:  # closed on errors too
        run_pipelined(chunks(cursor, chunk_size), work, write, check)
    return counts[0], counts[1]


@job_kind("model")
def compute_outputs(ctx: Context, job_id: str, watcher: str, ids: list | None = None, chunk_size: int = 5000,
                    settle: bool = False) -> dict:
    """Bring the watcher's outputs of ``ids`` (or of every document) up to date.

    ``settle`` (jobs of updates and replacements): also remove the outputs of
    those ``ids`` that left the watcher's filter or lost its key. Jobs of
    inserts skip that query: a new document has no output to remove.
    """
    row = ctx.metadata.get("watchers", watcher)
    model_row = ctx.metadata.get("models", row["model"])
    model = ctx.artifacts.get(model_row["artifact"], model_identity(model_row))  # the version named in model_row, read once
    view = WatcherView.of(row)
    scope = {"_id": {"$in": list(ids)}} if ids is not None else {}
    total = ctx.collection.count_documents(and_(view.filter, scope)) if ids is None else len(ids)
    if ids is None and ctx.job_id is not None:
        records.describe(ctx.jobs, ctx.job_id, documents=total)  # the watcher's lag counts what is left
    progress = Progress(ctx, total, watcher)
    failures = None if row.get("on_error") == "raise" else FailureLog(ctx, view, model_row)
    read, computed = compute(ctx, view, model, model_row, model_row.get("version"), and_(view.filter, scope),
                             chunk_size, lambda computed: write_outputs(ctx, view, computed), progress.advance,
                             on_chunk=progress.log, failures=failures)
    progress.close()
    failed = failures.count if failures is not None else 0
    if failed and failed == computed:
        # Every document it tried failed: most likely the model, not the data. The job fails
        # with the first document's own error (and traceback); each one is recorded all the same.
        raise failures.first.error
    removed = remove_outputs(ctx, view, view.orphans(scope)) if settle and ids is not None else 0
    return {"computed": computed - failed, "failed": failed, "current": read - computed, "removed": removed,
            "path": view.path}


def recompute_outputs(target: Target, watcher: str, ids: list, chunk_size: int = 5000) -> dict:
    """Compute the missing or stale outputs of ``watcher`` for ``ids``: ``{'computed', 'failed'}`` counts.

    A Dask task: the reconciler's pass hands it the documents it found stale when the
    watcher's model requests worker resources (``{'GPU': 1}`` ...), so that it runs on
    a worker that offers them, as the model's own jobs do. Documents the model raises on
    are recorded (``list_errors()``), as in the reconciler's own pass.
    """
    ctx = Context(target)
    row = ctx.metadata.get("watchers", watcher)
    model_row = ctx.metadata.get("models", row["model"])
    model = ctx.artifacts.get(model_row["artifact"], model_identity(model_row))
    view = WatcherView.of(row)
    failures = FailureLog(ctx, view, model_row)
    _, computed = compute(ctx, view, model, model_row, model_row.get("version"),
                          and_(view.filter, {"_id": {"$in": list(ids)}}), chunk_size,
                          lambda batch: write_outputs(ctx, view, batch), cancellable=False, failures=failures)
    return {"computed": computed - failures.count, "failed": failures.count}
