"""The periodic sweep of the reconciler, in a thread beside the master (one per cluster).

Clients register the collections they watch (:meth:`Sweeper.watch`); every
``reconcile.interval`` seconds (each collection's own config) the sweeper
runs one reconcile pass for each, and where the server offers change streams
a pass over the documents just written by anyone (:mod:`.changes`). Passes
never overlap. What a pass does is given to the master when it is created (the
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

from .changes import ChangeFeed

logger = logging.getLogger(__name__)

TICK = 0.5  # seconds between looks at the schedule (passes run every reconcile.interval)


class Sweeper:
    """Runs ``sweep(target, dask_client)`` for every watched collection, every interval.

    Parameters
    ----------
    sweep : callable
        ``sweep(target, dask_client, ids)``: one reconcile pass over a collection (only
        ``ids`` if not None); returns its report (a dict of counts).
    dask_client : distributed.Client or None
        Handed to ``sweep`` (None: the pass runs in this thread).
    """

    def __init__(self, sweep: Callable[[Any, Any, Any], dict], dask_client: Any = None) -> None:
        self._sweep = sweep
        self._dask_client = dask_client
        self._targets: dict[str, tuple[Any, float]] = {}  # key -> (target, interval)
        self._due: dict[str, float] = {}
        self._last: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._passing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._feeds: dict[str, ChangeFeed] = {}

    def watch(self, target: Any, interval: float) -> None:
        """Sweep ``target`` every ``interval`` seconds (0: never; the first pass one interval from now)."""
        key = target.key
        with self._lock:
            known = key in self._targets
            self._targets[key] = (target, float(interval))
            if not known:
                self._due[key] = time.monotonic() + float(interval)
            if self._thread is None and interval > 0:
                self._thread = threading.Thread(target=self._run, name="superduperdb-reconciler", daemon=True)
                self._thread.start()
            if not known and interval > 0:
                self._feeds[key] = ChangeFeed(target, lambda ids, k=key, t=target: self._pass(k, t, ids), self._stop)

    def stats(self) -> dict:
        """The watched collections, each with its interval and last pass (time, seconds, report or error)."""
        now = time.time()
        with self._lock:
            out = {}
            for key, (target, interval) in self._targets.items():
                last = dict(self._last.get(key) or {})
                if "at" in last:
                    last["ago"] = now - last["at"]
                feed = self._feeds.get(key)
                out[f"{target.database}.{target.collection}"] = {
                    "interval": interval, "change_stream": feed.state if feed else "off", **last}
            return out

    def targets(self) -> list[Any]:
        """The watched collections' targets."""
        with self._lock:
            return [target for target, _ in self._targets.values()]

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

    def _pass(self, key: str, target: Any, ids: list | None = None) -> None:
        with self._passing:
            start = time.time()
            try:
                report = self._sweep(target, self._dask_client, ids)
                entry = {"at": start, "seconds": time.time() - start, "report": report}
            except BaseException as exc:  # noqa: BLE001 - a pass that fails (database away, a model calling
                # sys.exit ...) is retried at the next interval; the sweeper thread must not die of it.
                # Only a Ctrl-C in the main thread goes on to the caller.
                if isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
                    raise
                if self._gone():
                    return
                logger.warning("reconcile pass over %s.%s failed: %s: %s", target.database, target.collection,
                               type(exc).__name__, exc)
                entry = {"at": start, "seconds": time.time() - start, "error": f"{type(exc).__name__}: {exc}"}
        if ids is not None:
            entry["ids"] = len(ids)
        with self._lock:
            self._last[key] = entry
