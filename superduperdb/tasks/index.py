"""The ``index`` and ``neighbourhood`` jobs: keep the master and ``_like`` lists current."""

from __future__ import annotations

from typing import Any

from ..master.handle import master_for_job
from ..store.context import Context
from ..store.layout import neighbourhood_path
from .kinds import job_kind


@job_kind("index")
def update_index(ctx: Context, job_id: str, index: str, ids: list | None = None) -> dict:
    """Bring the master's copy of ``index`` up to date for ``ids`` (None: reload it all)."""
    row = ctx.metadata.get("semantic_indexes", index)
    with master_for_job(ctx.config) as master:
        if ids is None:
            return master.reload(ctx.target, row)
        return master.refresh(ctx.target, row, ids)


@job_kind("neighbourhood")
def update_neighbourhood(ctx: Context, job_id: str, neighbourhood: str, ids: list | None = None) -> dict:
    """Store each document's nearest neighbours at ``_like.<neighbourhood>``."""
    hood = ctx.metadata.get("neighbourhoods", neighbourhood)
    row = ctx.metadata.get("semantic_indexes", hood["semantic_index"])
    with master_for_job(ctx.config) as master:
        lists: dict[Any, list] = master.neighbours(ctx.target, row, ids, hood["n"])
    path = neighbourhood_path(neighbourhood)
    for _id, neighbours in lists.items():
        ctx.collection.update_one({"_id": _id}, {"$set": {path: neighbours}})
    return {"documents": len(lists)}
