"""The ``index`` and ``neighbourhood`` jobs: keep the master and ``_like`` lists current."""

from __future__ import annotations

from typing import Any

from ..master.handle import master_for_job
from ..store.bulk import set_fields
from ..store.context import Context
from ..store.layout import neighbourhood_path
from .kinds import job_kind
from .reconcile import sweep


@job_kind("index")
def update_index(ctx: Context, job_id: str, index: str, ids: list | None = None) -> dict:
    """Bring the master's copy of ``index`` up to date for ``ids`` (None: reload it all)."""
    row = ctx.metadata.get("semantic_indexes", index)
    wait = ctx.config.cluster.timeout * 20  # a job may wait for a big index to load
    with master_for_job(ctx.config, sweep) as master:
        if ids is None:
            return master.reload(ctx.target, row, wait=wait)
        return master.refresh(ctx.target, row, ids, wait=wait)


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
    with master_for_job(ctx.config, sweep) as master:
        lists: dict[Any, list] = master.neighbours(ctx.target, row, ids, hood["n"])
    set_fields(ctx.collection, ((_id, {"$set": {path: neighbours}}) for _id, neighbours in lists.items()))
    return {"documents": len(lists)}
