"""The ``index`` and ``neighbourhood`` jobs: keep the master and ``_like`` lists current."""

from __future__ import annotations

from typing import Any

import pymongo.errors

from ..errors import IndexLoadingError, JobCancelledError, MasterUnavailableError, SemanticIndexError
from ..store.bulk import set_fields
from ..store.context import Context
from ..store.layout import neighbourhood_path
from ..store.semantic_indexes import forget
from .kinds import job_kind
from .reconcile import master_for_job


@job_kind("index")
def update_index(ctx: Context, job_id: str, index: str, ids: list | None = None, registering: bool = False) -> dict:
    """Bring the master's copy of ``index`` up to date for ``ids`` (None: reload it all).

    ``registering``: the first load of a new index. If it fails on what the index
    reads (outputs that are not vectors, a measure that cannot load ...), the
    index is unregistered (:func:`~superduperdb.store.semantic_indexes.forget`)
    and the job fails saying so; otherwise every later write's index job would
    fail the same way. A cluster or database that is away leaves it registered.
    """
    row = ctx.metadata.get("semantic_indexes", index)
    wait = ctx.config.cluster.timeout * 20  # a job may wait for a big index to load
    try:
        with master_for_job(ctx.config) as master:
            if ids is None:
                return master.reload(ctx.target, row, wait=wait)
            return master.refresh(ctx.target, row, ids, wait=wait)
    except (MasterUnavailableError, IndexLoadingError, JobCancelledError, pymongo.errors.ConnectionFailure):
        raise  # the cluster (a shard, a load still running) or the database: not the index's fault
    except Exception as exc:
        if not registering:
            raise
        forget(ctx.metadata, index)
        raise SemanticIndexError(f"Semantic index {index!r} was not registered: its first load failed: "
                                 f"{type(exc).__name__}: {exc}. Fix the cause (the indexed outputs of "
                                 f"{row['models'][0]!r} on {row['keys'][0]!r} must be 1-D vectors) and create it "
                                 "again.", index=index) from exc


@job_kind("neighbourhood")
def update_neighbourhood(ctx: Context, job_id: str, neighbourhood: str, ids: list | None = None,
                         removed: list | None = None) -> dict:
    """Store the nearest neighbours of ``ids`` (None: of every document) at ``_like.<neighbourhood>``.

    ``removed``: deleted documents; the lists that named them are recomputed too.
    """
    hood = ctx.metadata.get("neighbourhoods", neighbourhood)
    row = ctx.metadata.get("semantic_indexes", hood["semantic_index"])
    path = neighbourhood_path(neighbourhood)
    if removed and ids is not None:
        naming = [d["_id"] for d in ctx.collection.find({path: {"$in": list(removed)}}, {"_id": 1})]
        ids = list(dict.fromkeys([*ids, *naming]))
    if ids is not None and not ids:
        return {"documents": 0}
    with master_for_job(ctx.config) as master:
        lists: dict[Any, list] = master.neighbours(ctx.target, row, ids, hood["n"])
    set_fields(ctx.collection, ((_id, {"$set": {path: neighbours}}) for _id, neighbours in lists.items()))
    return {"documents": len(lists)}
