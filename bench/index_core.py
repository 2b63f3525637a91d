"""Benchmark of superduperdb.index.VectorIndex against exact numpy search, same run.

For each size: graph build time, single-query latency (p50/p99) of the ANN path
and of the exact numpy baseline, recall@n of ANN vs exact (for several query
epsilons), latency with a full exact tail, filtered searches, and query latency
while a background rebuild runs. Writes ``bench/results/index_core.json`` and
prints it.

BLAS is limited to ``--blas-threads`` (default 1, as in Dask workers, whose
nanny sets ``OPENBLAS_NUM_THREADS=1``): a multi-threaded matrix-vector product
for one query slows ~10x when the cores are busy. Timings are wall-clock on a
shared machine: read them with the load averages recorded in ``env``.

Data: ``n_clusters`` clusters in ``dim`` dimensions, each cluster a random
``intrinsic``-dimensional linear patch around its centre plus small isotropic
noise (embeddings have low intrinsic dimension; uniform random data is a worst
case that no graph index handles well).

Usage::

    python bench/index_core.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from superduperdb.index import configure_numba_env  # noqa: E402

configure_numba_env()

import numpy as np  # noqa: E402

from superduperdb.index import VectorIndex, exact_search, warm_up  # noqa: E402
from superduperdb.index.measures import sqnorms  # noqa: E402


def clustered(n: int, dim: int, n_clusters: int, intrinsic: int, seed: int, sample_seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)  # the clusters
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    bases = (rng.standard_normal((n_clusters, intrinsic, dim)) / np.sqrt(intrinsic)).astype(np.float32)
    rng = np.random.default_rng(sample_seed)  # the points
    lab = rng.integers(0, n_clusters, n)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 20_000):
        sl = slice(start, min(n, start + 20_000))
        z = rng.standard_normal((sl.stop - start, intrinsic)).astype(np.float32)
        out[sl] = centers[lab[sl]] + np.einsum("ni,nid->nd", z, bases[lab[sl]])
        out[sl] += 0.05 * rng.standard_normal((sl.stop - start, dim)).astype(np.float32)
    return out


def pct(times: list[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def timed(fn, items) -> tuple[list, list[float]]:
    out, times = [], []
    for item in items:
        t = time.perf_counter()
        out.append(fn(item))
        times.append(time.perf_counter() - t)
    return out, times


def run_size(size: int, args, data: np.ndarray, queries: np.ndarray) -> dict:
    X, extra = data[:size], data[size : size + args.tail]
    ids = list(range(size))
    res: dict = {"size": size}
    sq = sqnorms(X)  # baseline with precomputed norms, like the index
    truth, exact_t = timed(lambda q: exact_search(q, X, args.n, args.measure, sq)[0][0], queries)
    res["exact_numpy"] = pct(exact_t)

    index = VectorIndex(
        measure=args.measure, exact_threshold=args.exact_threshold, rebuild_tail=10**12,
        n_neighbors=args.n_neighbors, leaf_budget=args.leaf_budget, epsilon=args.epsilon, random_state=0,
    )  # fmt: skip
    index.add(ids, X)
    index.exact_threshold = size  # exact path of the index itself, for comparison
    _, t = timed(lambda q: index.search(q, args.n), queries)
    res["exact_index_path"] = pct(t)
    t0 = time.perf_counter()
    index.rebuild(timeout=3600)
    res["build_seconds"] = round(time.perf_counter() - t0, 3)
    index.exact_threshold = 0  # force the graph path (sizes <= exact_threshold answer exactly)

    res["ann"] = {}
    for eps in args.epsilons:
        got, t = timed(lambda q, e=eps: index.search(q, args.n, epsilon=e)[0], queries)
        rec = np.mean([len(set(g) & set(w.tolist())) / args.n for g, w in zip(got, truth)])
        res["ann"][f"epsilon={eps}"] = {**pct(t), f"recall@{args.n}": round(float(rec), 4)}

    index.exact_threshold = args.exact_threshold
    rng = np.random.default_rng(1)
    for label, frac in (("filtered_5pct", 0.05), ("filtered_50pct", 0.5)):
        cands = rng.choice(size, int(size * frac), replace=False).tolist()
        path = "exact" if min(len(cands), size) <= args.exact_threshold else "ann+filter"
        _, t = timed(lambda q, c=cands: index.search(q, args.n, candidates=c), queries[:50])
        res[label] = {**pct(t), "candidates": len(cands), "path": path}

    index.exact_threshold = 0
    index.add(list(range(size, size + len(extra))), extra)  # a tail of args.tail rows
    truth_all = [exact_search(q, np.concatenate([X, extra]), args.n, args.measure)[0][0] for q in queries]
    got, t = timed(lambda q: index.search(q, args.n)[0], queries)
    rec = np.mean([len(set(g) & set(w.tolist())) / args.n for g, w in zip(got, truth_all)])
    res["ann_with_tail"] = {**pct(t), "tail": len(extra), f"recall@{args.n}": round(float(rec), 4)}

    index.rebuild(wait=False)
    during, deadline = [], time.monotonic() + 600
    while index.stats()["building"] and time.monotonic() < deadline:
        q = queries[len(during) % len(queries)]
        t = time.perf_counter()
        index.search(q, args.n)
        during.append(time.perf_counter() - t)
    index.wait_until_built(600)
    res["during_background_rebuild"] = {**pct(during or [0.0]), "queries": len(during)}
    res["background_rebuild_seconds"] = index.stats()["last_build_seconds"]
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--intrinsic", type=int, default=16)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--measure", default="cosine")
    p.add_argument("--n-neighbors", type=int, default=30)
    p.add_argument("--leaf-budget", type=int, default=8)
    p.add_argument("--epsilon", type=float, default=0.2)
    p.add_argument("--epsilons", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    p.add_argument("--exact-threshold", type=int, default=20_000)
    p.add_argument("--tail", type=int, default=10_000, help="rows added after the build")
    p.add_argument(
        "--blas-threads", type=int, default=1,
        help="BLAS threads (Dask workers default to 1; 0 leaves the library default)",
    )  # fmt: skip
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "index_core.json"))
    args = p.parse_args(argv)

    import numba
    import pynndescent
    from threadpoolctl import threadpool_info, threadpool_limits

    if args.blas_threads > 0:
        threadpool_limits(args.blas_threads)  # process-wide, for the whole run

    report: dict = {
        "benchmark": "index_core",
        "env": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "pynndescent": pynndescent.__version__,
            "numba_threading_layer_env": os.environ.get("NUMBA_THREADING_LAYER", "default"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "blas": [(i["internal_api"], i["num_threads"]) for i in threadpool_info()],
            "loadavg_at_start": os.getloadavg(),
        },
        "params": {k: v for k, v in vars(args).items() if k != "out"},
    }  # fmt: skip
    report["warm_up_seconds"] = round(warm_up(args.n_neighbors, args.leaf_budget), 2)
    total = max(args.sizes) + args.tail
    data = clustered(total, args.dim, args.clusters, args.intrinsic, seed=0, sample_seed=1)
    queries = clustered(args.queries, args.dim, args.clusters, args.intrinsic, seed=0, sample_seed=2)
    report["results"] = [run_size(s, args, data, queries) for s in args.sizes]
    report["env"]["loadavg_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
