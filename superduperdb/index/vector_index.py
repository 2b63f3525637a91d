"""`VectorIndex`: vectors keyed by ids, exact + pynndescent search, background rebuilds.

Layout: one growing float32 array (capacity doubles) with, per row, its id,
squared norm and an alive flag; a dict id -> row. Rows ``[0, graph_n)`` are
"sealed" into a pynndescent graph (graph vertex ``i`` is row ``i``); rows
``[graph_n, n)`` are the "tail", searched exactly. An upsert appends a new row
and marks the old one dead; a remove marks it dead. When the tail or the dead
fraction passes a threshold, a builder thread copies the live rows (a
snapshot), builds a graph over them *without holding the lock*, then, under
the lock, installs compacted arrays: the snapshot rows (minus those removed or
replaced meanwhile) followed by the rows appended during the build.

Threading: one writer thread (``add``/``remove``/``rebuild``) and any number of
reader threads, plus the builder thread. Readers hold the lock only to capture
references. See :mod:`superduperdb.index.search`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

from superduperdb.errors import DimensionMismatchError, SemanticIndexError
from superduperdb.index import search as _search
from superduperdb.index.measures import check_measure, finalize_scores, prepare_queries, sqnorms
from superduperdb.index.persist import PersistMixin
from superduperdb.index.rebuild import RebuildMixin, _Build

logger = logging.getLogger(__name__)


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
        Indexes with at most this many live vectors, and candidate sets of at
        most this many ids, are searched exactly. Also the size below which no
        graph is built automatically.
    rebuild_tail : int
        Rebuild the graph (in the background) when this many rows accumulate
        after the graph.
    rebuild_deleted_fraction : float
        Rebuild (compacting) when this fraction of rows is dead.
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
        Build in a background thread (True) or synchronously inside the
        call that crossed a threshold (False).
    random_state : int, optional
        Seed for the graph builds (reproducible graphs for tests).
    builder : callable, optional
        ``builder(X, measure, *, n_neighbors, random_state, leaf_budget) -> Graph``, called
        in the builder thread instead of :func:`~superduperdb.index.graph.build_graph`.
        Use it to build elsewhere (a warm subprocess, another Dask worker:
        ``lambda X, m, **kw: client.submit(build_graph, X, m, **kw).result(timeout)``)
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
        rebuild_tail: int = 10_000,
        rebuild_deleted_fraction: float = 0.25,
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
        self.rebuild_tail = int(rebuild_tail)
        self.rebuild_deleted_fraction = float(rebuild_deleted_fraction)
        self.n_neighbors = int(n_neighbors)
        self.leaf_budget = int(leaf_budget)
        self.epsilon = float(epsilon)
        self.background = bool(background)
        self.random_state = random_state
        self.builder = builder
        self._lock = threading.RLock()
        self._alloc(0, self.dim or 0)
        self._graph = None
        self._graph_n = self._graph_dead = self._deleted = 0
        self._build: _Build | None = None
        self._builds = 0
        self._last_build_seconds: float | None = None
        self._last_error: str | None = None
        self._auto_after = 0  # after a failed build, no automatic retry before n reaches this

    # ------------------------------------------------------------------ storage
    def _alloc(self, cap: int, dim: int) -> None:
        self._vectors = np.empty((cap, dim), np.float32)
        self._sq = np.empty(cap, np.float32)
        self._ids = np.empty(cap, object)
        self._alive = np.zeros(cap, bool)
        self._n = 0
        self._row_of: dict[Hashable, int] = {}

    def _grow(self, need: int) -> None:
        cap = len(self._sq)
        if need <= cap:
            return
        new = max(need, 2 * cap, 1024)
        n = self._n
        for name in ("_vectors", "_sq", "_ids", "_alive"):
            old = getattr(self, name)
            arr = (np.zeros if name == "_alive" else np.empty)((new,) + old.shape[1:], old.dtype)
            arr[:n] = old[:n]
            setattr(self, name, arr)

    def _kill(self, row: int) -> None:
        self._alive[row] = False
        self._deleted += 1
        if row < self._graph_n:
            self._graph_dead += 1

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
            if self.dim is None:
                self.dim = dim
                self._alloc(0, dim)
            start = self._n
            self._grow(start + k)
            self._vectors[start : start + k] = X
            self._sq[start : start + k] = sqnorms(X)
            for j, id_ in enumerate(ids):
                self._ids[start + j] = id_
                old = self._row_of.get(id_)
                if old is not None:
                    self._kill(old)
                self._row_of[id_] = start + j
            self._alive[start : start + k] = True
            self._n = start + k
            build = self._maybe_start_build()
        self._run_if_sync(build)
        return k

    def remove(self, ids: Any) -> int:
        """Remove ids; unknown (or unhashable) ids are ignored. Returns how many were removed."""
        removed = 0
        with self._lock:
            for id_ in _as_id_list(ids):
                try:
                    row = self._row_of.pop(id_, None)
                except TypeError:
                    continue
                if row is not None:
                    self._kill(row)
                    removed += 1
            build = self._maybe_start_build() if removed else None
        self._run_if_sync(build)
        return removed

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, id_: Any) -> bool:
        try:
            return id_ in self._row_of
        except TypeError:
            return False

    def get(self, id_: Any, default: Any = None) -> np.ndarray | Any:
        """The stored vector of ``id_`` (a copy, float32), or ``default``."""
        with self._lock:
            row = self._get_row(id_)
            return default if row is None else self._vectors[row].copy()

    def vectors_of(self, ids: Any) -> tuple[list, np.ndarray]:
        """``(the ids held, their vectors)``: one copy for many ids, taken under one lock (unknown ids left out)."""
        with self._lock:
            pairs = [(i, r) for i in _as_id_list(ids) if (r := self._get_row(i)) is not None]
            rows = np.fromiter((r for _, r in pairs), dtype=np.int64, count=len(pairs))
            return [i for i, _ in pairs], self._vectors[rows].copy() if len(rows) else np.empty((0, self.dim or 0),
                                                                                                  np.float32)

    def ids(self) -> list:
        """All live ids (in no particular order)."""
        with self._lock:
            return list(self._row_of)

    def _view(self, epsilon: float | None) -> _search.View:
        return _search.View(
            self._vectors, self._sq, self._ids, self._alive, self._n, len(self._row_of),
            self._graph if self.graph_enabled else None, self._graph_n, self._graph_dead, self.measure,
            self.epsilon if epsilon is None else float(epsilon),
        )  # fmt: skip

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
        self, query: Any, n: int = 10, *, candidates: Iterable | None = None, epsilon: float | None = None
    ) -> tuple[list, np.ndarray]:
        """The ``n`` ids most similar to one query vector, best first.

        Parameters
        ----------
        query : array-like, shape (dim,)
        n : int
            Number of results (fewer if fewer vectors qualify).
        candidates : iterable of ids, optional
            Restrict results to these ids (e.g. those matching a MongoDB
            filter); unknown ids are ignored. At most ``exact_threshold`` of
            them: exact answer. More: ANN with over-fetch and filtering,
            falling back to exact search when that finds too few.
        epsilon : float, optional
            Override the index's query epsilon.

        Returns
        -------
        ids : list
        scores : ndarray of float32
            Higher is more similar (cosine, dot, or negative L2 distance).
        """
        Q = self._check_query(query, n)
        if Q.shape[0] != 1:
            raise SemanticIndexError(f"search() takes one query vector, got {Q.shape[0]}; use search_batch().")
        return self._search_many(Q, int(n), candidates, epsilon)[0]

    def search_batch(
        self, queries: Any, n: int = 10, *, candidates: Iterable | None = None, epsilon: float | None = None
    ) -> list[tuple[list, np.ndarray]]:
        """:meth:`search` for each row of ``queries``; returns a list of ``(ids, scores)``."""
        return self._search_many(self._check_query(queries, n), int(n), candidates, epsilon)

    def _candidate_rows(self, candidates: Any) -> np.ndarray:
        """Sorted unique rows of the known candidate ids (call with the lock held)."""
        cands = _as_id_list(candidates)
        get = self._row_of.get
        try:
            rows = np.fromiter((get(c, -1) for c in cands), dtype=np.int64, count=len(cands))
        except TypeError:  # an unhashable candidate: it cannot be in the index
            rows = np.array([r for r in (self._get_row(c) for c in cands) if r is not None] or [-1], np.int64)
        mask = np.zeros(self._n, dtype=bool)
        mask[rows[rows >= 0]] = True
        return np.flatnonzero(mask)

    def _get_row(self, id_: Any) -> int | None:
        try:
            return self._row_of.get(id_)
        except TypeError:
            return None

    def _search_many(self, Q: np.ndarray, n: int, candidates, epsilon) -> list[tuple[list, np.ndarray]]:
        with self._lock:
            view = self._view(epsilon)
            rows = None if candidates is None else self._candidate_rows(candidates)
        if view.n == 0:
            return [([], np.empty(0, np.float32)) for _ in Q]
        P = prepare_queries(Q, self.measure)
        out = []
        for q_raw, q in zip(Q, P):
            if rows is None:
                r, part = _search.search_all(view, q_raw, q, n, self.exact_threshold)
            else:
                r, part = _search.search_candidates(view, q_raw, q, n, rows, self.exact_threshold)
            scores = finalize_scores(part[None, :], q[None, :], self.measure)[0]
            out.append((view.ids[r].tolist(), scores.astype(np.float32, copy=False)))
        return out

    # ------------------------------------------------------------------ info
    def stats(self) -> dict[str, Any]:
        """Counters: size, dim, measure, tail, deleted, graph_size, building, builds ..."""
        with self._lock:
            return {
                "size": len(self._row_of),
                "dim": self.dim,
                "measure": self.measure_name,
                "tail": self._n - self._graph_n,
                "deleted": self._deleted,
                "graph_size": self._graph_n if self._graph is not None else 0,
                "graph_pending": self._pending_graph is not None,
                "building": self._build is not None,
                "last_build_seconds": self._last_build_seconds,
                "builds": self._builds,
                "capacity": len(self._sq),
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
            f"building={s['building']})"
        )
