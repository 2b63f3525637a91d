"""The ``index`` and ``neighbourhood`` jobs: keep the master and ``_like`` lists current."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .context import Context
from .runner import job_kind


@contextlib.contextmanager
def master_handle(ctx: Context) -> Iterator[Any]:
    """The master, seen from a job: the cluster's actor, or the in-process one when inline.

    On a worker the job secedes from the worker's thread pool while it talks
    to the master (``worker_client``), so that creating the master on this
    very worker cannot deadlock on the job's own thread.
    """
    from ..master.handle import MasterHandle

    cfg = ctx.config
    options = {"resource": cfg.master.resource, "timeout": float(cfg.cluster.timeout), "warm_up": bool(cfg.master.warm_up)}
    try:
        from distributed import get_worker, worker_client

        get_worker()
    except (ImportError, ValueError):
        yield MasterHandle(None, **options)
        return
    with worker_client() as dask_client:
        yield MasterHandle(dask_client, **options)


@job_kind("index")
def update_index(ctx: Context, job_id: str, index: str, ids: list | None = None) -> dict:
    """Bring the master's copy of ``index`` up to date for ``ids`` (None: reload it all)."""
    row = ctx.metadata.get("semantic_indexes", index)
    with master_handle(ctx) as master:
        if ids is None:
            master.call("drop", ctx.target, row)
            return master.call("ensure", ctx.target, row)
        return master.call("refresh", ctx.target, row, list(ids))


@job_kind("neighbourhood")
def update_neighbourhood(ctx: Context, job_id: str, neighbourhood: str, ids: list | None = None) -> dict:
    """Store each document's nearest neighbours at ``_like.<neighbourhood>``."""
    hood = ctx.metadata.get("neighbourhoods", neighbourhood)
    row = ctx.metadata.get("semantic_indexes", hood["semantic_index"])
    with master_handle(ctx) as master:
        lists: dict[Any, list] = master.call("neighbours", ctx.target, row, None if ids is None else list(ids), int(hood["n"]))
    path = f"_like.{neighbourhood}"
    for _id, neighbours in lists.items():
        ctx.collection.update_one({"_id": _id}, {"$set": {path: neighbours}})
    return {"documents": len(lists)}
