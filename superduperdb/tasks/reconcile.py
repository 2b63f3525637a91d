"""The reconciler: derived state checked against the documents, and repaired.

One pass over a collection (:func:`reconcile_pass`), for any writer (this
library, another program, a write whose jobs were lost):

0. **Digests** (a full pass, without ``ids``): the collection's per-partition digests are compared
   with the last pass's; only the partitions that changed, and the documents no library write
   stamped, are checked by the steps below (all of them on a first pass). So a pass over an
   unchanged collection reads no documents.
1. **Outputs**, watcher by watcher, upstream first: every document the
   watcher's filter matches whose output is missing or whose fingerprint is
   not that of its present input and the model's serving version is
   recomputed (at most ``reconcile.batch_size`` per watcher and pass; the
   report's ``remaining`` says how many wait for the next pass); outputs of
   documents that left the filter or lost the watched key are removed. Only
   inputs and fingerprints are read, never the outputs themselves. A document
   the model raises on is recorded (``list_errors()``) and logged once; it is
   not tried again until its input or the model's version changes
   (:mod:`superduperdb.store.failures`).
2. **Indexes**: vectors the master holds are checked against the checksum they had when read
   (``VERIFY_PER_PASS`` per pass, in turn; all before each snapshot), and memory that rotted is
   re-read from the documents; the master is given the (id, fingerprint) of every indexed
   output and re-reads what differs, forgets what is gone (``Master.sync``).
3. **Neighbourhoods**: lists that name a document no longer indexed, indexed
   documents without a list, and documents whose vector changed are recomputed.
4. **Job records**: ``pending``/``running`` records older than
   ``reconcile.lost_after`` whose task the scheduler no longer knows are marked
   ``failed`` ("lost"); their documents were repaired by the steps above.

Triggers: ``Collection.reconcile()`` (a ``reconcile`` job), and the master's
periodic sweep (:func:`sweep`, every ``reconcile.interval`` seconds), which waits
while model jobs younger than ``reconcile.defer`` seconds are in flight (they are
writing the outputs it would compute), at most ``reconcile.max_defer`` seconds in a row.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import uuid
from collections import Counter
from typing import Any

from ..master import handle
from ..master.handle import MasterHandle
from ..store import digests, records
from ..store.bulk import set_fields
from ..store.context import Context, Target, worker_dask_client
from ..store.digests import Digests
from ..store.dispatch import run_on_scheduler, submit
from ..store.layout import get_path, neighbourhood_path
from ..store.metadata import utcnow
from ..store.models import model_identity
from ..store.partitions import PARTITIONS, partition_of
from ..store.positions import PART, SEQ, next_seq
from ..store.semantic_indexes import IndexView
from ..store.watchers import active_watchers, and_
from .kinds import job_kind
from .outputs import (
    FailureLog,
    WatcherView,
    fingerprints_without_output,
    predict_each,
    recompute_outputs,
    remove_outputs,
    stale_inputs,
    write_outputs,
)
from .pipeline import chunks

logger = logging.getLogger(__name__)

READ_CHUNK = 5000
VERIFY_PER_PASS = 50_000  # vectors checked against their checksums per pass and index (in turn: all, over passes)
DIGESTS = digests.LAST_PASS  # the collection's digests at the last full pass
REPORT_KEYS = ("documents_checked", "outputs_computed", "outputs_failed", "outputs_removed", "remaining",
               "index_upserted", "index_removed", "index_rotted", "neighbour_lists", "jobs_lost")


def reconcile_pass(ctx: Context, ids: list | None = None, dask_client: Any = None) -> dict:
    """One pass over the collection (only ``ids``, if given); returns what it repaired, by kind and count.

    Without ``ids`` the pass compares the collection's per-partition digests with those of its last pass
    (:mod:`superduperdb.store.digests`) and checks only the partitions that changed, and the documents no
    library write stamped (which it then stamps): over an unchanged collection it reads no documents.

    ``dask_client``: the cluster the pass runs on (None: inline), asked about lost job
    records, and given the outputs of models that request worker resources to compute.
    """
    report: Counter = Counter({k: 0 for k in REPORT_KEYS})
    if ids is not None:
        scopes: list[tuple[dict, list | None, list | None]] = [({"_id": {"$in": list(ids)}}, list(ids), None)]
        now = None
    else:
        now = digests.compute(ctx.collection)
        dirty = now.differ(Digests.from_dict(ctx.metadata.get_setting(DIGESTS)))
        report.update(digest_partitions=len(dirty), digest_documents_read=now.documents_read)
        scopes = []
        if len(dirty) == PARTITIONS:
            scopes.append(({}, None, None))  # the first pass, or another digest source: everything
        else:
            if dirty:
                scopes.append(({PART: {"$in": dirty}}, None, dirty))
            if now.unstamped:
                unstamped = {"_id": {"$in": now.unstamped_ids}} if now.unstamped_ids is not None else \
                    {PART: {"$exists": False}}
                scopes.append((unstamped, [], None))
    for index in ctx.metadata.list("semantic_indexes"):  # vectors that rotted in the master's memory
        with master_for_job(ctx.config) as master:
            master.ensure(ctx.target, index, wait=ctx.config.cluster.timeout * 20)
            report["index_rotted"] += master.verify(ctx.target, index, VERIFY_PER_PASS)["rotted"]
    for scope, within, partitions in scopes:
        for row in active_watchers(ctx.metadata):
            _outputs(ctx, row, scope, report, dask_client, full=ids is None)
        for index in ctx.metadata.list("semantic_indexes"):
            changed = _index(ctx, index, scope, within, report, partitions)
            for hood in ctx.metadata.list("neighbourhoods", {"semantic_index": index["name"]}):
                _neighbourhood(ctx, index, hood, changed, scope, report)
    if now is not None:
        saved = now.to_dict()
        if now.unstamped:
            stamped = stamp_unstamped(ctx, now)
            report["documents_stamped"] = len(stamped)
            for part in {partition_of(i) for i in stamped}:  # not known yet: checked again next pass
                saved["buckets"][str(part)] = [-1, -1]
        ctx.metadata.table("meta").update_one({"name": DIGESTS}, {"$set": {"value": saved}}, upsert=True)
    report["jobs_lost"] = mark_lost_jobs(ctx, dask_client)
    return dict(report)


def stamp_unstamped(ctx: Context, now: Digests) -> list:
    """Give the documents other programs inserted their partition and a position (from now on they are
    found by partition, and a new master's catch-up reads them); return their ids."""
    ids = now.unstamped_ids
    if ids is None:
        ids = [d["_id"] for d in ctx.collection.find({PART: {"$exists": False}}, {"_id": 1})]
    seq = next_seq(ctx.collection, ctx.config.master.position_lag)
    set_fields(ctx.collection, ((i, {"$set": {PART: partition_of(i), SEQ: seq}}) for i in ids))
    return list(ids)


def _outputs(ctx: Context, row: dict, scope: dict, report: Counter, dask_client: Any = None,
             full: bool = False) -> None:
    view = WatcherView.of(row)
    model_row = ctx.metadata.get("models", row["model"])
    version = model_row.get("version")
    todo: list = []
    failures = FailureLog(ctx, view, model_row)
    if full:
        failures.forget_gone()  # a deleted document leaves list_errors() at the next full pass
    without_output = fingerprints_without_output(ctx, view, scope)
    cursor = ctx.collection.find(and_(view.filter, scope), view.projection).batch_size(READ_CHUNK)
    for chunk in chunks(cursor, READ_CHUNK):
        report["documents_checked"] += len(chunk)
        todo += stale_inputs(ctx, view, chunk, version, without_output, failures.known(chunk))
    limit = ctx.config.reconcile.batch_size
    if len(todo) > limit:
        report["remaining"] += len(todo) - limit
        todo = todo[:limit]
    computed = failed = 0
    if todo and row.get("resources") and dask_client is not None:
        # The model requests worker resources (a GPU ...): compute where its own jobs would.
        counts = _elsewhere(ctx, row, [i for i, _, _ in todo])
        computed, failed = counts["computed"], counts["failed"]
    elif todo:
        model = ctx.artifacts.get(model_row["artifact"], model_identity(model_row))
        for part in chunks(todo, READ_CHUNK):
            done, failing = predict_each(ctx, model, model_row, part, view.key)
            write_outputs(ctx, view, done)
            failures.succeeded(done)
            failures.add(failing)
        computed, failed = len(todo) - failures.count, failures.count
    report["outputs_computed"] += computed
    report["outputs_failed"] += failed
    if todo:
        ctx.log(f"{view.name}: recomputed {computed} outputs that were missing or stale"
                + (f" (on a worker offering {row['resources']})" if row.get("resources") and dask_client else "")
                + (f" ({failed} documents failed: list_errors())" if failed else ""))
    removed = remove_outputs(ctx, view, view.orphans(scope))
    if removed:
        report["outputs_removed"] += removed
        ctx.log(f"{view.name}: removed {removed} outputs of documents the watcher no longer covers")


def _elsewhere(ctx: Context, row: dict, ids: list) -> dict:
    """:func:`~.outputs.recompute_outputs` of ``ids`` on a worker offering the watcher's resources (waited for,
    with this task seceded from its worker's thread pool meanwhile, so that it cannot block that worker)."""
    from distributed import worker_client

    with worker_client() as client:
        future = submit(client, recompute_outputs, ctx.target, row["name"], ids,
                        row.get("chunk_size") or ctx.config.jobs.chunk_size, resources=row["resources"],
                        key=f"superduperdb-recompute-{uuid.uuid4().hex}", pure=False)
        return future.result(timeout=ctx.config.jobs.wait_timeout)


def _index(ctx: Context, index: dict, scope: dict, ids: list | None, report: Counter,
           partitions: list | None = None) -> list:
    view = IndexView.of(index)
    fp_path = view.fingerprint_path
    found = list(ctx.collection.find(and_(scope, view.has_output), {fp_path: 1}).batch_size(READ_CHUNK))
    with master_for_job(ctx.config) as master:
        master.ensure(ctx.target, index, wait=ctx.config.cluster.timeout * 20)
        result = master.sync(ctx.target, index, [d["_id"] for d in found], [get_path(d, fp_path) for d in found],
                             within=ids, partitions=partitions)
    report["index_upserted"] += result["upserted"]
    report["index_removed"] += result["removed"]
    return result["changed"]


def _neighbourhood(ctx: Context, index: dict, hood: dict, changed: list, scope: dict, report: Counter) -> None:
    path = neighbourhood_path(hood["name"])
    out_path = IndexView.of(index).path
    lists = {d["_id"]: get_path(d, path) or []
             for d in ctx.collection.find(and_(scope, {path: {"$exists": True}}), {path: 1})}
    checked = {d["_id"] for d in ctx.collection.find(and_(scope, {out_path: {"$exists": True}}), {"_id": 1})}
    indexed = set(checked)
    if scope:  # neighbours may lie outside the checked ids
        listed = list({n for neighbours in lists.values() for n in neighbours} - checked)
        indexed |= {d["_id"] for d in ctx.collection.find({"_id": {"$in": listed}, out_path: {"$exists": True}},
                                                          {"_id": 1})}
    redo = set(changed) & indexed
    redo |= {i for i, neighbours in lists.items() if i not in indexed or any(n not in indexed for n in neighbours)}
    redo |= {i for i in checked if i not in lists}
    if not redo:
        return
    gone = [i for i in redo if i not in indexed]
    if gone:
        ctx.collection.update_many({"_id": {"$in": gone}}, {"$unset": {path: ""}})
    keep = [i for i in redo if i in indexed]
    if keep:
        with master_for_job(ctx.config) as master:
            fresh = master.neighbours(ctx.target, index, keep, hood["n"])
        set_fields(ctx.collection, ((_id, {"$set": {path: n}}) for _id, n in fresh.items()))
    report["neighbour_lists"] += len(redo)


def known_keys(dask_scheduler: Any, keys: list) -> list:
    """Which of ``keys`` the scheduler knows (run on the scheduler)."""
    return [k for k in keys if k in dask_scheduler.tasks]


def mark_lost_jobs(ctx: Context, dask_client: Any) -> int:
    """Mark ``failed`` the unfinished records whose task the cluster no longer knows; return how many."""
    if dask_client is None:
        return 0
    cutoff = utcnow() - datetime.timedelta(seconds=ctx.config.reconcile.lost_after)
    rows = list(ctx.jobs.find({"status": {"$in": [records.PENDING, records.RUNNING]}, "key": {"$ne": None},
                               "created_at": {"$lt": cutoff}}, {"key": 1}))
    if not rows:
        return 0
    known = set(run_on_scheduler(dask_client, known_keys, keys=[r["key"] for r in rows]))
    lost = [r for r in rows if r["key"] not in known]
    for r in lost:
        records.finish(ctx.jobs, str(r["_id"]), records.FAILED,
                       error="lost: its task is no longer on the cluster (a worker or the database went away); "
                             "the reconciler repaired its documents")
    if lost:
        ctx.log(f"marked {len(lost)} lost job records failed")
    return len(lost)


@job_kind("reconcile")
def reconcile_job(ctx: Context, job_id: str, ids: list | None = None) -> dict:
    """``Collection.reconcile()``: one pass, reported in the job's result."""
    return reconcile_pass(ctx, ids, worker_dask_client())


DEFERRING_SINCE = "reconcile.deferring_since"


def _sweep_task(target: Target, ids: list | None = None) -> dict:
    ctx, dask_client = Context(target), worker_dask_client()
    if ids is None and _defer(ctx):
        # This program's own jobs are writing the outputs now; only lost jobs are looked for.
        return {**{k: 0 for k in REPORT_KEYS}, "jobs_lost": mark_lost_jobs(ctx, dask_client), "deferred": 1}
    report = reconcile_pass(ctx, ids, dask_client)
    if ids is None and ctx.metadata.get_setting(DEFERRING_SINCE) is not None:
        ctx.metadata.set_setting(DEFERRING_SINCE, None)
    return report


def _defer(ctx: Context) -> bool:
    """Whether a periodic full pass waits: model jobs younger than ``reconcile.defer`` seconds are
    in flight, and passes have not waited ``reconcile.max_defer`` seconds already."""
    cfg = ctx.config.reconcile
    if not cfg.defer:
        return False
    now = utcnow()
    recent = {"kind": "model", "status": {"$in": [records.PENDING, records.RUNNING]},
              "created_at": {"$gt": now - datetime.timedelta(seconds=cfg.defer)}}
    if not ctx.jobs.count_documents(recent, limit=1):
        return False
    since = ctx.metadata.get_setting(DEFERRING_SINCE)
    if since is None:
        ctx.metadata.set_setting(DEFERRING_SINCE, now)
        return True
    return now - since.replace(tzinfo=None) < datetime.timedelta(seconds=cfg.max_defer)


def sweep(target: Target, dask_client: Any = None, ids: list | None = None) -> dict:
    """One pass of the master's reconciler over ``target`` (only ``ids``, from a change stream, if given):
    as a task on the cluster when there is one, else right here."""
    if dask_client is None:
        return _sweep_task(target, ids)
    import distributed

    future = submit(dask_client, _sweep_task, target, ids, key=f"superduperdb-sweep-{uuid.uuid4().hex}", pure=False)
    distributed.fire_and_forget(future)
    timeout = Context(target).config.cluster.timeout * 20
    return future.result(timeout=timeout)


# -- the one factory of master handles --------------------------------------------------------------
def master_handle(dask_client: Any, config: Any) -> MasterHandle:
    """The cluster's master (``dask_client`` None: this process's), whoever asks first creating it
    with its reconciler (:func:`sweep`). The one way to a master: the client's services and the jobs."""
    return MasterHandle.from_config(dask_client, config, sweep=sweep)


def master_for_job(config: Any) -> contextlib.AbstractContextManager[MasterHandle]:
    """The master, seen from a job (:func:`superduperdb.master.handle.master_for_job`), with its reconciler."""
    return handle.master_for_job(config, sweep)

