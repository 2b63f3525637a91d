"""The ``promote`` job: make a model version the serving one, outputs and indexes included.

Used after every training (depending on the ``train`` job) and by
``restore_model_version`` (rollback). Serving state, and who reads it:

* the model row's ``version``/``artifact``: what model jobs (inserts,
  updates) and the encoding of ``like`` queries use;
* ``_outputs.<key>.<model>`` in the documents: what users read and what the
  master loads into its index;
* the semantic-index row's ``uid``: the master keeps one in-memory index per
  ``uid``, so a new ``uid`` means a fresh index loaded from MongoDB.

The switch, and why the index never serves a mix of versions:

1. **Stage** (long; nothing that serves changes): for every watcher of the
   models, outputs of the new version are computed for all matching
   documents and kept aside: in the job's memory when there are at most
   ``memory_stage_limit`` documents, else written beside the serving ones at
   ``_outputs._staging:<model>:<key>`` (``{'version', 'value'}``). A cancel
   or an error here drops the staged values and the previous version keeps
   serving, untouched.
2. **Swap** (short): staged values replace ``_outputs.<key>.<model>`` document
   by document. The master is not told, so it keeps serving the old index with
   the old query encoder: consistent.
3. **Flip**: the model row's ``version``/``artifact`` is set (one atomic
   document update); right after it, each semantic index that uses the model
   gets a new ``uid`` (one atomic update), and the master loads the new index
   from the swapped outputs (the old one is dropped). Between these two single
   document writes (milliseconds), a query is encoded by the new version but
   searched in the old index: the only window where versions meet.
4. **Catch up**: documents written while this ran were processed by model jobs
   that loaded the old version. Every model job of these watchers that started
   before the flip and was still running at the stage's start, or finished
   after it, is waited for (with its index jobs), and its documents, with any
   document still lacking an output, are recomputed with the new version and
   refreshed in the new index.

Jobs created after the flip load the new version themselves. Documents
written with ``refresh=False`` or outside superduperdb are caught up by the
reconciler (their fingerprints name the old version). Watchers created by ``create_imputation`` before the
first training (inactive, ``awaiting_training``) are computed in step 1 and
activated at the flip.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from ..errors import TrainingCancelled, TrainingError
from ..store import records
from ..store.bulk import set_fields
from ..store.context import Context
from ..store.layout import OUTPUTS, model_field
from ..store.metadata import utcnow
from ..store.models import follow_parent, load_model
from ..store.watchers import and_, load_filter
from .kinds import job_kind
from .outputs import WatcherView, compute, write_outputs
from .pipeline import Progress
from .reconcile import master_for_job

logger = logging.getLogger(__name__)

STAGING = "_staging"


@dataclass(frozen=True)
class PromoteSpec:
    """``versions`` ({model: version}) to serve, or ``from_job``: the training job whose result names them."""

    versions: dict = field(default_factory=dict)
    from_job: str | None = None
    chunk_size: int = 5000
    catch_up_timeout: float = 120.0
    memory_stage_limit: int = 50_000


def staging_path(model: str, key: str) -> str:
    """Where a watcher's staged outputs live in a document (one field, no nesting left behind)."""
    return f"{OUTPUTS}.{STAGING}:{model_field(model)}:{key.replace('.', ':')}"


def resolve_versions(ctx: Context, spec: PromoteSpec) -> dict[str, int]:
    versions = dict(spec.versions)
    if spec.from_job:
        record = ctx.jobs.find_one({"_id": records.oid(spec.from_job)}) or {}
        if record.get("status") != "success":
            raise TrainingError(f"did not run: training job {spec.from_job} is {record.get('status')!r}; "
                                "the previous version keeps serving.", job_id=spec.from_job)
        versions.update((record.get("result") or {}).get("versions") or {})
    if not versions:
        raise TrainingError("No model version to promote.")
    return versions


def _clear_staging(ctx: Context, rows: list[dict]) -> None:
    for row in rows:
        path = staging_path(row["model"], row["key"])
        ctx.collection.update_many({path: {"$exists": True}}, {"$unset": {path: ""}})


def _swap(ctx: Context, row: dict, version: int) -> int:
    """Move staged outputs of ``version`` into ``_outputs.<key>.<model>``."""
    staged, view = staging_path(row["model"], row["key"]), WatcherView.of(row)
    moves = []
    for doc in ctx.collection.find({f"{staged}.version": version}, {staged: 1}):
        entry = doc[OUTPUTS][staged.split(".", 1)[1]]
        moves.append((doc["_id"], {"$set": {view.path: entry["value"], view.fingerprint_path: entry["fingerprint"]},
                                   "$unset": {staged: ""}}))
    set_fields(ctx.collection, moves)
    ctx.collection.update_many({staged: {"$exists": True}}, {"$unset": {staged: ""}})  # stale stages
    return len(moves)


def _switch_indexes(ctx: Context, models: set[str]) -> list[dict]:
    """Give every semantic index over ``models`` a new uid; the master loads it fresh, drops the old one."""
    switched = []
    for row in ctx.metadata.list("semantic_indexes"):
        if not models & set(row.get("models", [])):
            continue
        new = {**row, "uid": str(ObjectId())}
        ctx.metadata.update("semantic_indexes", row["name"], {"$set": {"uid": new["uid"]}})
        switched.append(new)
        try:
            with master_for_job(ctx.config) as master:
                master.drop(ctx.target, row)
                stats = master.ensure(ctx.target, new)
            ctx.log(f"index {row['name']!r} switched: {stats.get('size')} vectors")
        except Exception as exc:  # the new uid is in place: the master loads it on its next query
            logger.warning("index %r: the master could not load the new version now (%s)", row["name"], exc)
    return switched


def _catch_up(ctx: Context, job_id: str, rows: list[dict], models: dict, model_rows: dict, versions: dict, started: Any,
              flip: Any, indexes: list[dict], spec: PromoteSpec) -> int:
    """Recompute, with the new versions, what was written while the switch ran.

    That is the documents of model jobs that loaded the old version (started
    before the flip, still running when the stage began or finished since),
    and documents that still have no output (inserted during the stage while
    a watcher awaited its first training, so no job ran for them).
    """
    names = [r["name"] for r in rows]
    query = {"kind": "model", "watcher": {"$in": names}, "_id": {"$ne": records.oid(job_id)},
             "started_at": {"$lt": flip},
             "$or": [{"status": "running"}, {"finished_at": {"$gte": started}}]}
    jobs = list(ctx.jobs.find(query, {"watcher": 1, "id_range": 1}))
    if jobs:
        waiting = [j["_id"] for j in jobs] + [d["_id"] for d in ctx.jobs.find(
            {"depends_on": {"$in": [str(j["_id"]) for j in jobs]}}, {"_id": 1})]
        deadline = time.monotonic() + spec.catch_up_timeout
        while (ctx.jobs.count_documents({"_id": {"$in": waiting}, "status": {"$nin": list(records.FINAL)}})
               and time.monotonic() < deadline):
            time.sleep(0.05)
    total = 0
    for row in rows:
        mine = [j for j in jobs if j["watcher"] == row["name"]]
        view = WatcherView.of(row)
        query = view.filter
        if all(j.get("id_range") for j in mine):
            # The jobs' id ranges (a superset of their ids: documents already current are skipped by
            # their fingerprints) and the documents without output. A job without a range (all
            # documents, or ids that do not compare) leaves the whole filter to check.
            query = and_(query, {"$or": [*({"_id": {"$gte": lo, "$lte": hi}} for lo, hi in (j["id_range"] for j in mine)),
                                         {view.path: {"$exists": False}}]})
        written: list = []

        def write(computed: list, view: WatcherView = view, written: list = written) -> None:
            write_outputs(ctx, view, computed)
            written.extend(c.id for c in computed)

        total += compute(ctx, view, models[row["model"]], model_rows[row["model"]], versions[row["model"]], query,
                         spec.chunk_size, write, cancellable=False)[1]
        if written:
            _refresh(ctx, [i for i in indexes if i["watcher"] == row["name"]], written)
    if total:
        ctx.log(f"caught up {total} documents written during the switch")
    return total


def _refresh(ctx: Context, indexes: list[dict], ids: list | None) -> None:
    if not indexes:
        return
    with master_for_job(ctx.config) as master:
        for index in indexes:
            if ids is None:
                master.reload(ctx.target, index)
            elif ids:
                master.refresh(ctx.target, index, ids)


@job_kind("promote")
def promote(ctx: Context, job_id: str, spec: PromoteSpec) -> dict:
    """Serve the given model versions: stage, swap, flip, switch indexes, catch up (see the module docstring)."""
    versions = resolve_versions(ctx, spec)
    model_rows = {m: ctx.metadata.get("models", m) for m in versions}
    refs = {}
    for m, v in versions.items():
        match = [e for e in model_rows[m].get("versions", []) if e["version"] == v]
        if not match:
            raise TrainingError(f"Model {m!r} has no version {v}.", model=m, version=v)
        refs[m] = match[0]["artifact"]
    models = {m: load_model(ctx.metadata, ctx.artifacts, m, v) for m, v in versions.items()}
    rows = [w for w in ctx.metadata.list("watchers")
            if w["model"] in versions and (w.get("active") or w.get("awaiting_training"))]
    started = utcnow()
    totals = {r["name"]: ctx.collection.count_documents(load_filter(r.get("filter"))) for r in rows}
    progress = Progress(ctx, sum(totals.values()), "staged", scale=0.9)  # the rest: swap, switch, catch-up

    def advance(n: int) -> None:
        progress.advance(n)
        ctx.check_cancelled(TrainingCancelled)

    in_memory = sum(totals.values()) <= spec.memory_stage_limit
    staged: dict[str, list] = {}
    try:
        for row in rows:
            v, path, view = versions[row["model"]], staging_path(row["model"], row["key"]), WatcherView.of(row)
            if in_memory:
                def write(computed: list, name: str = row["name"]) -> None:
                    staged.setdefault(name, []).extend(c._replace(input=None) for c in computed)
            else:
                def write(computed: list, v: int = v, path: str = path) -> None:
                    set_fields(ctx.collection, ((c.id, {"$set": {path: {"version": v, "value": c.output,
                                                                         "fingerprint": c.fingerprint}}})
                                                for c in computed))
            compute(ctx, view, models[row["model"]], model_rows[row["model"]], v, view.filter, spec.chunk_size,
                    write, advance)
            ctx.log(f"{row['name']}: staged version {v} for {totals[row['name']]} documents")
        ctx.check_cancelled(TrainingCancelled)
    except BaseException:
        if not in_memory:
            _clear_staging(ctx, rows)
        ctx.log("switch abandoned before the swap: the previous versions keep serving")
        raise
    # Commit point: from here the switch completes, even if the job is cancelled.
    swapped = {}
    for row in rows:
        if in_memory:
            write_outputs(ctx, WatcherView.of(row), staged.get(row["name"], []), guard=False)
            swapped[row["name"]] = len(staged.get(row["name"], []))
        else:
            swapped[row["name"]] = _swap(ctx, row, versions[row["model"]])
    flip = utcnow()
    for m, v in versions.items():
        ctx.metadata.update("models", m, {"$set": {"version": v, "artifact": refs[m], "promoted_at": flip}})
        follow_parent(ctx.metadata, m, v, refs[m], artifacts=ctx.artifacts)  # its attribute models (m.attr) serve the same version
    for row in rows:
        if row.get("awaiting_training"):
            ctx.metadata.update("watchers", row["name"], {"$set": {"active": True}, "$unset": {"awaiting_training": ""}})
    indexes = _switch_indexes(ctx, set(versions))
    caught = _catch_up(ctx, job_id, rows, models, model_rows, versions, started, flip, indexes, spec)
    ctx.log("serving " + ", ".join(f"{m} version {v}" for m, v in versions.items()))
    return {"versions": versions, "outputs": swapped, "indexes": [r["name"] for r in indexes], "caught_up": caught}
