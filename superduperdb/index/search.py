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


def overfetch(k: int, p: float) -> int:
    """How many graph neighbours to fetch so that ``k`` of them pass a filter of selectivity ``p``.

    Elasticsearch's rule (2026): ``m = ceil((k + 2.5 * sqrt(k (1 - p) / p)) / p)``, the expected
    fetch plus 2.5 standard deviations of a binomial draw, and at least ``1.2 k``.

    >>> overfetch(10, 1.0), overfetch(10, 0.5), overfetch(10, 0.1)
    (12, 36, 338)
    """
    if k <= 0:
        return 0
    p = min(max(float(p), 1e-12), 1.0)
    m = math.ceil((k + 2.5 * math.sqrt(k * (1.0 - p) / p)) / p)
    return max(m, math.ceil(1.2 * k))


#: The plans a query can take on one shard, cheapest first (``explain()``'s ``plan``).
PLANS = ("exact", "graph", "graph+retry", "graph+exact")


class Tally:
    """What answering a query cost: vectors scored, graph retries, the plans taken, the largest over-fetch."""

    __slots__ = ("scored", "retries", "plans", "fetch")

    def __init__(self) -> None:
        self.scored = 0
        self.retries = 0
        self.plans: set[str] = set()
        self.fetch = 0

    @property
    def plan(self) -> str:
        """The costliest plan taken (``'exact'`` when none was recorded)."""
        return max(self.plans, key=PLANS.index) if self.plans else "exact"


def _count(tally: Tally | None, scored: int) -> None:
    """Add ``scored`` to the vectors a query scored (``explain()``'s ``candidates``)."""
    if tally is not None:
        tally.scored += int(scored)


def _took(tally: Tally | None, plan: str) -> None:
    if tally is not None:
        tally.plans.add(plan)


def exact_range(view: View, q: np.ndarray, k: int, start: int, stop: int, tally: Tally | None = None):
    """Exact top ``k`` live rows in ``[start, stop)`` (a contiguous slice, no gather)."""
    if stop <= start:
        return _EMPTY
    _count(tally, stop - start)
    part = partial_scores(q[None, :], view.vectors[start:stop], view.measure, view.sq[start:stop])[0]
    part[~view.alive[start:stop]] = -np.inf
    return _top(np.arange(start, stop, dtype=np.int64), part, k)


def exact_rows(view: View, q: np.ndarray, k: int, rows: np.ndarray, tally: Tally | None = None):
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
                    tally: Tally | None = None):
    """ANN over the graph, keeping rows where ``accept`` (else alive) holds: the planner's graph plans.

    Fetches :func:`overfetch` ``(k, p)`` neighbours for the selectivity ``p`` of ``accept`` among the
    graph's rows; if fewer than ``k`` pass, one retry fetches more (from the acceptance rate seen)
    and scores only the rows not seen before; if still too few, exact over the accepted rows (the
    last resort, so that ``k`` results come back whenever ``k`` rows are accepted). When the
    over-fetch (or the retry's) would exceed :data:`MAX_FETCH` or the graph's size, exact instead.
    """
    gn = view.graph_n
    need = min(k, n_accept)
    if need <= 0:
        return _EMPTY
    mask = view.alive if accept is None else accept
    cap = min(gn, MAX_FETCH)
    fetch = overfetch(need, n_accept / gn)
    if accept is None:  # unfiltered (dead rows aside): pynndescent's recall grows with k, keep 10 spare
        fetch = max(fetch, math.ceil(1.2 * need) + 10)
    if tally is not None:
        tally.fetch = max(tally.fetch, fetch)
    if fetch > cap:
        _took(tally, "exact")
        return exact_rows(view, q, k, np.flatnonzero(mask[:gn]), tally)
    rows = view.graph.query(q_raw, fetch, view.epsilon)
    _count(tally, len(rows))
    ok = rows[mask[rows]]
    if len(ok) >= need:
        _took(tally, "graph")
        part = partial_scores(q[None, :], view.vectors[ok], view.measure, view.sq[ok])[0]
        return _top(ok, part, k)
    seen_rate = max(len(ok), 0.5) / max(len(rows), 1)
    wider = max(2 * fetch, len(rows) + overfetch(need - len(ok), seen_rate))
    if wider <= cap:  # one retry, wider, from the acceptance rate this fetch saw (else exact is cheaper)
        if tally is not None:
            tally.retries += 1
        more = view.graph.query(q_raw, wider, view.epsilon)
        new = more[~np.isin(more, rows, assume_unique=True)]  # skip what was seen
        _count(tally, len(new))
        ok = np.concatenate([ok, new[mask[new]]])
        if len(ok) >= need:
            _took(tally, "graph+retry")
            part = partial_scores(q[None, :], view.vectors[ok], view.measure, view.sq[ok])[0]
            return _top(ok, part, k)
    _took(tally, "graph+exact")
    return exact_rows(view, q, k, np.flatnonzero(mask[:gn]), tally)


def search_all(view: View, q_raw: np.ndarray, q: np.ndarray, k: int, exact_threshold: int,
               tally: Tally | None = None):
    """Top ``k`` over every live row: graph + exact tail, or exact when small."""
    if view.graph is None or view.live <= exact_threshold:
        _took(tally, "exact")
        return exact_range(view, q, k, 0, view.n, tally)
    tail = exact_range(view, q, k, view.graph_n, view.n, tally)
    head = _graph_filtered(view, q_raw, q, k, None, view.graph_n - view.graph_dead, tally)
    return merge(k, head, tail)


def search_candidates(view: View, q_raw: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray, exact: bool,
                      tally: Tally | None = None):
    """Top ``k`` among candidate rows (sorted, unique) of one segment.

    ``exact`` (the planner chose it: the filtered rows are cheap to score) or no graph: exact over the
    rows, so always the true answer. Otherwise the graph with the computed over-fetch, filtered by
    membership (:func:`_graph_filtered`), plus exact over the candidates in the segment's tail.
    """
    if len(rows) == 0:
        return _EMPTY
    if exact or view.graph is None:
        _took(tally, "exact")
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
    head = _graph_filtered(view, q_raw, q, k, accept, n_accept, tally)
    return merge(k, head, tail)
