"""Background graph rebuilds for :class:`~superduperdb.index.vector_index.VectorIndex`.

A build works from a snapshot: under the index lock it records the alive rows
and references to the current arrays (rows below ``n`` never change), then,
without the lock, copies those rows into new compacted arrays and builds a
graph over them. The swap, under the lock, appends the rows added during the
build, marks snapshot rows removed or replaced during the build as dead, and
installs the new arrays and graph. Queries meanwhile keep using the old arrays
(graph + tail); they never wait for the build, only for the swap (a few
vectorised copies plus one dict update per row added during the build).
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from superduperdb.errors import SemanticIndexError
from superduperdb.index.graph import MIN_GRAPH_ROWS, build_graph

logger = logging.getLogger(__name__)


class _Build:
    """One graph build: the snapshot it works from and its outcome."""

    def __init__(self, vectors, sq, ids, alive_rows, n, make_graph: bool) -> None:
        self.vectors, self.sq, self.ids, self.rows, self.n = vectors, sq, ids, alive_rows, n
        self.make_graph = make_graph
        self.done = threading.Event()
        self.error: BaseException | None = None


class RebuildMixin:
    """Build scheduling, the builder thread and the swap (state lives on the index)."""

    def _maybe_start_build(self, force: bool = False) -> _Build | None:
        """Start a build if due (call with the lock held). Returns it when it must run synchronously."""
        if self._build is not None:
            return None
        n = self._n
        if not force:
            if n <= self.exact_threshold or n < self._auto_after:
                return None
            tail_due = n - self._graph_n >= self.rebuild_tail
            dead_due = self._deleted > self.rebuild_deleted_fraction * n
            if not (tail_due or dead_due):
                return None
        rows = np.flatnonzero(self._alive[:n])
        make_graph = len(rows) >= MIN_GRAPH_ROWS and (force or len(rows) > self.exact_threshold)
        make_graph = make_graph and not callable(self.measure)  # custom measures: exact search only
        build = _Build(self._vectors, self._sq, self._ids, rows, n, make_graph)
        self._build = build
        logger.info("Index rebuild started: %d live rows, %d in tail, %d dead", len(rows), n - self._graph_n, self._deleted)
        if self.background:
            name = "superduperdb-index-build"
            threading.Thread(target=self._run_build, args=(build,), name=name, daemon=True).start()
            return None
        return build

    def _run_if_sync(self, build: _Build | None, raise_errors: bool = False) -> None:
        # add()/remove() have already stored their change: a failed automatic
        # build is logged and recorded in stats()["last_error"], not raised.
        if build is not None:
            self._run_build(build)
            if raise_errors and build.error is not None:
                raise SemanticIndexError(f"Index build failed: {build.error!r}") from build.error

    def _run_build(self, b: _Build) -> None:
        start = time.perf_counter()
        try:
            m = len(b.rows)
            cap = max(1024, m + min(self.rebuild_tail, max(m // 2, 1024)))  # room for the next tail
            V = np.empty((cap, b.vectors.shape[1]), np.float32)
            np.take(b.vectors, b.rows, axis=0, out=V[:m])
            S = np.empty(cap, np.float32)
            S[:m] = b.sq[b.rows]
            ids = np.empty(cap, object)
            ids[:m] = b.ids[b.rows]
            row_of = dict(zip(ids[:m].tolist(), range(m)))
            graph = None
            if b.make_graph:
                builder = self.builder or build_graph
                graph = builder(
                    V[:m], self.measure, n_neighbors=self.n_neighbors,
                    random_state=self.random_state, leaf_budget=self.leaf_budget,
                )  # fmt: skip
                if getattr(graph, "size", None) != m:
                    raise SemanticIndexError(f"The builder returned {graph!r} for {m} rows.")
            self._swap(b, V, S, ids, row_of, graph, time.perf_counter() - start)
        except Exception as exc:  # recorded, logged, raised by rebuild()
            logger.exception("Index rebuild failed")
            b.error = exc
            with self._lock:
                self._last_error = repr(exc)
                self._auto_after = self._n + self.rebuild_tail
        finally:
            if not b.done.is_set():
                with self._lock:
                    if self._build is b:
                        self._build = None
                    b.done.set()

    def _swap(self, b: _Build, V, S, ids, row_of, graph, seconds: float) -> None:
        m = len(b.rows)
        with self._lock:
            n_now = self._n
            still = self._alive[b.rows]  # snapshot rows not removed/replaced during the build
            dead = np.flatnonzero(~still)
            tail = b.n + np.flatnonzero(self._alive[b.n : n_now])
            t = len(tail)
            if m + t > len(S):
                new = max(m + t, 2 * len(S))
                V, S, ids = (np.concatenate([a[:m], np.empty((new - m,) + a.shape[1:], a.dtype)]) for a in (V, S, ids))
            V[m : m + t] = self._vectors[tail]
            S[m : m + t] = self._sq[tail]
            ids[m : m + t] = self._ids[tail]
            alive = np.zeros(len(S), bool)
            alive[:m] = still
            alive[m : m + t] = True
            for i in dead.tolist():
                row_of.pop(ids[i], None)
            for j, r in enumerate(tail.tolist()):
                row_of[self._ids[r]] = m + j
            self._vectors, self._sq, self._ids, self._alive, self._n = V, S, ids, alive, m + t
            self._row_of = row_of
            self._graph = graph
            self.graph_enabled = True  # built in this process: its JIT is warm
            self._pending_graph = None  # a restored graph over the old rows is of no use now
            self._graph_n = m if graph is not None else 0
            self._graph_dead = len(dead) if graph is not None else 0
            self._deleted = len(dead)
            self._builds += 1
            self._last_build_seconds = seconds
            self._last_error = None
            self._build = None
            logger.info("Index rebuild swapped in after %.2f s: graph %d rows, tail %d", seconds, self._graph_n, t)
            b.done.set()
            nxt = self._maybe_start_build()
        if nxt is not None:  # synchronous mode: the tail grew past the threshold again
            self._run_build(nxt)

    def rebuild(self, wait: bool = True, timeout: float = 600.0) -> bool:
        """Rebuild the graph now over all live rows (compacting dead ones).

        Waits for a build already in progress first. With ``wait=False`` the
        build runs in the background (when ``background=True``).

        Returns
        -------
        bool
            True if the build finished within ``timeout`` seconds (or was
            only started, with ``wait=False``); False if it is still running.

        Raises
        ------
        SemanticIndexError
            The build failed (``wait=True`` only).
        """
        deadline = time.monotonic() + float(timeout)
        while True:
            if not self.wait_until_built(max(0.0, deadline - time.monotonic())):
                return False
            with self._lock:
                if self._build is None:
                    build = self._maybe_start_build(force=True)
                    build = build or self._build
                    break
        if not self.background:
            self._run_if_sync(build, raise_errors=True)
            return True
        if not wait:
            return True
        if not build.done.wait(max(0.0, deadline - time.monotonic())):
            return False
        if build.error is not None:
            raise SemanticIndexError(f"Index build failed: {build.error!r}") from build.error
        return True

    def wait_until_built(self, timeout: float = 600.0) -> bool:
        """Wait until no build is in progress, at most ``timeout`` seconds. True if idle."""
        deadline = time.monotonic() + float(timeout)
        while True:
            build = self._build
            if build is None:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not build.done.wait(remaining):
                return self._build is None
