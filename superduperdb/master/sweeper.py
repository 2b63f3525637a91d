"""The periodic sweep of the reconciler, in a thread beside the master (one per cluster).

Clients register the collections they watch (:meth:`Sweeper.watch`); every
``reconcile.interval`` seconds (each collection's own config) the sweeper
runs one reconcile pass for each, one after the other, so passes never
overlap. What a pass does is given to the master when it is created (the
``sweep`` callable, :func:`superduperdb.tasks.reconcile.sweep`): on a cluster
it runs as a task on a worker, so the master keeps answering queries.
The last pass of each collection is kept for ``superduperdb info``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

TICK = 0.5  # seconds between looks at the schedule (passes run every reconcile.interval)


def target_key(target: Any) -> str:
    return f"{target.uri}|{target.database}|{target.collection}"


class Sweeper:
    """Runs ``sweep(target, dask_client)`` for every watched collection, every interval.

    Parameters
    ----------
    sweep : callable
        One reconcile pass over a collection; returns its report (a dict of counts).
    dask_client : distributed.Client or None
        Handed to ``sweep`` (None: the pass runs in this thread).
    """

    def __init__(self, sweep: Callable[[Any, Any], dict], dask_client: Any = None) -> None:
        self._sweep = sweep
        self._dask_client = dask_client
        self._targets: dict[str, tuple[Any, float]] = {}  # key -> (target, interval)
        self._due: dict[str, float] = {}
        self._last: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, target: Any, interval: float) -> None:
        """Sweep ``target`` every ``interval`` seconds (0: never; the first pass one interval from now)."""
        key = target_key(target)
        with self._lock:
            known = key in self._targets
            self._targets[key] = (target, float(interval))
            if not known:
                self._due[key] = time.monotonic() + float(interval)
            if self._thread is None and interval > 0:
                self._thread = threading.Thread(target=self._run, name="superduperdb-reconciler", daemon=True)
                self._thread.start()

    def stats(self) -> dict:
        """The watched collections, each with its interval and last pass (time, seconds, report or error)."""
        now = time.time()
        with self._lock:
            out = {}
            for key, (target, interval) in self._targets.items():
                last = dict(self._last.get(key) or {})
                if "at" in last:
                    last["ago"] = now - last["at"]
                out[f"{target.database}.{target.collection}"] = {"interval": interval, **last}
            return out

    def close(self) -> None:
        self._stop.set()

    def _gone(self) -> bool:
        """Whether the cluster this sweeper submitted to has closed (then the sweeper ends)."""
        return self._dask_client is not None and self._dask_client.status in ("closing", "closed")

    def _run(self) -> None:
        while not self._stop.wait(TICK) and not self._gone():
            now = time.monotonic()
            with self._lock:
                due = [(k, t, i) for k, (t, i) in self._targets.items() if i > 0 and self._due.get(k, 0) <= now]
            for key, target, interval in due:
                self._pass(key, target)
                with self._lock:
                    self._due[key] = time.monotonic() + interval

    def _pass(self, key: str, target: Any) -> None:
        start = time.time()
        try:
            report = self._sweep(target, self._dask_client)
            entry = {"at": start, "seconds": time.time() - start, "report": report}
        except Exception as exc:  # a pass that fails (database away ...) is retried at the next interval
            if self._gone():
                return
            logger.warning("reconcile pass over %s.%s failed: %s: %s", target.database, target.collection,
                           type(exc).__name__, exc)
            entry = {"at": start, "seconds": time.time() - start, "error": f"{type(exc).__name__}: {exc}"}
        with self._lock:
            self._last[key] = entry
