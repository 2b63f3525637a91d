"""What a Dask process says about itself: a worker (run on every worker by ``superduperdb info``),
the scheduler (superduperdb's work as it sees it: run on the scheduler by ``superduperdb status``, and
read by its gauges and dashboard page, :mod:`superduperdb.cluster.observe`)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

KEY_PREFIX = "superduperdb-"
NOT_FINISHED = ("waiting", "queued", "no-worker", "processing")
NOT_JOBS = ("master", "sweep")  # task prefixes that are not job kinds


def process_report() -> dict[str, Any]:
    """superduperdb's version, whether the preload prepared this process, and its index environment.

    Imports nothing heavy, so that asking a bare worker does not change it.
    """
    from ..version import __version__

    preload = sys.modules.get("superduperdb.cluster.preload")
    setup = dict(getattr(preload, "SETUP", {}) or {})
    return {
        "superduperdb": __version__,
        "pid": os.getpid(),
        "preload": bool(setup),
        "role": setup.get("role"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR"),
        "numba imported": "numba" in sys.modules,
    }


# -- the scheduler ------------------------------------------------------------------------------------
def master_report(scheduler: Any) -> dict | None:
    """The newest report a master sent with its worker's heartbeats (None: no master reports)."""
    from ..master.monitor import HEARTBEAT_KEY

    newest = None
    for ws in list(scheduler.workers.values()):
        report = (ws.metrics or {}).get(HEARTBEAT_KEY)
        if report and (newest is None or report.get("at", 0) > newest.get("at", 0)):
            newest = {**report, "worker": ws.address}
    return newest


def queue_depth(scheduler: Any) -> dict[str, int]:
    """``{kind: tasks not finished}`` of superduperdb jobs on this scheduler (keys
    ``superduperdb-<kind>-<job id>``, counted from Dask's task prefixes: no scan of the tasks)."""
    out: dict[str, int] = {}
    for name, prefix in list(scheduler.task_prefixes.items()):
        if name.startswith(KEY_PREFIX):
            kind = name[len(KEY_PREFIX):]
            if kind not in NOT_JOBS and "-" not in kind:
                out[kind] = sum(prefix.states.get(state, 0) for state in NOT_FINISHED)
    return out


def cluster_report(dask_scheduler: Any = None) -> dict:
    """The master's report, the queue and the workers, as the scheduler sees them now.

    Runs on the scheduler (``dispatch.run_on_scheduler(client, cluster_report)``).
    """
    if dask_scheduler is None:
        raise ValueError("cluster_report runs on the scheduler: dispatch.run_on_scheduler(client, cluster_report)")
    return {"at": time.time(), "master": master_report(dask_scheduler), "queue": queue_depth(dask_scheduler),
            "workers": len(dask_scheduler.workers)}
