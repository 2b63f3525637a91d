"""Search benchmark: the master's semantic index vs raw pynndescent and exact numpy.

For each size (default 10k and 100k clustered 384-d vectors, cosine), in a fresh
process (so that each size pays its own cold start, as a new cluster does):

1. **Cold start.** The vectors are stored first, as documents whose output
   ``_outputs.x.ident`` is written directly (``insert_many(..., refresh=False)``;
   the model ``ident`` is ``numpy.asarray``), with the semantic index created on
   the empty collection before. Then a new client starts a local cluster and
   asks ``find(like=...)``: the master is created, loads the vectors from the
   store and answers by exact search (*first answer*); a pynndescent graph is
   built in the background (*graph ready*: ``stats()`` shows ``graph_size > 0``).
   Sizes at or below ``master.exact_threshold`` are always searched exactly
   and get no graph.
2. **Queries** (held-out points of the same blobs, ``--queries`` of them, one at a
   time): p50/p99 and QPS through ``find(like={'x': q}, n=10)`` end to end,
   through the actor alone (``master.search(...)``), and the in-process
   baselines: pynndescent built directly on the same vectors (same
   ``n_neighbors`` and ``epsilon``) and exact numpy (``X @ q`` + argpartition).
   recall@10 of each approximate path against exact. The database part of
   ``find`` (fetching the 10 result documents) is timed separately.
   **Filtered**: ``find({'grp': g}, like={'x': q}, n=10)`` where ``grp`` (``i %
   100``) matches 1% of the documents and has an index made through the public
   ``coll.create_index('grp')``: p50 against the unfiltered ``find`` p50, and
   recall@10 against exact search among the documents the filter matches.
3. **Insert-to-searchable.** A steady stream of ``insert_one`` calls
   (``--insert-rate`` per second; the watcher computes the output, then the
   index job updates the master) while the main thread polls
   ``find(like={'_id': new_id}, n=1)`` until the new document comes back, with
   a deadline.
4. **Build times**: the first graph build (includes numba's JIT unless the
   warm-up finished first), a rebuild with a warm JIT, and the raw pynndescent
   build.

Store: the library's embedded store as installed (``mongomock://<name>``:
``superduperdb.store.embedded``, with its ``_id`` map, field indexes and linear
cursors; nothing is patched), with a local cluster of worker threads. Database
times are reported separately.

Examples
--------
    python bench/search.py                  # 10k and 100k (several minutes each on 2 cores)
    python bench/search.py --quick          # 2k and 10k, fewer queries
    python bench/search.py --sizes 100000 --queries 500
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util  # noqa: E402
import numpy as np  # noqa: E402

logger = logging.getLogger("bench.search")

TARGETS = {"recall_at_10": 0.99, "actor_p50_ms": 5.0, "find_p50_ms": 5.0, "find_p50_vs_actor_p50": 3.0,
           "filtered_find_p50_vs_find_p50": 3.0, "insert_to_searchable_p95_s": 2.0, "first_answer_s": 5.0}
GROUPS = 100  # grp = i % GROUPS: an equality filter on grp matches 1% of the documents
MODEL, KEY, INDEX = "ident", "x", "vectors"
PATH = f"_outputs.{KEY}.{MODEL}"


# ---------------------------------------------------------------------------------------
# data and baselines
# ---------------------------------------------------------------------------------------
def blobs(n: int, dim: int, clusters: int, intrinsic: int, noise: float, seed: int) -> np.ndarray:
    """``n`` points of ``clusters`` gaussian blobs in ``dim`` dimensions.

    Centres ~ N(0, I). With ``intrinsic > 0`` (the default, 16) each blob is a
    gaussian on a random ``intrinsic``-dimensional linear patch through its centre
    plus ``noise`` * N(0, I) (the same data as ``bench/index_core.py``): real
    embeddings have a low intrinsic dimension. ``intrinsic=0`` gives isotropic
    blobs (centre + N(0, I)), a near worst case for any graph index in 384-d.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    bases = (rng.standard_normal((clusters, intrinsic, dim)) / np.sqrt(intrinsic)).astype(np.float32) if intrinsic else None
    labels = rng.integers(clusters, size=n)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 20_000):
        sl = slice(start, min(n, start + 20_000))
        m = sl.stop - sl.start
        if bases is None:
            out[sl] = centres[labels[sl]] + rng.standard_normal((m, dim)).astype(np.float32)
        else:
            z = rng.standard_normal((m, intrinsic)).astype(np.float32)
            out[sl] = centres[labels[sl]] + np.einsum("ni,nid->nd", z, bases[labels[sl]])
            out[sl] += noise * rng.standard_normal((m, dim)).astype(np.float32)
    return out


def normalize(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=-1, keepdims=True)
    return (X / np.maximum(norms, 1e-12)).astype(np.float32)


def exact_topk(Xn: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact cosine top ``k`` rows of the unit-normalised ``Xn`` for a raw query ``q``."""
    s = Xn @ (q / max(float(np.linalg.norm(q)), 1e-12))
    idx = np.argpartition(-s, k)[:k]
    return idx[np.argsort(-s[idx])]


def recall(found: list, truth: np.ndarray, k: int) -> float:
    return len(set(int(x) for x in found[:k]) & set(int(x) for x in truth[:k])) / k


def timed_queries(fn, queries: np.ndarray) -> tuple[list[float], list, float]:
    """Run ``fn(q)`` for every query; per-query seconds, results, and total wall seconds."""
    times, results = [], []
    start = time.perf_counter()
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t0)
    return times, results, time.perf_counter() - start


def path_summary(times: list[float], wall: float, recalls: list[float] | None = None) -> dict:
    out = {**_util.summary_ms(times), "qps": len(times) / wall if wall else None}
    if recalls is not None:
        out["recall_at_10"] = float(np.mean(recalls))
    return out


# ---------------------------------------------------------------------------------------
# one size, in this process
# ---------------------------------------------------------------------------------------
def run_size(args: argparse.Namespace, n: int) -> dict:
    from superduperdb.index.env import configure_numba_env

    configure_numba_env()  # before numba is imported (pynndescent baseline, and the master)
    import superduperdb

    k, dim = args.k, args.dim
    clusters = args.clusters
    n_q, n_ins = args.queries, args.inserts
    X = blobs(n + n_q + n_ins, dim, clusters, args.intrinsic, args.noise, seed=n)
    data, queries, fresh = X[:n], X[n:n + n_q], X[n + n_q:]
    uri = f"mongomock://bench-search-{n}"
    config = {"cluster.n_workers": args.workers, "master.epsilon": args.epsilon,
              "master.warm_up": not args.no_warm_up, "cluster.timeout": args.call_timeout}
    if args.exact_threshold is not None:
        config["master.exact_threshold"] = args.exact_threshold
    out: dict[str, Any] = {"size": n, "dim": dim, "clusters": clusters, "intrinsic": args.intrinsic,
                           "noise": args.noise, "queries": n_q, "loadavg_at_start": list(os.getloadavg())}

    # -- store the vectors (no cluster, no master JIT in this process) ---------------------
    t0 = time.perf_counter()
    setup = superduperdb.connect(uri, cluster=None, config={**config, "master.warm_up": False})
    coll = setup.db["bench"]
    coll.drop()
    coll.create_model(MODEL, np.asarray, key=KEY).wait(60)          # watcher on x (nothing to backfill yet)
    coll.create_semantic_index(INDEX, models=[MODEL], keys=[KEY], measure="cosine").wait(60)
    coll.create_index("grp")  # the field the filtered queries use, indexed as a user would
    chunk = 10_000
    for start in range(0, n, chunk):
        rows = range(start, min(n, start + chunk))
        coll.insert_many([{"_id": i, "i": i, "cat": i % 10, "grp": i % GROUPS, "_outputs": {KEY: {MODEL: data[i]}}} for i in rows],
                         refresh=False)
    out["store_s"] = time.perf_counter() - t0
    setup.close()
    logger.info("stored %d vectors in %.1f s", n, out["store_s"])

    # -- cold start: cluster, first answer (exact), graph ready ------------------------------
    t0 = time.perf_counter()
    client = superduperdb.connect(uri, cluster="local", config=config)
    client.cluster.client  # noqa: B018 - start the local cluster now
    cluster_up = time.perf_counter() - t0
    _util.quiet_libraries()
    coll = client.db["bench"]
    first = list(coll.find(like={KEY: queries[0]}, n=k))
    first_answer = time.perf_counter() - t0
    indexes = coll._services.indexes
    master, row, target = indexes.master, indexes.get(None), coll._services.scope.target
    stats = master.stats()[0]
    graph_expected = stats["size"] > int(client.config.master.exact_threshold)
    graph_ready = jit_warm = None
    deadline = time.perf_counter() + args.graph_timeout
    while time.perf_counter() < deadline:  # wait for the graph (if any) and the JIT warm-up before timing queries
        stats = master.stats()[0]
        now = time.perf_counter() - t0
        if jit_warm is None and stats.get("warm"):
            jit_warm = now
        if graph_ready is None and stats["graph_size"] > 0:
            graph_ready = now
        if jit_warm is not None and (graph_ready is not None or not graph_expected) and not stats["building"]:
            break
        time.sleep(0.25)
    out["cold_start"] = {
        "cluster_up_s": cluster_up, "first_answer_s": first_answer, "first_answer_results": len(first),
        "master_load_s": stats["load_seconds"], "graph_expected": graph_expected,
        "graph_ready_s": graph_ready, "first_graph_build_s": stats.get("last_build_seconds"),
        "jit_warm_s": jit_warm,
        "note": None if graph_expected else "size <= master.exact_threshold: exact search by design, no graph",
    }
    logger.info("cold start: first answer %.2f s, graph ready %s", first_answer, graph_ready)

    # -- ground truth and the exact numpy baseline --------------------------------------------
    Xn = normalize(data)
    exact_times, truth, exact_wall = timed_queries(lambda q: exact_topk(Xn, q, k), queries)

    # -- the actor alone ------------------------------------------------------------------
    def actor(q):
        return master.search(target, row, q, k, None)[0]

    actor(queries[0])
    actor_times, actor_ids, actor_wall = timed_queries(actor, queries)
    actor_recalls = [recall(ids, t, k) for ids, t in zip(actor_ids, truth)]

    # -- find(like=...) end to end, and its database part ---------------------------------------
    def find(q):
        return [d["_id"] for d in coll.find(like={KEY: q}, n=k)]

    find(queries[0])
    find_times, find_ids, find_wall = timed_queries(find, queries)
    find_recalls = [recall(ids, t, k) for ids, t in zip(find_ids, truth)]
    raw = coll.raw
    fetch_times, _, _ = timed_queries(lambda ids: list(raw.find({"_id": {"$in": list(map(int, ids))}})),
                                      np.asarray(find_ids, dtype=np.int64))
    same = float(np.mean([a == b for a, b in zip(find_ids, actor_ids)]))

    # -- find(filter, like=...): a 1% equality filter on an indexed field ---------------------------
    groups = np.arange(n) % GROUPS
    members = {g: np.flatnonzero(groups == g) for g in range(GROUPS)}

    def filtered(j_q):
        j, q = int(j_q[0]), j_q[1]
        return [d["_id"] for d in coll.find({"grp": j % GROUPS}, like={KEY: q}, n=k)]

    pairs = list(enumerate(queries))
    filtered(pairs[0])
    filt_times, filt_ids, filt_wall = timed_queries(filtered, pairs)
    filt_recalls = []
    for (j, q), ids in zip(pairs, filt_ids):
        sub = members[j % GROUPS]
        truth_sub = sub[exact_topk(Xn[sub], q, min(k, len(sub) - 1))] if len(sub) > k else sub
        filt_recalls.append(recall(ids, truth_sub, min(k, len(truth_sub))))
    filt_match = timed_queries(lambda j: list(raw.find({"grp": int(j) % GROUPS}, {"_id": 1})), np.arange(n_q))[0]

    # -- raw pynndescent in this process (the JIT is warm by now) ---------------------------------
    from pynndescent import NNDescent

    t1 = time.perf_counter()
    nnd = NNDescent(Xn, metric="euclidean", n_neighbors=args.n_neighbors, random_state=0, low_memory=True)
    nnd.prepare()
    raw_build = time.perf_counter() - t1
    Qn = normalize(queries)

    def raw_ann(i):
        return nnd.query(Qn[int(i)][None, :], k=k, epsilon=args.epsilon)[0][0]

    raw_ann(0)
    raw_times, raw_ids, raw_wall = timed_queries(raw_ann, np.arange(n_q))
    raw_recalls = [recall(ids, t, k) for ids, t in zip(raw_ids, truth)]

    out["queries_result"] = {
        "find": {**path_summary(find_times, find_wall, find_recalls),
                 "db_fetch": _util.summary_ms(fetch_times),
                 "p50_ms_without_db_fetch": _util.pct(np.subtract(find_times, fetch_times) * 1000, 50),
                 "same_ids_as_actor": same},
        "find_filtered": {**path_summary(filt_times, filt_wall, filt_recalls),
                          "filter": f"grp == g (i % {GROUPS}: {len(members[0])} of {n} documents), indexed",
                          "db_filter_ids": _util.summary_ms(filt_match),
                          "recall_against": "exact search among the documents the filter matches"},
        "actor": path_summary(actor_times, actor_wall, actor_recalls),
        "raw_pynndescent": path_summary(raw_times, raw_wall, raw_recalls),
        "exact_numpy": path_summary(exact_times, exact_wall, [1.0] * len(exact_times)),
        "served_by": "graph + exact tail" if graph_expected and graph_ready else "exact",
    }
    q = out["queries_result"]
    q["ratios"] = {
        "actor_p50_vs_raw_pynndescent_p50": _util.ratio(q["actor"]["p50_ms"], q["raw_pynndescent"]["p50_ms"]),
        "actor_p50_vs_exact_numpy_p50": _util.ratio(q["actor"]["p50_ms"], q["exact_numpy"]["p50_ms"]),
        "find_p50_vs_actor_p50": _util.ratio(q["find"]["p50_ms"], q["actor"]["p50_ms"]),
        "filtered_find_p50_vs_find_p50": _util.ratio(q["find_filtered"]["p50_ms"], q["find"]["p50_ms"]),
        "actor_qps_vs_raw_pynndescent_qps": _util.ratio(q["actor"]["qps"], q["raw_pynndescent"]["qps"]),
        "actor_recall_minus_raw_recall": q["actor"]["recall_at_10"] - q["raw_pynndescent"]["recall_at_10"],
    }
    logger.info("queries: actor p50 %.2f ms recall %.3f; find p50 %.2f ms", q["actor"]["p50_ms"],
                q["actor"]["recall_at_10"], q["find"]["p50_ms"])

    # -- insert-to-searchable under a steady insert stream ------------------------------------------
    out["insert_to_searchable"] = insert_stream(coll, fresh, n, args)
    logger.info("insert-to-searchable: %s", out["insert_to_searchable"])

    # -- build times with a warm JIT --------------------------------------------------------------
    t1 = time.perf_counter()
    rebuilt = master.rebuild(target, row, wait=True, timeout=600.0)
    out["builds"] = {
        "first_graph_build_s": out["cold_start"]["first_graph_build_s"] if graph_expected else None,
        "warm_rebuild_s": rebuilt.get("last_build_seconds"), "warm_rebuild_call_s": time.perf_counter() - t1,
        "raw_pynndescent_build_s": raw_build,
    }
    out["builds"]["warm_rebuild_vs_raw_build"] = _util.ratio(out["builds"]["warm_rebuild_s"], raw_build)
    out["final_stats"] = master.stats()[0]
    out["loadavg_at_end"] = list(os.getloadavg())

    # -- database time, separately --------------------------------------------------------------
    t1 = time.perf_counter()
    docs = list(raw.find({PATH: {"$exists": True}}, {PATH: 1}))
    read_all = time.perf_counter() - t1
    probe, _, _ = timed_queries(lambda i: raw.find_one({"_id": int(i)}), np.arange(0, n, max(1, n // 50)))
    out["database"] = {
        "store": uri + " (the embedded store as installed)",
        "read_all_outputs_s": read_all, "documents": len(docs),
        "find_one_by_id": _util.summary_ms(probe), "fetch_10_results": out["queries_result"]["find"]["db_fetch"],
    }
    client.close()
    return out


# ---------------------------------------------------------------------------------------
# --selectivity: the filtered-search planner, filter fields against ordinary indexed fields
# ---------------------------------------------------------------------------------------
def selectivity_filters(n: int, seven: np.ndarray) -> list[tuple[str, Any, Any]]:
    """``(label, filter_of(j, prefix), members_of(j))`` for each selectivity; ``prefix`` picks the field set
    (``''``: the filter fields, ``'s'``: ordinary fields with a store index, same values)."""
    i = np.arange(n)
    b, g = i % 1000, i % 100
    return [
        ("90%", lambda j, p: {p + "b": {"$gte": 100}}, lambda j: np.flatnonzero(b >= 100)),
        ("50%", lambda j, p: {p + "b": {"$lt": 500}}, lambda j: np.flatnonzero(b < 500)),
        ("10%", lambda j, p: {p + "b": {"$lt": 100}}, lambda j: np.flatnonzero(b < 100)),
        ("1%", lambda j, p: {p + "g": j % 100}, lambda j: np.flatnonzero(g == j % 100)),
        ("0.1%", lambda j, p: {p + "b": j % 1000}, lambda j: np.flatnonzero(b == j % 1000)),
        ("7 documents", lambda j, p: {p + "seven": True}, lambda j: seven),
    ]


def run_selectivity(args: argparse.Namespace, n: int) -> dict:
    """recall@10, k results and p50 (ratio to the unfiltered find of the same run) per selectivity, for a filter
    on filter fields (answered in the master) and on ordinary fields with a store index (ids from the store)."""
    from superduperdb.index.env import configure_numba_env

    configure_numba_env()
    import superduperdb

    k, dim, n_q = args.k, args.dim, args.queries
    X = blobs(n + n_q, dim, args.clusters, args.intrinsic, args.noise, seed=n)
    data, queries = X[:n], X[n:]
    seven = np.sort(np.random.default_rng(7).choice(n, 7, replace=False))
    uri = f"mongomock://bench-selectivity-{n}"
    threshold = args.exact_threshold if args.exact_threshold is not None else min(20_000, n // 4)
    # No sweeps: the documents hold outputs without inputs, which the reconciler would rightly remove.
    config = {"cluster.n_workers": args.workers, "master.epsilon": args.epsilon, "master.warm_up": True,
              "cluster.timeout": args.call_timeout, "master.exact_threshold": threshold, "reconcile.interval": 0}
    out: dict[str, Any] = {"size": n, "dim": dim, "queries": n_q, "exact_threshold": threshold,
                           "loadavg_at_start": list(os.getloadavg())}
    setup = superduperdb.connect(uri, cluster=None, config={**config, "master.warm_up": False})
    coll = setup.db["bench"]
    coll.drop()
    coll.create_model(MODEL, np.asarray, key=KEY).wait(60)
    coll.create_semantic_index(INDEX, models=[MODEL], keys=[KEY], measure="cosine",
                               filter_fields=["b", "g", "seven"]).wait(60)
    for field in ("sb", "sg", "sseven"):
        coll.create_index(field)  # the same values in ordinary fields, indexed as a user would
    marked = set(seven.tolist())
    for start in range(0, n, 10_000):
        coll.insert_many([{"_id": i, "i": i, "b": i % 1000, "g": i % 100, "sb": i % 1000, "sg": i % 100,
                           **({"seven": True, "sseven": True} if i in marked else {}),
                           "_outputs": {KEY: {MODEL: data[i]}}} for i in range(start, min(n, start + 10_000))],
                         refresh=False)
    setup.close()
    client = superduperdb.connect(uri, cluster="local", config=config)
    _util.quiet_libraries()
    coll = client.db["bench"]
    list(coll.find(like={KEY: queries[0]}, n=k))
    master = coll._services.indexes.master
    deadline = time.perf_counter() + args.graph_timeout
    while time.perf_counter() < deadline:  # the graph built and the JIT warm before timing
        stats = master.stats()[0]
        if stats["graph_size"] > 0 and stats.get("warm") and not stats["building"]:
            break
        time.sleep(0.5)
    out["graph_size"] = master.stats()[0]["graph_size"]
    Xn = normalize(data)
    exact_times, truth, _ = timed_queries(lambda q: exact_topk(Xn, q, k), queries)
    find_times, find_ids, _ = timed_queries(lambda q: [d["_id"] for d in coll.find(like={KEY: q}, n=k)], queries)
    base = _util.pct(np.asarray(find_times) * 1000, 50)
    out["unfiltered"] = {"find_p50_ms": base, "exact_numpy_p50_ms": _util.pct(np.asarray(exact_times) * 1000, 50),
                         "recall_at_10": float(np.mean([recall(f, t, k) for f, t in zip(find_ids, truth)]))}
    rows = []
    for label, filter_of, members_of in selectivity_filters(n, seven):
        for path, prefix in (("filter field", ""), ("store index", "s")):
            times, recalls, full, plans, in_index = [], [], 0, {}, 0
            for j, q in enumerate(queries):
                f = filter_of(j, prefix)
                t0 = time.perf_counter()
                cursor = coll.find(f, like={KEY: q}, n=k)
                ids = [d["_id"] for d in cursor]
                times.append(time.perf_counter() - t0)
                plan = cursor.explain()
                plans[plan["plan"]] = plans.get(plan["plan"], 0) + 1
                in_index += bool(plan["filter_in_index"])
                sub_rows = members_of(j)
                want = min(k, len(sub_rows))
                best = sub_rows[exact_topk(Xn[sub_rows], q, want)] if len(sub_rows) > want else sub_rows
                recalls.append(recall(ids, best, want))
                full += len(ids) == want
            p50 = _util.pct(np.asarray(times) * 1000, 50)
            rows.append({"selectivity": label, "path": path, "matching": int(len(members_of(0))),
                         "recall_at_10": float(np.mean(recalls)), "k_results": full / len(queries),
                         "p50_ms": p50, "p95_ms": _util.pct(np.asarray(times) * 1000, 95),
                         "p50_vs_unfiltered": _util.ratio(p50, base), "plans": plans,
                         "filter_in_index": in_index / len(queries)})
            logger.info("%s %s: %s", label, path, rows[-1])
    out["table"] = rows
    out["loadavg_at_end"] = list(os.getloadavg())
    client.close()
    return out


def print_selectivity(r: dict, path: Path) -> None:
    f = _util.fmt
    for n, s in r["sizes"].items():
        if "error" in s:
            print(f"\n== {int(n):,}: failed: {s['error']} ==")
            continue
        u = s["unfiltered"]
        print(f"\n== {int(n):,} x {s['dim']}, graph {s['graph_size']:,}: unfiltered find p50 "
              f"{f(u['find_p50_ms'], ' ms', 2)} (recall@10 {f(u['recall_at_10'], '', 3)}), exact numpy p50 "
              f"{f(u['exact_numpy_p50_ms'], ' ms', 2)} ==")
        print(f"  {'selectivity':<13}{'path':<14}{'matching':>9}{'recall@10':>10}{'k results':>10}{'p50 ms':>9}"
              f"{'x unfilt.':>10}  plans")
        for row in s["table"]:
            print(f"  {row['selectivity']:<13}{row['path']:<14}{row['matching']:>9}{f(row['recall_at_10'], '', 3):>10}"
                  f"{f(row['k_results'], '', 2):>10}{f(row['p50_ms'], '', 1):>9}{f(row['p50_vs_unfiltered'], '', 2):>10}"
                  f"  {row['plans']}")
    print(f"wrote {path}")


def insert_stream(coll: Any, fresh: np.ndarray, first_id: int, args: argparse.Namespace) -> dict:
    """Insert ``fresh`` at a steady rate; poll ``find(like={'_id': id}, n=1)`` until each comes back."""
    from superduperdb.errors import SemanticIndexError

    interval = 1.0 / args.insert_rate
    pending: dict[int, float] = {}
    lock = threading.Lock()
    latencies: dict[int, float] = {}
    jobs: list = []
    errors: list[str] = []

    def produce() -> None:
        start = time.perf_counter()
        for j, v in enumerate(fresh):
            due = start + j * interval
            time.sleep(max(0.0, due - time.perf_counter()))
            _id = first_id + j
            t0 = time.perf_counter()
            with lock:
                pending[_id] = t0
            try:
                jobs.append(coll.insert_one({"_id": _id, "i": _id, "cat": _id % 10, "grp": _id % GROUPS,
                                             KEY: v}).jobs)
            except Exception as exc:  # noqa: BLE001 - reported in the result
                errors.append(repr(exc))

    producer = threading.Thread(target=produce, name="bench-insert-stream", daemon=True)
    t_start = time.perf_counter()
    producer.start()
    deadline_total = t_start + len(fresh) * interval + args.deadline
    while time.perf_counter() < deadline_total:
        with lock:
            todo = list(pending.items())
        if not todo and not producer.is_alive():
            break
        for _id, t0 in todo:
            try:
                docs = list(coll.find(like={"_id": _id}, n=1))
            except SemanticIndexError:
                docs = []
            except Exception as exc:  # noqa: BLE001 - e.g. a master call that timed out: reported, not fatal
                errors.append(f"find(like={{'_id': {_id}}}): {exc!r}")
                docs = []
            now = time.perf_counter()
            if docs and docs[0]["_id"] == _id:
                latencies[_id] = now - t0
                with lock:
                    pending.pop(_id, None)
            elif now - t0 > args.deadline:
                with lock:
                    pending.pop(_id, None)
        time.sleep(0.005)
    producer.join(timeout=5)
    stream_s = time.perf_counter() - t_start
    model_run, index_run, queued = [], [], []
    for group in jobs:
        try:
            group.wait(args.deadline)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
        for job in group:
            rec = job.record()
            if rec.get("finished_at") and rec.get("started_at"):
                run = (rec["finished_at"] - rec["started_at"]).total_seconds()
                (model_run if rec["kind"] == "model" else index_run).append(run)
                queued.append((rec["started_at"] - rec["created_at"]).total_seconds())
    lat = list(latencies.values())
    return {
        "inserts": len(fresh), "rate_per_s": args.insert_rate, "found": len(lat), "missed": len(fresh) - len(lat),
        "deadline_s": args.deadline, "stream_s": stream_s, **{f"{k}": v for k, v in _util.summary_ms(lat).items()},
        "model_job_run": _util.summary_ms(model_run), "index_job_run": _util.summary_ms(index_run),
        "job_queued": _util.summary_ms(queued), "errors": errors[:5],
    }


# ---------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See bench/README.md.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=None, help="comma-separated index sizes (default 10000,100000)")
    p.add_argument("--quick", action="store_true", help="small run: sizes 2000,10000, 100 queries, 20 inserts")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=100, help="gaussian blobs (default 100)")
    p.add_argument("--intrinsic", type=int, default=16,
                   help="dimension of each blob's gaussian patch (default 16; 0: isotropic blobs)")
    p.add_argument("--noise", type=float, default=0.05, help="isotropic noise added to the patches")
    p.add_argument("--queries", type=int, default=None, help="held-out queries per path (default 300)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--inserts", type=int, default=None, help="inserts in the stream (default 100)")
    p.add_argument("--insert-rate", type=float, default=5.0, help="inserts per second in the stream")
    p.add_argument("--deadline", type=float, default=30.0, help="seconds before an insert counts as missed")
    p.add_argument("--epsilon", type=float, default=0.2, help="master.epsilon, also used for raw pynndescent")
    p.add_argument("--n-neighbors", type=int, default=30, help="raw pynndescent degree (the index uses 30)")
    p.add_argument("--exact-threshold", type=int, default=None,
                   help="master.exact_threshold (default: the library's, 20000)")
    p.add_argument("--no-warm-up", action="store_true", help="master.warm_up: false")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--call-timeout", type=float, default=600.0,
                   help="cluster.timeout, which also bounds each call to the master (library default 30 s; the "
                        "first call loads the index from the store, ~30 s for 100k vectors on mongomock)")
    p.add_argument("--graph-timeout", type=float, default=900.0, help="seconds to wait for the first graph")
    p.add_argument("--in-process", action="store_true",
                   help="run all sizes in this process (later sizes then start with a warm JIT)")
    p.add_argument("--selectivity", action="store_true",
                   help="the filtered-search table: recall@10, k results and p50 per selectivity, filter fields "
                        "against ordinary indexed fields (sizes default 20000)")
    p.add_argument("--name", default=None, help="result name: bench/results/<name>.json (default search[-quick])")
    p.add_argument("--child-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = "20000" if args.selectivity else "2000,10000" if args.quick else "10000,100000"
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.queries is None:
        args.queries = 100 if args.quick else 300
    if args.inserts is None:
        args.inserts = 20 if args.quick else 100
    return args


def child_argv(argv: list[str], size: int, out: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *argv, "--child-size", str(size), "--child-out", out]


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    _util.setup_logging(args.verbose)
    if args.child_size is not None:
        result = (run_selectivity if args.selectivity else run_size)(args, args.child_size)
        Path(args.child_out).write_text(json.dumps(result, default=_util._json_default))
        return None
    started = time.perf_counter()
    env = _util.environment()
    print(f"search benchmark: sizes {args.size_list}, dim {args.dim}, {args.queries} queries, "
          f"{args.inserts} inserts at {args.insert_rate}/s, epsilon {args.epsilon}, "
          f"store: the embedded store as installed, {os.cpu_count()} CPUs", flush=True)
    sizes: dict[str, Any] = {}
    for n in args.size_list:
        t0 = time.perf_counter()
        if args.in_process:
            sizes[str(n)] = (run_selectivity if args.selectivity else run_size)(args, n)
        else:
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                out = tmp.name
            proc = subprocess.run(child_argv(argv, n, out), check=False, stderr=subprocess.PIPE, text=True)
            sys.stderr.write(proc.stderr)
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or [""]
                sizes[str(n)] = {"size": n, "error": f"exit {proc.returncode}: {tail[0]}"}
                print(f"  size {n}: FAILED ({sizes[str(n)]['error']})", flush=True)
            else:
                sizes[str(n)] = json.loads(Path(out).read_text())
            os.unlink(out)
        print(f"  size {n}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    result = {
        "benchmark": "search",
        "config": {k: v for k, v in vars(args).items() if not k.startswith("child")},
        "environment": {**_util.environment(), "loadavg_at_start": env.get("loadavg_at_start")},
        "targets": TARGETS,
        "notes": [
            "Vectors were stored directly as _outputs.x.ident with insert_many(..., refresh=False) "
            "(the model ident is numpy.asarray), after creating the semantic index on the empty collection; "
            "the inserts of the stream go through the watcher and the index job.",
            "Each size runs in a fresh process: cold-start times include the master's pynndescent JIT "
            "(persistent numba cache), as for a new cluster.",
            "Database: the library's embedded store as installed (superduperdb.store.embedded, nothing "
            "patched); database times are reported under 'database' and find's 'db_fetch'.",
            "All paths run one query at a time from one thread; QPS = queries / wall time.",
        ],
        "sizes": sizes,
        "total_s": time.perf_counter() - started,
    }
    name = args.name or ("search-selectivity" if args.selectivity else "search-quick" if args.quick else "search")
    path = _util.write_result(name, result)
    (print_selectivity if args.selectivity else print_summary)(result, path)
    return result


def print_summary(r: dict, path: Path) -> None:
    f = _util.fmt
    for n, s in r["sizes"].items():
        if "error" in s:
            print(f"\n== {int(n):,}: failed: {s['error']} ==")
            continue
        q, c, ins, b, db = s["queries_result"], s["cold_start"], s["insert_to_searchable"], s["builds"], s["database"]
        print(f"\n== {int(n):,} x {s['dim']} ({s['clusters']} blobs, intrinsic dim {s['intrinsic']}), "
              f"served by {q['served_by']} ==")
        print(f"  {'path':<18}{'p50 ms':>9}{'p99 ms':>9}{'QPS':>10}{'recall@10':>11}")
        for name in ("find", "find_filtered", "actor", "raw_pynndescent", "exact_numpy"):
            p = q[name]
            print(f"  {name:<18}{f(p['p50_ms'], '', 2):>9}{f(p['p99_ms'], '', 2):>9}{f(p['qps'], '', 0):>10}"
                  f"{f(p.get('recall_at_10'), '', 3):>11}")
        rt = q["ratios"]
        print(f"  actor/raw pynndescent p50 {f(rt['actor_p50_vs_raw_pynndescent_p50'], '', 2)}x, "
              f"actor/exact numpy p50 {f(rt['actor_p50_vs_exact_numpy_p50'], '', 2)}x, "
              f"find/actor p50 {f(rt['find_p50_vs_actor_p50'], '', 2)}x, "
              f"filtered find/find p50 {f(rt['filtered_find_p50_vs_find_p50'], '', 2)}x; find's db fetch p50 "
              f"{f(q['find']['db_fetch'].get('p50_ms'), ' ms', 2)}, find without it p50 "
              f"{f(q['find']['p50_ms_without_db_fetch'], ' ms', 2)}")
        print(f"  cold start: cluster up {f(c['cluster_up_s'], ' s', 2)}, first answer {f(c['first_answer_s'], ' s', 2)} "
              f"(master load {f(c['master_load_s'], ' s', 2)}), graph ready "
              + (f"{f(c['graph_ready_s'], ' s', 1)} (first build {f(c['first_graph_build_s'], ' s', 1)})"
                 if c["graph_expected"] else "n/a (exact by design)") + f", JIT warm {f(c['jit_warm_s'], ' s', 1)}")
        print(f"  builds: warm rebuild {f(b['warm_rebuild_s'], ' s', 2)}, raw pynndescent {f(b['raw_pynndescent_build_s'], ' s', 2)}"
              f" (ratio {f(b['warm_rebuild_vs_raw_build'], '', 2)})")
        print(f"  insert-to-searchable ({ins['inserts']} at {ins['rate_per_s']:g}/s): p50 {f(ins.get('p50_ms'), ' ms')}, "
              f"p95 {f(ins.get('p95_ms'), ' ms')}, missed {ins['missed']}; model job p50 "
              f"{f(ins['model_job_run'].get('p50_ms'), ' ms')}, index job p50 {f(ins['index_job_run'].get('p50_ms'), ' ms')}")
        print(f"  database: read all outputs {f(db['read_all_outputs_s'], ' s', 2)}, find_one by _id p50 "
              f"{f(db['find_one_by_id'].get('p50_ms'), ' ms', 2)} ({db['store']})")
    print("\ntargets: " + ", ".join(f"{k} {v}" for k, v in r["targets"].items()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
