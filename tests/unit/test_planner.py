"""The filtered-search planner of a shard's VectorIndex: exact below a cost, else the graph with a computed
over-fetch, one retry that skips what was seen, then exact; k results whenever k candidates are held.

The graphs here are exact stand-ins given through ``VectorIndex(builder=...)`` (the public hook for
building elsewhere), so the plan taken, and not pynndescent's recall, is what these tests look at.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from superduperdb.index import VectorIndex, exact_search
from superduperdb.index.search import overfetch

DIM = 8


class ExactGraph:
    """A graph that answers exactly over the rows it was built on (counts its queries)."""

    def __init__(self, X: np.ndarray, measure: str) -> None:
        self.X, self.measure, self.size, self.asked = X.copy(), measure, len(X), []

    def query(self, q, k, epsilon=0.2):
        self.asked.append(int(k))
        return exact_search(q, self.X, k, self.measure)[0][0]


def _index(n: int = 4000, exact_cost: int = 100 * DIM, seed: int = 0) -> tuple[VectorIndex, np.ndarray]:
    X = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    index = VectorIndex(measure="l2", exact_threshold=10, exact_cost=exact_cost, rebuild_tail=10**9,
                        background=False, builder=lambda X, measure, **kw: ExactGraph(X, measure))
    index.add(list(range(n)), X)
    assert index.rebuild(timeout=60) and index.stats()["graph_size"] == n
    return index, X


def _brute(X: np.ndarray, ids: list, q: np.ndarray, k: int) -> list:
    d = ((X[ids] - q) ** 2).sum(1)
    return [ids[i] for i in np.argsort(d, kind="stable")[:k]]


def test_overfetch_is_elasticsearchs_rule_and_at_least_1_2k():
    for k in (1, 10, 100):
        for p in (1.0, 0.9, 0.5, 0.1, 0.01):
            want = math.ceil((k + 2.5 * math.sqrt(k * (1 - p) / p)) / p)
            assert overfetch(k, p) == max(want, math.ceil(1.2 * k))
    assert overfetch(10, 1.0) == 12 and overfetch(10, 0.1) == 338
    assert overfetch(0, 0.5) == 0


def test_exact_below_the_cost_threshold_graph_above_it():
    index, X = _index()
    q = X[7] + 0.01
    info: dict = {}
    few = list(range(0, 4000, 50))  # 80 candidates x 8 dims <= 800: exact, every candidate scored
    got, _ = index.search(q, 10, candidates=few, info=info)
    assert info["plan"] == "exact" and info["candidates"] == 80 and info["fetch"] == 0
    assert got == _brute(X, few, q, 10)
    many = list(range(0, 4000, 2))  # 2,000 candidates: the graph, fetching overfetch(10, 0.5)
    got, _ = index.search(q, 10, candidates=many, info=info)
    assert info["plan"] == "graph" and info["fetch"] == overfetch(10, 0.5) and info["retries"] == 0
    assert info["candidates"] == overfetch(10, 0.5) and info["selectivity"] == 0.5
    assert got == _brute(X, many, q, 10)
    index.exact_cost = 10**9  # the same filter under a higher threshold: exact
    index.search(q, 10, candidates=many, info=info)
    assert info["plan"] == "exact" and info["candidates"] == 2000


def test_one_retry_skips_what_was_seen_then_exact_as_the_last_resort():
    index, X = _index()
    q = X[0]
    order = exact_search(q, X, 4000, "l2")[0][0].tolist()  # every row, nearest first
    graph = index._sealed[0].graph
    # Half the rows, but the nearest candidates start near the end of the first fetch: it finds too few,
    # the wider retry finds them.
    first = overfetch(10, 0.5)
    near = order[first - 5:first - 5 + 2000]
    graph.asked.clear()
    info: dict = {}
    got, _ = index.search(q, 10, candidates=near, info=info)
    assert info["plan"] == "graph+retry" and info["retries"] == 1 and len(graph.asked) == 2
    assert graph.asked[1] > graph.asked[0]
    assert info["candidates"] == graph.asked[1]  # the retry scored only rows not seen before
    assert got == order[first - 5:first + 5]
    # Candidates the graph does not reach: no retry as wide as the graph, exact over them, still k results.
    far = order[-300:]
    got, _ = index.search(q, 10, candidates=far, info=info)
    assert info["plan"] == "graph+exact" and info["retries"] == 0
    assert got == _brute(X, far, q, 10)


@pytest.mark.parametrize("share", [0.9, 0.5, 0.1, 0.01, 0.001])
def test_k_matching_results_whenever_k_match_at_every_selectivity(share):
    index, X = _index(exact_cost=50 * DIM, seed=1)
    rng = np.random.default_rng(2)
    cands = sorted(rng.choice(4000, max(7, int(4000 * share)), replace=False).tolist())
    for _ in range(5):
        q = rng.standard_normal(DIM).astype(np.float32)
        info: dict = {}
        got, _ = index.search(q, 10, candidates=cands + ["unknown"], info=info)
        assert got == _brute(X, cands, q, min(10, len(cands))), info
        assert info["selectivity"] == pytest.approx(len(cands) / 4000)


def test_seven_matching_documents_give_seven_results_and_similar_k_unfiltered():
    index, X = _index()
    seven = [3, 99, 512, 1024, 2048, 3000, 3999]
    got, _ = index.search(X[3], 10, candidates=seven)
    assert sorted(got) == seven and got[0] == 3
    info: dict = {}
    got, _ = index.search(X[5], 10, info=info)  # unfiltered: the graph with 1.2k + 10
    assert info["plan"] == "graph" and info["fetch"] == 22 and got == _brute(X, list(range(4000)), X[5], 10)
