"""`VectorIndex`: vectors keyed by ids in segments, exact + pynndescent search, background builds.

Layout (:mod:`superduperdb.index.segments`): a **growing** segment takes new
vectors at once (appended, searched exactly), and **sealed** segments hold
immutable rows, each with its own pynndescent graph once built. An upsert
appends a new row and marks the old one dead wherever it is; a remove marks it
dead. A dict maps each id to its ``(segment, row)``.

Maintenance (:mod:`superduperdb.index.rebuild`), one task at a time, off the
write path: when the growing segment holds ``rebuild_tail`` rows it is sealed
(no copy) and a graph is built over it; when more than ``max_segments`` sealed
segments exist the smallest are merged (live rows copied, one graph built);
when too many rows are dead every segment is compacted into one. A build works
on immutable rows without the lock and swaps its result in under the lock (a
few array copies and one dict update per row moved). Nothing on the write path
builds a graph; with a ``builder`` that builds in another process
(:class:`~superduperdb.index.builder.ProcessBuilder`) a build does not even
share this process's GIL with the queries.

Threading: one writer thread (``add``/``remove``/``rebuild``) and any number of
reader threads, plus the maintenance thread. Readers hold the lock only to
capture ``(segment, n)`` pairs. See :mod:`superduperdb.index.search`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from itertools import repeat
from typing import Any

import numpy as np

from superduperdb.errors import DimensionMismatchError, SemanticIndexError
from superduperdb.index import search as _search
from superduperdb.index.measures import check_measure, finalize_scores, prepare_queries, top_k
from superduperdb.index.persist import PersistMixin
from superduperdb.index.rebuild import RebuildMixin, _Task
from superduperdb.index.segments import Segment

logger = logging.getLogger(__name__)

#: Growing segments start with room for this many rows (and double).
GROWING_CAPACITY = 1024


def _as_id_list(ids: Any) -> list:
    if isinstance(ids, np.ndarray):
        return ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        return [ids]
    return list(ids)


def _as_matrix(vectors: Any, what: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            X = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise SemanticIndexError(f"{what} must be numeric arrays: {exc}") from exc
    if X.ndim not in (1, 2) or X.size == 0 and X.ndim == 1:
        raise SemanticIndexError(f"{what} must be one vector or a 2-D array, got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise SemanticIndexError(f"{what} contain NaN or infinite values (after conversion to float32).")
    return X


class VectorIndex(RebuildMixin, PersistMixin):
    """An in-memory vector index over arbitrary hashable ids.

    Exact numpy search while the index is small or has no graph; a pynndescent
    graph plus an exact tail once it grows. Scores: higher is more similar
    (cosine similarity, dot product, or *negative* L2 distance).

    Parameters
    ----------
    dim : int, optional
        Vector dimension; inferred from the first :meth:`add` when None.
    measure : {'cosine', 'dot', 'l2'} or callable
        A callable ``measure(Q, X) -> (n, m) similarities`` (see
        :mod:`~superduperdb.index.measures`) is always searched exactly: no
        graph is built for it (pynndescent takes numba-compiled metrics only).
    exact_threshold : int
        Indexes with at most this many live vectors are searched exactly. Also
        the size below which no graph is built automatically.
    exact_cost : int
        The planner's threshold for a filtered search: when ``dim`` times the
        number of candidate vectors is at most this (OpenSearch's rule, default
        2,048,000: 5,333 candidates at 384 dimensions), they are scored
        exactly; above it, the graph is searched with a computed over-fetch
        (see :mod:`superduperdb.index.search`).
    rebuild_tail : int
        Seal the growing segment (and build its graph in the background) when
        it holds this many rows.
    rebuild_deleted_fraction : float
        Compact every segment into one (in the background) when this fraction
        of rows is dead.
    max_segments : int
        When more sealed segments exist, the smallest ``merge_factor`` of them
        are merged into one in the background.
    merge_factor : int
        How many segments one merge combines.
    n_neighbors : int
        pynndescent graph degree.
    leaf_budget : int
        Search-tree leaves each graph query starts from (pynndescent
        ``search_tree_leaf_budget``); more than 1 is what keeps recall high on
        clustered data, whose graph splits into per-cluster components.
    epsilon : float
        pynndescent query search breadth (0.2 gives recall@10 >= 0.95 on
        clustered data).
    background : bool
        Seal, build and merge in a background thread (True) or synchronously
        inside the call that crossed a threshold (False).
    random_state : int, optional
        Seed for the graph builds (reproducible graphs for tests).
    builder : callable, optional
        ``builder(X, measure, *, n_neighbors, random_state, leaf_budget) -> Graph``, called
        in the builder thread instead of :func:`~superduperdb.index.graph.build_graph`.
        Use it to build elsewhere (:class:`~superduperdb.index.builder.ProcessBuilder`,
        a warm subprocess: a build then never holds this process's GIL; or another Dask
        worker: ``lambda X, m, **kw: client.submit(build_graph, X, m, **kw).result(timeout)``)
        so the index's own cores stay free for queries. Must return a graph
        over exactly the rows of ``X``, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from superduperdb.index import VectorIndex
    >>> index = VectorIndex(measure="dot")
    >>> index.add(["a", "b", "c"], np.eye(3))
    3
    >>> ids, scores = index.search([0, 1, 0.5], n=2)
    >>> ids, scores.tolist()
    (['b', 'c'], [1.0, 0.5])
    >>> index.remove(["b"]), len(index), "b" in index
    (1, 2, False)
    """

    def __init__(
        self,
        dim: int | None = None,
        measure: str = "cosine",
        *,
        exact_threshold: int = 20_000,
        exact_cost: int = 2_048_000,
        rebuild_tail: int = 10_000,
        rebuild_deleted_fraction: float = 0.25,
        max_segments: int = 8,
        merge_factor: int = 4,
        n_neighbors: int = 30,
        leaf_budget: int = 8,
        epsilon: float = 0.2,
        background: bool = True,
        random_state: int | None = None,
        builder: Callable[..., Any] | None = None,
    ) -> None:
        self.measure = check_measure(measure)
        if dim is not None and (not isinstance(dim, (int, np.integer)) or dim <= 0):
            raise SemanticIndexError(f"dim must be a positive integer or None, got {dim!r}.")
        self.dim = None if dim is None else int(dim)
        self.exact_threshold = int(exact_threshold)
        self.exact_cost = int(exact_cost)
        self.rebuild_tail = int(rebuild_tail)
        self.rebuild_deleted_fraction = float(rebuild_deleted_fraction)
        self.max_segments = max(1, int(max_segments))
        self.merge_factor = max(2, int(merge_factor))
        self.n_neighbors = int(n_neighbors)
        self.leaf_budget = int(leaf_budget)
        self.epsilon = float(epsilon)
        self.background = bool(background)
        self.random_state = random_state
        self.builder = builder
        self._lock = threading.RLock()
        self._sealed: list[Segment] = []
        self._growing: Segment | None = None if self.dim is None else Segment.empty(self.dim, GROWING_CAPACITY)
        self._where: dict[Hashable, tuple[Segment, int]] = {}
        self._task: _Task | None = None
        self._builds = 0
        self._last_build_seconds: float | None = None
        self._last_error: str | None = None
        self._auto_after = 0  # after a failed build, no automatic retry before this many rows

    def _segments(self) -> list[Segment]:
        """Sealed segments, then the growing one (call with the lock held)."""
        return self._sealed + ([self._growing] if self._growing is not None else [])

    def _kill(self, id_: Hashable) -> bool:
        loc = self._where.pop(id_, None)
        if loc is None:
            return False
        loc[0].kill(loc[1])
        return True

    # ------------------------------------------------------------------ writes
    def add(self, ids: Any, vectors: Any) -> int:
        """Insert or replace (upsert) vectors.

        Parameters
        ----------
        ids : iterable of hashable, or one id when ``vectors`` is 1-D
            An id already present is replaced; within one call the last
            occurrence of a repeated id wins.
        vectors : array-like, shape (len(ids), dim) or (dim,)

        Returns
        -------
        int
            Number of vectors stored.

        Raises
        ------
        DimensionMismatchError
            Wrong dimension (nothing is changed).
        SemanticIndexError
            NaN/inf values, unhashable ids, or ``len(ids) != len(vectors)``.
        """
        if np.size(vectors) == 0 and len(_as_id_list(ids)) == 0:
            return 0  # add([], []): nothing to do
        X = _as_matrix(vectors, "vectors")
        if X.ndim == 1:
            X, ids = X[None, :], [ids]
        ids = _as_id_list(ids)
        if len(ids) != X.shape[0]:
            raise SemanticIndexError(f"Got {len(ids)} ids for {X.shape[0]} vectors.")
        try:
            last = {id_: i for i, id_ in enumerate(ids)}
        except TypeError as exc:
            raise SemanticIndexError(f"Every id must be hashable: {exc}") from exc
        if len(last) < len(ids):
            keep = sorted(last.values())
            ids, X = [ids[i] for i in keep], X[keep]
        k = len(ids)
        with self._lock:
            dim = self.dim if self.dim is not None else X.shape[1]
            if X.shape[1] != dim:
                raise DimensionMismatchError(
                    f"Vectors have dimension {X.shape[1]}, but the index has dimension {dim}.",
                    expected=dim,
                    got=X.shape[1],
                )
            if k == 0:
                return 0
            if self._growing is None:
                self.dim = dim
                self._growing = Segment.empty(dim, GROWING_CAPACITY)
            for id_ in ids:
                self._kill(id_)
            growing = self._growing
            start = growing.append(X, ids)
            self._where.update(zip(ids, zip(repeat(growing), range(start, start + k))))
            task = self._next_task()
        self._run_if_sync(task)
        return k

    def remove(self, ids: Any) -> int:
        """Remove ids; unknown (or unhashable) ids are ignored. Returns how many were removed."""
        removed = 0
        with self._lock:
            for id_ in _as_id_list(ids):
                try:
                    removed += self._kill(id_)
                except TypeError:
                    continue
            task = self._next_task() if removed else None
        self._run_if_sync(task)
        return removed

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, id_: Any) -> bool:
        try:
            return id_ in self._where
        except TypeError:
            return False

    def get(self, id_: Any, default: Any = None) -> np.ndarray | Any:
        """The stored vector of ``id_`` (a copy, float32), or ``default``."""
        with self._lock:
            try:
                loc = self._where.get(id_)
            except TypeError:
                loc = None
            return default if loc is None else loc[0].vectors[loc[1]].copy()

    def vectors_of(self, ids: Any) -> tuple[list, np.ndarray]:
        """``(the ids held, their vectors)``: one copy for many ids, taken under one lock (unknown ids left out)."""
        with self._lock:
            held, rows = [], []
            for i in _as_id_list(ids):
                try:
                    loc = self._where.get(i)
                except TypeError:  # unhashable: not held
                    continue
                if loc is not None:
                    held.append(i)
                    rows.append(loc[0].vectors[loc[1]])
            return held, np.stack(rows) if rows else np.empty((0, self.dim or 0), np.float32)

    def ids(self) -> list:
        """All live ids (in no particular order)."""
        with self._lock:
            return list(self._where)

    def _check_query(self, query: Any, n: Any) -> np.ndarray:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
            raise SemanticIndexError(f"n must be a positive integer, got {n!r}.")
        Q = np.atleast_2d(_as_matrix(query, "query vectors"))
        if self.dim is not None and Q.shape[1] != self.dim:
            raise DimensionMismatchError(
                f"Query has dimension {Q.shape[1]}, but the index has dimension {self.dim}.",
                expected=self.dim,
                got=Q.shape[1],
            )
        return Q

    def search(
        self, query: Any, n: int = 10, *, candidates: Iterable | None = None, epsilon: float | None = None,
        info: dict | None = None,
    ) -> tuple[list, np.ndarray]:
        """The ``n`` ids most similar to one query vector, best first.

        Parameters
        ----------
        query : array-like, shape (dim,)
        n : int
            Number of results (fewer if fewer vectors qualify).
        candidates : iterable of ids, optional
            Restrict results to these ids (e.g. those matching a MongoDB
            filter); unknown ids are ignored. The planner scores them exactly
            when ``dim * len(candidates) <= exact_cost``; otherwise it
            searches the graph with over-fetch ``m`` for their selectivity
            ``p`` (:func:`~superduperdb.index.search.overfetch`), retries once
            wider, then falls back to exact: whenever ``n`` candidates are
            held, ``n`` results come back, all candidates.
        epsilon : float, optional
            Override the index's query epsilon.
        info : dict, optional
            Filled with how the query was answered: ``plan`` (the costliest of
            ``'exact'``, ``'graph'``, ``'graph+retry'``, ``'graph+exact'``
            taken), ``candidates`` (vectors scored), ``segments``, ``retries``
            (graph retries), ``fetch`` (the largest over-fetch asked of a
            graph, 0: none) and ``selectivity`` (the share of the index the
            candidates held are; None without candidates).

        Returns
        -------
        ids : list
        scores : ndarray of float32
            Higher is more similar (cosine, dot, or negative L2 distance).
        """
        Q = self._check_query(query, n)
        if Q.shape[0] != 1:
            raise SemanticIndexError(f"search() takes one query vector, got {Q.shape[0]}; use search_batch().")
        return self._search_many(Q, int(n), candidates, epsilon, info)[0]

    def search_batch(
        self, queries: Any, n: int = 10, *, candidates: Iterable | None = None, epsilon: float | None = None,
        info: dict | None = None,
    ) -> list[tuple[list, np.ndarray]]:
        """:meth:`search` for each row of ``queries``; returns a list of ``(ids, scores)``."""
        return self._search_many(self._check_query(queries, n), int(n), candidates, epsilon, info)

    def _candidate_rows(self, candidates: Any, segments: list[Segment]) -> dict[int, np.ndarray]:
        """``{segment position: sorted unique rows}`` of the known candidate ids (call with the lock held)."""
        position = {s.uid: i for i, s in enumerate(segments)}
        where = self._where
        seg_of, rows = [], []
        for c in _as_id_list(candidates):
            try:
                loc = where.get(c)
            except TypeError:  # an unhashable candidate: it cannot be in the index
                continue
            if loc is not None:
                seg_of.append(position[loc[0].uid])
                rows.append(loc[1])
        if not rows:
            return {}
        seg_arr, row_arr = np.asarray(seg_of, np.int64), np.asarray(rows, np.int64)
        return {int(i): np.unique(row_arr[seg_arr == i]) for i in np.unique(seg_arr)}

    def _search_many(self, Q: np.ndarray, n: int, candidates, epsilon, info: dict | None = None
                     ) -> list[tuple[list, np.ndarray]]:
        eps = self.epsilon if epsilon is None else float(epsilon)
        with self._lock:
            segments = self._segments()
            views = [s.view(self.measure, eps) for s in segments]
            live = len(self._where)
            rows_of = None if candidates is None else self._candidate_rows(candidates, segments)
        tally = _search.Tally()
        out = []
        selectivity = None
        if live == 0:
            out = [([], np.empty(0, np.float32)) for _ in Q]
        else:
            exact_all = live <= self.exact_threshold
            exact_filtered = exact_all
            if rows_of is not None:  # the planner: exact over the filtered rows when scoring them is cheap
                matched = sum(len(r) for r in rows_of.values())
                selectivity = matched / live
                exact_filtered = exact_all or matched * (self.dim or 0) <= self.exact_cost
            P = prepare_queries(Q, self.measure)
            for q_raw, q in zip(Q, P):
                ids, parts = [], []
                for i, view in enumerate(views):
                    if rows_of is None:
                        if exact_all or view.graph is None:
                            tally.plans.add("exact")
                            r, part = _search.exact_range(view, q, n, 0, view.n, tally)
                        else:
                            r, part = _search.search_all(view, q_raw, q, n, -1, tally)
                    elif i in rows_of:
                        r, part = _search.search_candidates(view, q_raw, q, n, rows_of[i], exact_filtered, tally)
                    else:
                        continue
                    if len(r):
                        ids.append(view.ids[r])
                        parts.append(part)
                if not parts:
                    out.append(([], np.empty(0, np.float32)))
                    continue
                all_ids, all_part = np.concatenate(ids), np.concatenate(parts)
                idx, vals = top_k(all_part[None, :], n)
                keep = np.isfinite(vals[0])
                best, part = all_ids[idx[0][keep]], vals[0][keep]
                scores = finalize_scores(part[None, :], q[None, :], self.measure)[0]
                out.append((best.tolist(), scores.astype(np.float32, copy=False)))
        if info is not None:
            info.update(plan=tally.plan, candidates=tally.scored, segments=len(views), retries=tally.retries,
                        fetch=tally.fetch, selectivity=selectivity)
        return out

    # ------------------------------------------------------------------ info
    def stats(self) -> dict[str, Any]:
        """Counters: size, dim, measure, tail, deleted, graph_size, segments, building, builds ..."""
        with self._lock:
            segments = self._segments()
            graphed = [s for s in segments if s.graph is not None]
            return {
                "size": len(self._where),
                "dim": self.dim,
                "measure": self.measure_name,
                "tail": sum(s.n for s in segments if s.graph is None),
                "deleted": sum(s.dead for s in segments),
                "graph_size": sum(s.n for s in graphed),
                "graph_pending": any(s.pending is not None for s in segments),
                "segments": [{"size": s.n, "live": s.live, "graph": s.graph is not None} for s in self._sealed],
                "growing": self._growing.n if self._growing is not None else 0,
                "building": self._task is not None,
                "last_build_seconds": self._last_build_seconds,
                "builds": self._builds,
                "capacity": sum(s.capacity for s in segments),
                "bytes": sum(s.nbytes() for s in segments),
                "last_error": self._last_error,
            }

    @property
    def measure_name(self) -> str:
        """The measure's name (a custom measure's function name)."""
        if callable(self.measure):
            return getattr(self.measure, "__name__", type(self.measure).__name__)
        return self.measure

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"VectorIndex(measure={s['measure']!r}, dim={s['dim']}, size={s['size']}, "
            f"graph_size={s['graph_size']}, tail={s['tail']}, deleted={s['deleted']}, "
            f"segments={len(s['segments'])}, building={s['building']})"
        )
