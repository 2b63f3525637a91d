"""Search strategies over a consistent snapshot (:class:`View`) of a vector index.

:class:`~superduperdb.index.vector_index.VectorIndex` captures a :class:`View`
under its lock (a handful of references, no copying) and runs one of these
functions outside the lock. Rows ``< view.n`` of the captured arrays never
change, so a concurrent writer (which only appends rows and flips the alive
mask) or a graph swap (which installs new arrays) cannot corrupt a search in
flight; a row deleted mid-search may or may not be returned.

All functions work with *partial* scores (see
:func:`~superduperdb.index.measures.partial_scores`) of one prepared query
and return ``(rows, partial_scores)`` best first; the caller finalizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from superduperdb.index.graph import Graph
from superduperdb.index.measures import partial_scores, top_k

# Largest k asked of the graph before exact search is cheaper and surer.
MAX_FETCH = 4096
_EMPTY = (np.empty(0, np.int64), np.empty(0, np.float32))


@dataclass(frozen=True)
class View:
    """References to an index's arrays at one instant (rows ``< n`` are immutable)."""

    vectors: np.ndarray
    sq: np.ndarray
    ids: np.ndarray
    alive: np.ndarray
    n: int
    live: int
    graph: Graph | None
    graph_n: int
    graph_dead: int
    measure: str
    epsilon: float


def _top(rows: np.ndarray, part: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` of ``(rows, part)``, dropping rows masked with ``-inf``."""
    if len(rows) == 0:
        return _EMPTY
    idx, vals = top_k(part[None, :], k)
    idx, vals = idx[0], vals[0]
    keep = np.isfinite(vals)
    return rows[idx[keep]], vals[keep]


def _count(tally: list | None, scored: int) -> None:
    """Add ``scored`` to ``tally[0]`` (how many vectors a query scored: ``explain()``'s ``candidates``)."""
    if tally is not None:
        tally[0] += int(scored)


def exact_range(view: View, q: np.ndarray, k: int, start: int, stop: int, tally: list | None = None):
    """Exact top ``k`` live rows in ``[start, stop)`` (a contiguous slice, no gather)."""
    if stop <= start:
        return _EMPTY
    _count(tally, stop - start)
    part = partial_scores(q[None, :], view.vectors[start:stop], view.measure, view.sq[start:stop])[0]
    part[~view.alive[start:stop]] = -np.inf
    return _top(np.arange(start, stop, dtype=np.int64), part, k)


def exact_rows(view: View, q: np.ndarray, k: int, rows: np.ndarray, tally: list | None = None):
    """Exact top ``k`` of the given rows (dead rows dropped)."""
    rows = rows[view.alive[rows]]
    if len(rows) == 0:
        return _EMPTY
    _count(tally, len(rows))
    part = partial_scores(q[None, :], view.vectors[rows], view.measure, view.sq[rows])[0]
    return _top(rows, part, k)


def merge(k: int, *parts) -> tuple[np.ndarray, np.ndarray]:
    """Merge several ``(rows, partial)`` results into the best ``k``."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _EMPTY
    if len(parts) == 1:
        return parts[0][0][:k], parts[0][1][:k]
    rows = np.concatenate([p[0] for p in parts])
    part = np.concatenate([p[1] for p in parts])
    return _top(rows, part, k)


def _graph_filtered(view: View, q_raw: np.ndarray, q: np.ndarray, k: int, accept: np.ndarray | None, n_accept: int,
                    tally: list | None = None):
    """ANN over the graph, keeping rows where ``accept`` (else alive) holds.

    Over-fetches by the expected acceptance rate, doubling the fetch until
    ``k`` accepted rows are found or :data:`MAX_FETCH`/the graph size is
    reached; then falls back to exact search over the accepted graph rows.
    """
    gn = view.graph_n
    need = min(k, n_accept)
    if need <= 0:
        return _EMPTY
    mask = view.alive if accept is None else accept
    cap = min(gn, MAX_FETCH)
    fetch = math.ceil(need * gn / n_accept * 1.2) + 10
    if fetch <= cap:
        while True:
            rows = view.graph.query(q_raw, fetch, view.epsilon)
            _count(tally, len(rows))
            rows = rows[mask[rows]]
            if len(rows) >= need:
                part = partial_scores(q[None, :], view.vectors[rows], view.measure, view.sq[rows])[0]
                return _top(rows, part, k)
            if fetch >= cap:
                break
            fetch = min(2 * fetch, cap)
    return exact_rows(view, q, k, np.flatnonzero(mask[:gn]), tally)


def search_all(view: View, q_raw: np.ndarray, q: np.ndarray, k: int, exact_threshold: int,
               tally: list | None = None):
    """Top ``k`` over every live row: graph + exact tail, or exact when small."""
    if view.graph is None or view.live <= exact_threshold:
        return exact_range(view, q, k, 0, view.n, tally)
    tail = exact_range(view, q, k, view.graph_n, view.n, tally)
    head = _graph_filtered(view, q_raw, q, k, None, view.graph_n - view.graph_dead, tally)
    return merge(k, head, tail)


def search_candidates(
    view: View, q_raw: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray, exact_threshold: int,
    tally: list | None = None,
):
    """Top ``k`` among candidate rows (sorted, unique).

    Few candidates (``<= exact_threshold``) or no graph: exact, so always the
    true answer. Many: ANN with over-fetch filtered by membership in the
    graph part, plus exact over candidates in the tail.
    """
    if len(rows) == 0:
        return _EMPTY
    if view.graph is None or len(rows) <= exact_threshold or view.live <= exact_threshold:
        return exact_rows(view, q, k, rows, tally)
    split = int(np.searchsorted(rows, view.graph_n))
    head_rows, tail_rows = rows[:split], rows[split:]
    tail = exact_rows(view, q, k, tail_rows, tally)
    accept = np.zeros(view.graph_n, dtype=bool)
    accept[head_rows] = True
    accept &= view.alive[: view.graph_n]
    n_accept = int(accept.sum())
    if n_accept == 0:
        return tail
    # Too selective for the graph: _graph_filtered goes straight to exact.
    head = _graph_filtered(view, q_raw, q, k, accept, n_accept, tally)
    return merge(k, head, tail)
