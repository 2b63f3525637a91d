"""Background maintenance of a :class:`~superduperdb.index.vector_index.VectorIndex`: seal, build, merge.

One task at a time, chosen by :meth:`RebuildMixin._next_task` under the index
lock after every write (cheap: a few comparisons), run in a background thread
(or inline with ``background=False``):

1. **Compact**, when more than ``rebuild_deleted_fraction`` of all rows are
   dead: the growing segment is sealed and every sealed segment is merged into
   one (live rows only) with one graph.
2. **Seal**, when the growing segment holds ``rebuild_tail`` rows: it becomes
   a sealed one as it is (no copy) and a new growing one starts.
3. **Merge**, when more than ``max_segments`` sealed segments exist: the
   ``merge_factor`` smallest become one (live rows copied), with one graph.
4. **Build**, for a sealed segment without a graph: a graph over its rows as
   they are (no copy; dead rows stay in it and are skipped by queries).

A task records, under the lock, which rows of which segments it covers (alive
at that instant; rows never change), then without the lock gathers them and
builds the graph (``builder``, or :func:`~superduperdb.index.graph.build_graph`
in this thread). The swap, under the lock, installs the new segment in place
of the merged ones; a row removed or replaced during the build is dead in the
new segment too (its alive flag in the old one says so), and the id map is
updated with one ``dict.update`` per task. Queries meanwhile use the old
segments; they never wait for a build, only for the swap.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from superduperdb.errors import SemanticIndexError
from superduperdb.index.graph import MIN_GRAPH_ROWS, build_graph
from superduperdb.index.segments import Segment

logger = logging.getLogger(__name__)


class _Task:
    """One maintenance task: the segments it replaces, the rows of each it keeps, and its outcome."""

    def __init__(self, kind: str, segments: list[Segment], rows: list[np.ndarray] | None, make_graph: bool) -> None:
        self.kind, self.segments, self.rows, self.make_graph = kind, segments, rows, make_graph
        self.done = threading.Event()
        self.error: BaseException | None = None


class RebuildMixin:
    """Task choice, the maintenance thread and the swap (state lives on the index)."""

    def _seal(self) -> None:
        """Turn the growing segment into a sealed one (call with the lock held)."""
        growing = self._growing
        if growing is not None and growing.n:
            self._sealed.append(growing)
            self._growing = Segment.empty(growing.vectors.shape[1], min(1024, max(growing.n, 1)))

    def _task_over(self, kind: str, segments: list[Segment], make_graph: bool) -> _Task:
        """A task replacing ``segments`` by one (call with the lock held)."""
        make_graph = make_graph and not callable(self.measure)  # custom measures: exact search only
        if len(segments) == 1 and segments[0].dead == 0:
            rows = None  # every row kept: the graph goes onto the segment itself, nothing is copied
        else:
            rows = [np.flatnonzero(s.alive[:s.n]) for s in segments]
        make_graph = make_graph and sum(s.live for s in segments) >= MIN_GRAPH_ROWS
        return _Task(kind, list(segments), rows, make_graph)

    def _next_task(self, force: bool = False) -> _Task | None:
        """The task due now, started (call with the lock held). Returned when it must run synchronously."""
        if self._task is not None:
            return None
        task = self._choose(force)
        if task is None:
            return None
        self._task = task
        logger.info("Index %s started: %d segments, %d rows", task.kind, len(task.segments),
                    sum(s.n for s in task.segments))
        if self.background:
            threading.Thread(target=self._run_task, args=(task,), name="superduperdb-index-build", daemon=True).start()
            return None
        return task

    def _choose(self, force: bool) -> _Task | None:
        graphs = not callable(self.measure)
        if force:
            self._seal()
            if not self._sealed:
                return None
            return self._task_over("rebuild", self._sealed, True)
        live = len(self._where)
        segments = self._segments()
        rows = sum(s.n for s in segments)
        if live <= self.exact_threshold or rows < self._auto_after:
            return None
        if sum(s.dead for s in segments) > self.rebuild_deleted_fraction * rows:
            self._seal()
            return self._task_over("compaction", self._sealed, True)
        growing = self._growing
        if graphs and growing is not None and growing.n >= self.rebuild_tail:
            self._seal()
        if len(self._sealed) > self.max_segments:
            smallest = sorted(self._sealed, key=lambda s: s.live)[:self.merge_factor]
            return self._task_over("merge", smallest, True)
        if graphs:
            for s in self._sealed:
                if s.graph is None and s.pending is None and s.live >= MIN_GRAPH_ROWS:
                    return self._task_over("build", [s], True)
        return None

    def _run_if_sync(self, task: _Task | None, raise_errors: bool = False) -> None:
        # add()/remove() have already stored their change: a failed automatic
        # build is logged and recorded in stats()["last_error"], not raised.
        while task is not None:
            self._run_task(task)
            if raise_errors and task.error is not None:
                raise SemanticIndexError(f"Index build failed: {task.error!r}") from task.error
            with self._lock:
                task = None if task.error is not None else self._next_task()

    def _run_task(self, task: _Task) -> None:
        start = time.perf_counter()
        try:
            if task.rows is None:
                seg = task.segments[0]
                V, S, ids, n = seg.vectors[:seg.n], seg.sq[:seg.n], seg.ids[:seg.n], seg.n
            else:
                V = np.concatenate([s.vectors[r] for s, r in zip(task.segments, task.rows)])
                S = np.concatenate([s.sq[r] for s, r in zip(task.segments, task.rows)])
                ids = np.concatenate([s.ids[r] for s, r in zip(task.segments, task.rows)])
                n = len(ids)
            graph = None
            if task.make_graph:
                builder = self.builder or build_graph
                graph = builder(
                    V, self.measure, n_neighbors=self.n_neighbors,
                    random_state=self.random_state, leaf_budget=self.leaf_budget,
                )  # fmt: skip
                if getattr(graph, "size", None) != n:
                    raise SemanticIndexError(f"The builder returned {graph!r} for {n} rows.")
                if n:
                    graph.query(V[0], 1)  # a graph built elsewhere: its search function loads here, not in a query
            self._swap(task, V, S, ids, graph, time.perf_counter() - start)
        except Exception as exc:  # recorded, logged, raised by rebuild()
            logger.exception("Index %s failed", task.kind)
            task.error = exc
            with self._lock:
                self._last_error = repr(exc)
                self._auto_after = sum(s.n for s in self._segments()) + self.rebuild_tail
        finally:
            with self._lock:
                if self._task is task:
                    self._task = None
                task.done.set()
        if task.error is None and self.background:
            with self._lock:
                self._next_task()  # starts the next one (in the background) if due

    def _swap(self, task: _Task, V, S, ids, graph, seconds: float) -> None:
        with self._lock:
            if task.rows is None:
                seg = task.segments[0]
                seg.graph, seg.pending = graph, None
            else:
                still = np.concatenate([s.alive[r] for s, r in zip(task.segments, task.rows)])
                seg = Segment.of(V, ids, still, S)
                seg.graph = graph
                kept = np.flatnonzero(still)
                self._where.update(zip(ids[kept].tolist(), zip([seg] * len(kept), kept.tolist())))
                replaced = {s.uid for s in task.segments}
                at = min(i for i, s in enumerate(self._sealed) if s.uid in replaced)
                rest = [s for s in self._sealed if s.uid not in replaced]
                self._sealed = rest[:at] + [seg] + rest[at:]
            self._builds += 1
            self._last_build_seconds = seconds
            self._last_error = None
            self._task = None
            task.done.set()
            logger.info("Index %s swapped in after %.2f s: a segment of %d rows%s; %d sealed segments", task.kind,
                        seconds, seg.n, " with a graph" if graph is not None else "", len(self._sealed))

    def rebuild(self, wait: bool = True, timeout: float = 600.0) -> bool:
        """Compact every segment into one now, with a graph over all live rows.

        Waits for a task already in progress first. With ``wait=False`` the
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
                if self._task is None:
                    task = self._next_task(force=True)
                    task = task or self._task
                    break
        if task is None:
            return True  # an empty index
        if not self.background:
            self._run_if_sync(task, raise_errors=True)
            return True
        if not wait:
            return True
        if not task.done.wait(max(0.0, deadline - time.monotonic())):
            return False
        if task.error is not None:
            raise SemanticIndexError(f"Index build failed: {task.error!r}") from task.error
        return True

    def wait_until_built(self, timeout: float = 600.0) -> bool:
        """Wait until no maintenance task is in progress, at most ``timeout`` seconds. True if idle."""
        deadline = time.monotonic() + float(timeout)
        while True:
            task = self._task
            if task is None:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not task.done.wait(remaining):
                return self._task is None
