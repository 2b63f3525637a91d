"""Tests of superduperdb.index (exact search, upserts, filters, background rebuilds).

Unmarked tests never compile pynndescent: they use the exact path, or a fake
graph (exact search behind the graph interface) patched into the builder, which
makes the swap/concurrency logic deterministic and checkable against brute
force. Tests that build real pynndescent graphs are marked ``slow`` and share
module-scoped fixtures, because each fresh process pays ~45-170 s of JIT.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
from bson import ObjectId

import superduperdb.index.rebuild as vi_module
from superduperdb.errors import DimensionMismatchError, SemanticIndexError
from superduperdb.index import MEASURES, VectorIndex, configure_numba_env, exact_search
from superduperdb.index.measures import check_measure, top_k

configure_numba_env()  # before anything imports numba (only sets env defaults)

WAIT = 600.0  # deadline for every wait in this module (seconds)


# ---------------------------------------------------------------- helpers
def brute(X: np.ndarray, q: np.ndarray, measure: str) -> np.ndarray:
    """float64 brute-force scores (higher = more similar)."""
    X, q = X.astype(np.float64), q.astype(np.float64)
    if measure == "cosine":
        return X @ q / (np.linalg.norm(X, axis=1) * np.linalg.norm(q))
    if measure == "dot":
        return X @ q
    return -np.linalg.norm(X - q, axis=1)


def brute_top(ids: list, X: np.ndarray, q: np.ndarray, n: int, measure: str):
    s = brute(X, q, measure)
    order = np.argsort(-s, kind="stable")[:n]
    return [ids[i] for i in order], s[order]


def blobs(n: int, dim: int, clusters: int = 50, seed: int = 0, spread: float = 3.0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)) * spread
    X = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim))
    Q = centers[rng.integers(0, clusters, 200)] + rng.standard_normal((200, dim))
    return X.astype(np.float32), Q.astype(np.float32)


def recall(index: VectorIndex, ids: list, X: np.ndarray, Q: np.ndarray, measure: str, n: int = 10) -> float:
    hits = 0
    for q in Q:
        got = index.search(q, n)[0]
        hits += len(set(got) & set(brute_top(ids, X, q, n, measure)[0]))
    return hits / (n * len(Q))


class ExactGraph:
    """Graph stand-in: exact search over the rows it was built on."""

    def __init__(self, X: np.ndarray, measure: str) -> None:
        self.X, self.measure, self.size = X.copy(), measure, len(X)

    def query(self, q, k, epsilon=0.2):
        return exact_search(q, self.X, k, self.measure)[0][0]


@pytest.fixture
def fake_graph(monkeypatch):
    """Replace pynndescent with ExactGraph; `gate` (if set) blocks builds until released."""
    state = {"gate": None, "started": threading.Event(), "calls": 0}

    def build(X, measure, **kwargs):
        state["calls"] += 1
        state["started"].set()
        if state["gate"] is not None:
            assert state["gate"].wait(WAIT), "test never released the build"
        return ExactGraph(X, measure)

    monkeypatch.setattr(vi_module, "build_graph", build)
    return state


def check_exact(index: VectorIndex, ref: dict, Q: np.ndarray, measure: str, n: int = 10, candidates=None):
    """Every query answers exactly as brute force over `ref` (id -> vector)."""
    ids = list(ref) if candidates is None else [i for i in candidates if i in ref]
    X = np.array([ref[i] for i in ids], dtype=np.float32).reshape(len(ids), -1)
    for q in Q:
        got_ids, got_scores = index.search(q, n, candidates=candidates)
        want_ids, want_scores = brute_top(ids, X, q, n, measure) if ids else ([], np.empty(0))
        assert got_ids == want_ids
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- measures
def test_measures_and_top_k():
    assert MEASURES == ("cosine", "dot", "l2")
    with pytest.raises(SemanticIndexError, match="Valid measures: cosine, dot, l2") as err:
        check_measure("cosin")
    assert "Did you mean 'cosine'" in str(err.value) and err.value.valid == list(MEASURES)
    idx, val = top_k(np.array([[3.0, 1.0, 2.0, 5.0]]), 3)
    assert idx.tolist() == [[3, 0, 2]] and val.tolist() == [[5.0, 3.0, 2.0]]
    assert top_k(np.array([[1.0, 2.0]]), 5)[0].tolist() == [[1, 0]]


@pytest.mark.parametrize("measure", MEASURES)
def test_exact_search_matches_brute_force(measure):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3000, 32)).astype(np.float32)
    Q = rng.standard_normal((25, 32)).astype(np.float32)
    idx, scores = exact_search(Q, X, 10, measure)
    for q, i, s in zip(Q, idx, scores):
        want_i, want_s = brute_top(list(range(len(X))), X, q, 10, measure)
        assert i.tolist() == want_i
        np.testing.assert_allclose(s, want_s, rtol=1e-4, atol=1e-4)


def test_score_conventions():
    x = np.array([3.0, 4.0], np.float32)
    for measure, want in [("cosine", 1.0), ("dot", 25.0), ("l2", 0.0)]:
        index = VectorIndex(measure=measure)
        index.add(["x", "far"], np.stack([x, -x]))
        ids, scores = index.search(x, 2)
        assert ids == ["x", "far"] and scores[0] == pytest.approx(want, abs=1e-5)
    ids, scores = VectorIndex(measure="l2").search(x, 1)
    assert ids == [] and scores.shape == (0,)


# ---------------------------------------------------------------- exact path
@pytest.mark.parametrize("measure", MEASURES)
def test_index_exact_path(measure):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2500, 24)).astype(np.float32)
    index = VectorIndex(measure=measure)
    for start in range(0, 2500, 700):  # several adds: capacity growth
        index.add(list(range(start, min(start + 700, 2500))), X[start : start + 700])
    ref = {i: X[i] for i in range(2500)}
    Q = rng.standard_normal((10, 24)).astype(np.float32)
    check_exact(index, ref, Q, measure)
    batch = index.search_batch(Q, 5)
    assert [b[0] for b in batch] == [index.search(q, 5)[0] for q in Q]
    assert index.stats()["graph_size"] == 0 and not index.stats()["building"]


def test_upsert_remove_get_contains():
    index = VectorIndex(measure="l2")
    assert index.add([1, 2, 3], np.eye(3)) == 3
    index.add(2, np.array([10.0, 0, 0]))  # upsert of one id
    assert len(index) == 3 and index.stats()["deleted"] == 1
    np.testing.assert_array_equal(index.get(2), [10, 0, 0])
    assert index.search([10.0, 0, 0], 1)[0] == [2]
    assert index.search([0, 1.0, 0], 3)[0][0] == 1  # the old vector of 2 is gone
    index.add(["d", "d"], np.array([[1.0, 1, 1], [2.0, 2, 2]]))  # last occurrence wins
    np.testing.assert_array_equal(index.get("d"), [2, 2, 2])
    assert index.remove([2, "unknown", [1, 2]]) == 1
    assert 2 not in index and 1 in index and [1] not in index and index.get(2) is None
    assert 2 not in index.search([10.0, 0, 0], 10)[0]
    assert sorted(index.ids(), key=str) == [1, 3, "d"]
    assert index.remove(2) == 0 and len(index) == 3


def test_id_types_and_n_larger_than_size():
    ids = [ObjectId(), 7, "seven", ("a", 1), ObjectId()]
    index = VectorIndex(measure="cosine")
    index.add(ids, np.random.default_rng(3).standard_normal((5, 4)))
    got, scores = index.search(np.ones(4), n=100)
    assert sorted(map(repr, got)) == sorted(map(repr, ids)) and len(scores) == 5
    assert all(isinstance(i, ObjectId) for i in (got[got.index(ids[0])], got[got.index(ids[4])]))
    assert index.search(np.ones(4), 2, candidates=[ids[2], ("a", 1), "missing"])[0] in (
        ["seven", ("a", 1)],
        [("a", 1), "seven"],
    )
    assert index.search(np.ones(4), 3, candidates=[])[0] == []
    assert index.search(np.ones(4), 3, candidates=ids[0])[0] == [ids[0]]


@pytest.mark.parametrize("measure", MEASURES)
def test_candidates_exact(measure):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3000, 16)).astype(np.float32)
    index = VectorIndex(measure=measure, exact_threshold=100)  # no graph: large sets exact too
    index.add([f"id{i}" for i in range(3000)], X)
    ref = {f"id{i}": X[i] for i in range(3000)}
    Q = rng.standard_normal((5, 16)).astype(np.float32)
    for size in (3, 50, 2000):
        cands = [f"id{i}" for i in rng.choice(3000, size, replace=False)] + ["nope"]
        check_exact(index, ref, Q, measure, candidates=cands)


def test_bad_input_changes_nothing():
    index = VectorIndex(measure="cosine")
    index.add(["a", "b"], np.eye(2))
    before = (index.stats(), index.ids(), index.get("a").tolist())
    bad_adds = [
        (["c"], np.ones((1, 3)), DimensionMismatchError),
        (["c", "d"], [[1.0, np.nan], [1.0, 1.0]], SemanticIndexError),
        (["c"], [[np.inf, 1.0]], SemanticIndexError),
        (["c"], [[1e300, 1.0]], SemanticIndexError),  # overflows float32
        (["c", "d"], np.ones((1, 2)), SemanticIndexError),
        ([["unhashable"]], np.ones((1, 2)), SemanticIndexError),
        (["c"], [["x", "y"]], SemanticIndexError),
        (["c"], np.ones((1, 1, 2)), SemanticIndexError),
    ]
    for ids, vecs, exc in bad_adds:
        with pytest.raises(exc):
            index.add(ids, vecs)
        assert (index.stats(), index.ids(), index.get("a").tolist()) == before
    with pytest.raises(DimensionMismatchError) as err:
        index.search(np.ones(3))
    assert (err.value.expected, err.value.got) == (2, 3) and isinstance(err.value, ValueError)
    for n in (0, -1, True, 2.5, "3"):
        with pytest.raises(SemanticIndexError, match="n must be a positive integer"):
            index.search(np.ones(2), n)
    with pytest.raises(SemanticIndexError, match="zero norm"):
        index.search(np.zeros(2))
    with pytest.raises(SemanticIndexError):
        index.search([np.nan, 1.0])
    with pytest.raises(SemanticIndexError, match="search_batch"):
        index.search(np.ones((2, 2)))
    with pytest.raises(SemanticIndexError, match="Valid measures"):
        VectorIndex(measure="euclid")
    with pytest.raises(SemanticIndexError):
        VectorIndex(dim=0)
    assert (index.stats(), index.ids(), index.get("a").tolist()) == before


def test_dim_fixed_and_repr():
    index = VectorIndex(dim=3, measure="dot")
    with pytest.raises(DimensionMismatchError):
        index.add([1], np.ones((1, 2)))
    assert index.add([], np.empty((0, 3))) == 0 and index.add([], []) == 0
    index.add([1], np.ones((1, 3)))
    s = index.stats()
    assert {k: s[k] for k in ("size", "dim", "measure", "tail", "deleted", "graph_size", "building", "builds")} == {
        "size": 1, "dim": 3, "measure": "dot", "tail": 1, "deleted": 0, "graph_size": 0,
        "building": False, "builds": 0,
    }  # fmt: skip
    assert repr(index) == (
        "VectorIndex(measure='dot', dim=3, size=1, graph_size=0, tail=1, deleted=0, segments=0, building=False)"
    )


def test_import_is_lazy_and_env():
    code = "import sys, superduperdb.index; print('numba' in sys.modules, 'pynndescent' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NUMBA_CACHE_DIR")}
    env["HOME"] = os.environ.get("HOME", "/tmp")
    code = (
        "import os; from superduperdb.index import configure_numba_env as c; "
        "os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'; print(c('/tmp/sddb-numba-test'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "'OMP_WAIT_POLICY': 'ACTIVE'" in out.stdout and "/tmp/sddb-numba-test" in out.stdout, out.stderr


# ---------------------------------------------------------------- rebuild logic (fake graph, fast)
@pytest.mark.parametrize("measure", MEASURES)
def test_graph_plus_tail_and_filters_are_exact_with_exact_graph(fake_graph, measure):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((4000, 16)).astype(np.float32)
    index = VectorIndex(
        measure=measure, exact_threshold=200, rebuild_tail=10**9, rebuild_deleted_fraction=0.9, background=False
    )
    index.add(list(range(3000)), X[:3000])
    assert index.rebuild(timeout=WAIT) and index.stats()["graph_size"] == 3000
    index.add(list(range(3000, 4000)), X[3000:])  # tail
    index.remove(list(range(0, 3000, 3)))  # deleted rows inside the graph
    index.add(list(range(1, 300, 3)), X[1:300:3] * 2)  # upserts: graph row dead, new row in tail
    ref = {i: X[i] for i in range(4000) if i % 3 or i >= 3000}
    ref.update({i: X[i] * 2 for i in range(1, 300, 3)})
    Q = rng.standard_normal((8, 16)).astype(np.float32)
    check_exact(index, ref, Q, measure)
    for size in (150, 1500, 3900):  # exact / ANN-filtered / ANN-filtered, unknown ids included
        cands = rng.choice(4000, size, replace=False).tolist() + ["missing"]
        check_exact(index, ref, Q, measure, candidates=cands)
    few = [i for i in range(0, 4000, 397) if i in ref]  # too selective for ANN: exact fallback
    index.exact_threshold = 5
    check_exact(index, ref, Q, measure, candidates=few)
    assert index.stats()["tail"] == 1100 and index.stats()["deleted"] == 1100


def test_background_rebuild_swap_handles_concurrent_writes(fake_graph):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((3000, 8)).astype(np.float32)
    index = VectorIndex(measure="l2", exact_threshold=50, rebuild_tail=10**9)
    index.add(list(range(2000)), X[:2000])
    ref = {i: X[i] for i in range(2000)}
    fake_graph["gate"] = threading.Event()
    assert index.rebuild(wait=False)
    assert fake_graph["started"].wait(WAIT) and index.stats()["building"]
    # Writes and reads while the builder is blocked mid-build.
    index.add(list(range(2000, 2500)), X[2000:2500])
    index.remove(list(range(0, 400)))  # rows in the snapshot
    index.remove(list(range(2400, 2450)))  # rows added during the build
    index.add(list(range(400, 450)), X[2500:2550])  # upserts of snapshot rows
    ref.update({i: X[i] for i in range(2000, 2500)})
    for i in list(range(0, 400)) + list(range(2400, 2450)):
        del ref[i]
    ref.update({i: X[2100 + i] for i in range(400, 450)})
    Q = rng.standard_normal((6, 8)).astype(np.float32)
    check_exact(index, ref, Q, "l2")  # old state (no graph yet) answers meanwhile
    assert not index.wait_until_built(timeout=0.01)
    fake_graph["gate"].set()
    assert index.wait_until_built(timeout=WAIT)
    s = index.stats()
    assert (s["builds"], s["graph_size"], s["size"], s["building"]) == (1, 2000, len(ref), False)
    # the build put its graph onto the sealed rows as they were; the 550 rows appended meanwhile
    # (50 of them removed since) wait in the growing segment: 450 + 50 dead rows
    assert s["deleted"] == 500 and s["tail"] == 550 and s["growing"] == 550
    assert sorted(index.ids()) == sorted(ref)
    for i in (5, 420, 2420, 2470, 1999):
        got = index.get(i)
        assert (got is None) if i not in ref else np.array_equal(got, ref[i])
    check_exact(index, ref, Q, "l2")
    check_exact(index, ref, Q, "l2", candidates=list(range(0, 3000, 2)))
    assert index.rebuild(timeout=WAIT) and index.stats()["deleted"] == 0
    check_exact(index, ref, Q, "l2")


def test_searches_from_threads_during_build(fake_graph):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((1500, 8)).astype(np.float32)
    index = VectorIndex(measure="cosine", exact_threshold=10, rebuild_tail=10**9)
    index.add(list(range(1500)), X)
    ref = {i: X[i] for i in range(1500)}
    assert index.rebuild(timeout=WAIT)
    Q = rng.standard_normal((4, 8)).astype(np.float32)
    errors: list[BaseException] = []

    def reader():
        try:
            for _ in range(5):
                check_exact(index, ref, Q, "cosine")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    fake_graph["gate"] = threading.Event()
    index.rebuild(wait=False)
    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    fake_graph["gate"].set()  # the swap happens while readers run
    for t in threads:
        t.join(WAIT)
    assert index.wait_until_built(WAIT) and not errors and index.stats()["builds"] == 2


def test_automatic_rebuild_thresholds(fake_graph):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((2000, 4)).astype(np.float32)
    index = VectorIndex(measure="dot", exact_threshold=300, rebuild_tail=400, background=False)
    index.add(list(range(300)), X[:300])  # small: exact only, no build
    assert fake_graph["calls"] == 0 and index.stats()["builds"] == 0
    index.add(list(range(300, 500)), X[300:500])  # past exact_threshold with a 500-row tail
    assert index.stats()["graph_size"] == 500 and index.stats()["tail"] == 0
    index.add(list(range(500, 899)), X[500:899])
    assert index.stats()["builds"] == 1
    index.add([899], X[899:900])  # tail reaches 400
    assert index.stats()["builds"] == 2 and index.stats()["graph_size"] == 900
    index.remove(list(range(300)))  # 33% dead > 25%: compacting rebuild
    assert index.stats()["builds"] == 3 and index.stats()["deleted"] == 0 and len(index) == 600


def test_build_failure_is_recorded_and_index_keeps_working(monkeypatch):
    def boom(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(vi_module, "build_graph", boom)
    index = VectorIndex(measure="l2", exact_threshold=10, rebuild_tail=100)
    X = np.random.default_rng(9).standard_normal((200, 4)).astype(np.float32)
    index.add(list(range(200)), X)  # automatic background build fails
    assert index.wait_until_built(WAIT)
    assert "no room" in index.stats()["last_error"] and index.stats()["builds"] == 0
    with pytest.raises(SemanticIndexError, match="Index build failed"):
        index.rebuild(timeout=WAIT)
    assert index.search(X[3], 1)[0] == [3] and len(index) == 200


def test_custom_builder_runs_instead_of_pynndescent(monkeypatch):
    monkeypatch.setattr(vi_module, "build_graph", None)  # must not be called
    calls = []

    def builder(X, measure, *, n_neighbors, random_state, leaf_budget):
        calls.append((len(X), measure, n_neighbors, random_state, leaf_budget))
        return pickle.loads(pickle.dumps(ExactGraph(X, measure)))  # as if built in another process

    rng = np.random.default_rng(11)
    X = rng.standard_normal((500, 8)).astype(np.float32)
    index = VectorIndex(measure="dot", exact_threshold=10, rebuild_tail=10**9, random_state=3, builder=builder)
    index.add(list(range(500)), X)
    assert index.rebuild(timeout=WAIT) and calls == [(500, "dot", 30, 3, 8)]
    check_exact(index, {i: X[i] for i in range(500)}, rng.standard_normal((4, 8)), "dot")

    index.builder = lambda X, measure, **kw: ExactGraph(X[:10], measure)  # wrong size
    with pytest.raises(SemanticIndexError, match="builder returned"):
        index.rebuild(timeout=WAIT)
    assert index.stats()["builds"] == 1 and index.stats()["graph_size"] == 500


# ---------------------------------------------------------------- snapshots (export_state / restore_state)
class CountingGraph(ExactGraph):
    """ExactGraph that counts its queries (to see whether searches use the graph)."""

    queries = 0

    def query(self, q, k, epsilon=0.2):
        CountingGraph.queries += 1
        return super().query(q, k, epsilon)


def test_state_round_trip_keeps_rows_dead_rows_and_graph(monkeypatch):
    monkeypatch.setattr(vi_module, "build_graph", lambda X, measure, **kw: CountingGraph(X, measure))
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    index = VectorIndex(measure="cosine", exact_threshold=50, rebuild_tail=10**9, background=False)
    index.add(list(range(300)), X)
    assert index.rebuild(timeout=WAIT)
    index.remove([0, 1, 2])
    index.add([3, 1000], X[:2] * 2)  # an upsert and an insert after the graph
    ref = {i: X[i] for i in range(3, 300)} | {3: X[0] * 2, 1000: X[1] * 2}

    state = pickle.loads(pickle.dumps(index.export_state()))
    assert [(s["n"], isinstance(s["graph"], bytes)) for s in state["segments"]] == [(300, True), (2, False)]
    restored = VectorIndex(measure="cosine", exact_threshold=50, rebuild_tail=10**9, background=False)
    assert restored.restore_state(state) == len(ref) == len(index)
    stats = restored.stats()
    assert stats["graph_pending"] and stats["graph_size"] == 0 and stats["deleted"] == index.stats()["deleted"]
    before = CountingGraph.queries
    check_exact(restored, ref, X[:5], "cosine")  # exact until the graph is attached
    assert CountingGraph.queries == before
    assert restored.attach_pending_graph()
    assert restored.stats()["graph_size"] == 300 and not restored.stats()["graph_pending"]
    check_exact(restored, ref, X[:5], "cosine")
    assert CountingGraph.queries > before + 1  # now through the graph
    assert restored.get(3).tolist() == pytest.approx((X[0] * 2).tolist()) and 0 not in restored


def test_restore_refuses_a_non_empty_index_or_another_measure():
    a = VectorIndex(measure="l2")
    a.add(["x"], np.ones((1, 3)))
    state = a.export_state()
    with pytest.raises(SemanticIndexError, match="empty"):
        a.restore_state(state)
    with pytest.raises(SemanticIndexError, match="'l2' index"):
        VectorIndex(measure="cosine").restore_state(state)
    assert len(a) == 1


def test_a_rebuild_before_the_restored_graph_is_attached_drops_it(fake_graph):
    X = np.random.default_rng(6).normal(size=(200, 4)).astype(np.float32)
    index = VectorIndex(measure="l2", exact_threshold=50, rebuild_tail=10**9, background=False)
    index.add(list(range(200)), X)
    assert index.rebuild(timeout=WAIT)
    restored = VectorIndex(measure="l2", exact_threshold=50, rebuild_tail=10**9, background=False)
    restored.restore_state(pickle.loads(pickle.dumps(index.export_state())))
    assert restored.rebuild(timeout=WAIT)  # new rows, new graph
    assert not restored.attach_pending_graph()
    assert restored.stats()["graph_size"] == 200 and restored.stats()["builds"] == 1


# ---------------------------------------------------------------- real pynndescent graphs (slow)
@pytest.fixture(scope="module")
def blob_data():
    X, Q = blobs(10_000, 64)
    return list(range(len(X))), X, Q


@pytest.fixture(scope="module")
def graph_indexes(blob_data):
    """One built index per measure over 10k x 64 blobs (pays the JIT once)."""
    ids, X, _ = blob_data
    out = {}
    for measure in MEASURES:
        data = X  # for dot: norms vary 2x, a hard case for the inner-product reduction
        index = VectorIndex(measure=measure, exact_threshold=1000, rebuild_tail=10**9, random_state=42)
        index.add(ids, data)
        assert index.rebuild(timeout=WAIT)
        out[measure] = (index, data)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("measure", MEASURES)
def test_ann_recall(graph_indexes, blob_data, measure):
    ids, _, Q = blob_data
    index, data = graph_indexes[measure]
    assert index.stats()["graph_size"] == 10_000 and index.stats()["tail"] == 0
    assert recall(index, ids, data, Q, measure) >= 0.95


@pytest.mark.slow
def test_graph_pickles(graph_indexes, blob_data):
    """A sealed segment's graph (what a snapshot and the build process carry) survives pickling."""
    from superduperdb.index.graph import build_graph

    _, X, Q = blob_data
    graph = build_graph(X[:3000], "dot", random_state=42)  # graph_indexes paid the JIT
    clone = pickle.loads(pickle.dumps(graph))
    assert clone.size == graph.size == 3000
    for q in Q[:10]:
        np.testing.assert_array_equal(clone.query(q, 10), graph.query(q, 10))


@pytest.mark.slow
def test_restored_real_graph_answers_as_the_original(graph_indexes, blob_data):
    ids, _, Q = blob_data
    index, _ = graph_indexes["cosine"]
    restored = VectorIndex(measure="cosine", exact_threshold=1000, rebuild_tail=10**9)
    restored.restore_state(pickle.loads(pickle.dumps(index.export_state())))
    assert restored.attach_pending_graph() and restored.stats()["graph_size"] == 10_000
    for q in Q[:20]:
        assert restored.search(q, 10)[0] == index.search(q, 10)[0]


@pytest.mark.slow
def test_ann_filtered_and_small_candidates(graph_indexes, blob_data):
    ids, _, Q = blob_data
    index, X = graph_indexes["cosine"]
    rng = np.random.default_rng(10)
    small = rng.choice(10_000, 800, replace=False).tolist()  # <= exact_threshold: exact
    ref = {i: X[i] for i in ids}
    check_exact(index, ref, Q[:20], "cosine", candidates=small)
    large = set(rng.choice(10_000, 4000, replace=False).tolist())
    hits = 0
    for q in Q:
        got, _ = index.search(q, 10, candidates=large)
        assert len(got) == 10 and set(got) <= large
        cand = sorted(large)
        hits += len(set(got) & set(brute_top(cand, X[cand], q, 10, "cosine")[0]))
    assert hits / (10 * len(Q)) >= 0.95


@pytest.mark.slow
def test_real_background_rebuild_with_writes(blob_data):
    ids, X, Q = blob_data
    index = VectorIndex(measure="l2", exact_threshold=500, rebuild_tail=10**9, random_state=1)
    index.add(ids[:6000], X[:6000])
    assert index.rebuild(timeout=WAIT)
    assert index.rebuild(wait=False)
    index.add(ids[6000:], X[6000:])  # probably during the build; correct either way
    index.remove(ids[:1000])
    for q in Q[:20]:
        got = index.search(q, 10)[0]
        assert len(got) == 10 and not set(got) & set(ids[:1000])
    assert index.wait_until_built(WAIT)
    assert len(index) == 9000 and index.stats()["graph_size"] + index.stats()["tail"] >= 9000
    assert recall(index, ids[1000:], X[1000:], Q, "l2") >= 0.95
    assert index.rebuild(timeout=WAIT) and index.stats()["tail"] == 0
    assert recall(index, ids[1000:], X[1000:], Q, "l2") >= 0.95


# -- custom (callable) measures: exact search only --------------------------------------------------
def _neg_l1(Q, X):
    return -np.abs(Q[:, None, :] - X[None, :, :]).sum(-1)


def test_custom_measure_is_searched_exactly_without_a_graph():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)).astype(np.float32)
    index = VectorIndex(measure=_neg_l1, exact_threshold=50, rebuild_tail=50, background=False)
    index.add(list(range(300)), X)
    q = rng.normal(size=5).astype(np.float32)
    truth = np.argsort(np.abs(X - q).sum(1), kind="stable")
    ids, scores = index.search(q, 7)
    assert ids == truth[:7].tolist()
    np.testing.assert_allclose(scores, -np.abs(X[truth[:7]] - q).sum(1), rtol=1e-5)
    cands = list(range(0, 300, 3))
    ids, _ = index.search(q, 4, candidates=cands)
    assert ids == [i for i in truth.tolist() if i % 3 == 0][:4]
    assert index.rebuild(wait=True) and index.stats()["graph_size"] == 0  # compacted, no graph
    assert index.stats()["measure"] == "_neg_l1"
    idx, _ = exact_search(q, X, 3, _neg_l1)
    assert idx[0].tolist() == truth[:3].tolist()


def test_custom_measure_snapshot_holds_its_name_not_the_callable():
    """A snapshot must pickle with plain pickle, whatever the measure's function (a notebook lambda)."""
    X = np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32)
    index = VectorIndex(measure=lambda Q, Y: -np.abs(Q[:, None, :] - Y[None, :, :]).sum(-1), background=False)
    index.add(list(range(40)), X)
    state = pickle.loads(pickle.dumps(index.export_state()))
    assert state["measure"] == "<lambda>"
    restored = VectorIndex(measure=index.measure, background=False)
    assert restored.restore_state(state) == 40
    assert restored.search(X[3], 1)[0] == [3]
    with pytest.raises(SemanticIndexError, match="cosine"):
        VectorIndex(measure="cosine", background=False).restore_state(state)


def test_custom_measure_errors_are_clear():
    index = VectorIndex(measure=lambda Q, X: np.zeros((1, 1)))
    index.add(["a", "b"], np.eye(2))
    with pytest.raises(SemanticIndexError, match=r"must return \(n, m\)"):
        index.search([1, 0], 1)

    def broken(Q, X):
        raise RuntimeError("boom")

    index = VectorIndex(measure=broken)
    index.add(["a"], np.eye(1))
    with pytest.raises(SemanticIndexError, match="boom"):
        index.search([1], 1)


# ---------------------------------------------------------------- segments (fake graph, fast)
@pytest.mark.parametrize("background", [False, True])
def test_segments_seal_merge_and_compact_under_writes_stay_exact(fake_graph, background):
    """Random upserts and removes across many seals, merges and compactions: every answer (with and
    without candidates) equals brute force over what was written, and the segments stay few."""
    rng = np.random.default_rng(12)
    index = VectorIndex(measure="l2", exact_threshold=100, rebuild_tail=150, max_segments=4, merge_factor=3,
                        rebuild_deleted_fraction=0.3, background=background)
    ref: dict = {}
    Q = rng.standard_normal((4, 6)).astype(np.float32)
    for step in range(30):
        ids = rng.integers(0, 3000, 120).tolist()
        X = rng.standard_normal((len(ids), 6)).astype(np.float32)
        index.add(ids, X)
        ref.update({i: X[j] for j, i in enumerate(ids)})  # the last occurrence of a repeated id wins
        gone = rng.integers(0, 3000, 40).tolist()
        index.remove(gone)
        for i in gone:
            ref.pop(i, None)
        if step % 10 == 9:
            check_exact(index, ref, Q, "l2")
            check_exact(index, ref, Q, "l2", candidates=rng.choice(3000, 400, replace=False).tolist())
    assert index.wait_until_built(WAIT)
    check_exact(index, ref, Q, "l2")
    s = index.stats()
    assert s["size"] == len(ref) and s["builds"] >= 5 and len(s["segments"]) <= 4 + 1, s
    assert sorted(index.ids()) == sorted(ref)
    state = pickle.loads(pickle.dumps(index.export_state()))
    restored = VectorIndex(measure="l2", exact_threshold=100, rebuild_tail=150, background=False)
    assert restored.restore_state(state) == len(ref)
    assert len(restored.stats()["segments"]) == len(s["segments"])
    check_exact(restored, ref, Q, "l2")


def test_a_shard_snapshot_file_carries_its_segments_graphs_and_who_wrote_it(fake_graph):
    """A shard's snapshot (master/snapshots.py, plain data with checksums) holds each sealed segment's
    graph as its own checksummed part and the shard's identity; it is refused for other partitions,
    and a flipped byte in a graph names that part."""
    from superduperdb.index import snapfile
    from superduperdb.master import snapshots
    from superduperdb.store.partitions import partition_of

    parts = list(range(0, 64, 2))
    ids = [i for i in range(3000) if partition_of(i) in parts][:600]
    X = np.random.default_rng(14).standard_normal((600, 4)).astype(np.float32)
    index = VectorIndex(measure="l2", exact_threshold=50, rebuild_tail=200, background=False)
    for k in range(0, 600, 200):  # three sealed segments, each with its graph
        index.add(ids[k:k + 200], X[k:k + 200])
    index.remove(ids[:5])
    ref = {i: X[j] for j, i in enumerate(ids) if j >= 5}
    row = {"name": "v", "uid": "u1"}
    who = {"shard": 1, "shards": 2, "epoch": 3, "version": 1, "owner": "actor-key"}
    data = snapshots.dumps(index, {i: f"fp{i}" for i in ids}, row, position={"epoch": "e", "seq": 7}, hashes={},
                           partitions=parts, shard=who)
    restored = snapshots.parse(data, row, parts)
    manifest = restored.manifest
    assert manifest["shard"] == who and manifest["partitions"] == parts and manifest["position"]["seq"] == 7
    graphs = [seg["graph"] for seg in manifest["segments"] if seg["graph"]]
    assert len(graphs) == len(index.stats()["segments"]) == 3, manifest["segments"]
    assert restored.fingerprints == {i: f"fp{i}" for i in ref}
    copy = VectorIndex(measure="l2", exact_threshold=50, rebuild_tail=200, background=False)
    assert copy.restore_state(restored.state) == len(ref)
    assert copy.attach_pending_graph() and copy.stats()["graph_size"] == index.stats()["graph_size"]
    check_exact(copy, ref, X[:4], "l2")
    with pytest.raises(snapfile.SnapshotCorrupt, match="other partitions") as info:
        snapshots.parse(data, row, list(range(1, 64, 2)))
    assert info.value.part == "manifest"
    bad = bytearray(data)
    bad[snapfile.read_header(data)[1][graphs[1]]["offset"] + 10] ^= 1
    with pytest.raises(snapfile.SnapshotCorrupt, match="fails its checksum") as info:
        snapshots.parse(bytes(bad), row, parts)
    assert info.value.part == graphs[1]


def test_search_info_says_plan_and_candidates(fake_graph):
    X = np.random.default_rng(13).standard_normal((600, 4)).astype(np.float32)
    index = VectorIndex(measure="dot", exact_threshold=100, rebuild_tail=10**9, background=False)
    index.add(list(range(600)), X)
    info: dict = {}
    index.search(X[0], 5, info=info)
    assert info == {"plan": "exact", "candidates": 600, "segments": 1, "retries": 0, "fetch": 0, "selectivity": None}
    assert index.rebuild(timeout=WAIT)
    index.search(X[0], 5, info=info)
    assert info["plan"] == "graph" and 0 < info["candidates"] <= 600
    index.search(X[0], 5, candidates=list(range(50)), info=info)
    assert info == {"plan": "exact", "candidates": 50, "segments": 2, "retries": 0, "fetch": 0,
                    "selectivity": 50 / 600}


@pytest.mark.slow
def test_process_builder_builds_in_another_process_and_survives_its_death(blob_data):
    """Graphs built by a child process answer as in-process ones; a killed child is replaced at the next build."""
    from superduperdb.index.builder import ProcessBuilder

    _, X, Q = blob_data
    builder = ProcessBuilder()
    index = VectorIndex(measure="cosine", exact_threshold=1000, rebuild_tail=10**9, builder=builder, random_state=0)
    ids = list(range(5000))
    index.add(ids, X[:5000])
    assert index.rebuild(timeout=WAIT) and index.stats()["graph_size"] == 5000
    first = builder.pid
    assert first is not None and first != os.getpid() and builder.builds == 1
    assert recall(index, ids, X[:5000], Q[:50], "cosine") >= 0.9
    os.kill(first, 9)
    index.add(list(range(5000, 6000)), X[5000:6000])
    assert index.rebuild(timeout=WAIT) and builder.pid not in (None, first)  # a new build process
    assert index.stats()["graph_size"] == 6000
    builder.close()
