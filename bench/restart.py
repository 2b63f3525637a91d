"""Restart benchmark: a new master's first answer, with and without an index snapshot.

For each size (default 100k; synthetic clustered 384-d vectors, the same blobs
as ``bench/search.py``, cosine), in this process, on the store as installed
(the embedded default unless ``--uri``):

1. The vectors are stored as documents with their output ``_outputs.x.ident``
   and a fingerprint ``_fingerprints.x.ident`` (``insert_many(..., refresh=False)``;
   the model ``ident`` is ``numpy.asarray``), the semantic index created before
   on the empty collection.
2. **Without a snapshot** (``master.snapshot_interval: 0``): a new client starts
   a local cluster and asks ``find(like=...)``: the master reads and decodes
   every vector (*first answer*). ``--graph``: it then builds its graph.
3. That master saves a snapshot (``master.snapshot(...)``, what the background
   refresh does), and the client closes (cluster and master gone).
4. Writes made after the snapshot, behind the master's back: ``--changes``
   documents get a new vector and fingerprint, as many are deleted and as many
   inserted (``refresh=False``).
5. **With the snapshot**: a new client, a new cluster, a new master:
   ``find(like=...)`` loads the snapshot, catches up (reads the id and
   fingerprint of every document, re-reads the changed ones) and answers.
   The answer is checked against exact search over the present documents.

Both restarts are repeated (``--repeats``), alternating. Reported: cluster up,
first answer after the cluster is up (the master's part), total, and the
master's own load/catch-up times.

Examples
--------
    python bench/restart.py                         # 100k x 384
    python bench/restart.py --sizes 10000,20000     # smaller
    python bench/restart.py --sizes 100000 --graph  # the snapshot holds a pynndescent graph (minutes to build)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util  # noqa: E402
import numpy as np  # noqa: E402
from search import blobs, exact_topk, normalize  # noqa: E402

logger = logging.getLogger("bench.restart")
MODEL, KEY, INDEX = "ident", "x", "vectors"
TARGETS = {"first_answer_with_snapshot_s": 1.0}
# The setup and writer clients run jobs inline: no reconciler either (the in-process master they share
# outlives them, and it would "repair" away outputs whose documents have no input field).
QUIET = {"master.warm_up": False, "master.snapshot_interval": 0, "reconcile.interval": 0}


def store(uri: str, X: np.ndarray) -> float:
    import superduperdb

    t0 = time.perf_counter()
    setup = superduperdb.connect(uri, cluster=None, config=QUIET)
    coll = setup.db["bench"]
    coll.drop()
    coll.create_model(MODEL, np.asarray, key=KEY).wait(60)
    coll.create_semantic_index(INDEX, models=[MODEL], keys=[KEY], measure="cosine").wait(60)
    for start in range(0, len(X), 10_000):
        rows = range(start, min(len(X), start + 10_000))
        coll.insert_many([{"_id": i, "i": i, "_outputs": {KEY: {MODEL: X[i]}},
                           "_fingerprints": {KEY: {MODEL: f"v1:{i}"}}} for i in rows], refresh=False)
    setup.close()
    return time.perf_counter() - t0


def restart(uri: str, config: dict, query: np.ndarray, k: int) -> tuple[Any, Any, dict]:
    """A new client, cluster and master; ``find(like=query)``; timings and the master's stats."""
    import superduperdb

    t0 = time.perf_counter()
    client = superduperdb.connect(uri, cluster="local", config=config)
    client.cluster.client  # noqa: B018 - start the local cluster now
    up = time.perf_counter()
    _util.quiet_libraries()
    coll = client.db["bench"]
    found = [d["_id"] for d in coll.find(like={KEY: query}, n=k)]
    done = time.perf_counter()
    stats = coll._services.indexes.master.stats()[0]
    out = {"cluster_up_s": up - t0, "first_answer_s": done - up, "total_s": done - t0,
           "master_load_s": stats["load_seconds"], "source": stats["source"], "catch_up": stats["catch_up"],
           "size": stats["size"], "found": found}
    return client, coll, out


def run_size(args: argparse.Namespace, n: int) -> dict:
    from superduperdb.index.env import configure_numba_env

    configure_numba_env()
    k, c = args.k, args.changes
    X = blobs(n + c + 1, args.dim, args.clusters, 16, 0.05, seed=n)
    data, fresh, query = X[:n], X[n:n + c], X[n + c]
    uri = args.uri or f"mongomock://bench-restart-{n}"
    out: dict[str, Any] = {"size": n, "dim": args.dim, "changes": c, "store_s": store(uri, data)}
    # No reconciler: these documents have outputs but no input field, which it would "repair" away.
    config = {"cluster.n_workers": args.workers, "cluster.timeout": 900.0, "reconcile.interval": 0}
    no_snap = {**config, "master.snapshot_interval": 0}
    with_snap = {**config, "master.snapshot_interval": 3600.0}  # no background refresh during the runs

    # -- the first master: from the documents; then its snapshot ------------------------------
    client, coll, first = restart(uri, no_snap, query, k)
    indexes = coll._services.indexes
    master, row, target = indexes.master, indexes.get(None), coll._services.scope.target
    if args.graph:
        t0 = time.perf_counter()
        master.rebuild(target, row, wait=True, timeout=1800.0)
        out["graph_build_s"] = time.perf_counter() - t0
    written = master.snapshot(target, row)
    out["snapshot"] = {k_: written[k_] for k_ in ("vectors", "bytes", "seconds")}
    out["graph_in_snapshot"] = master.stats()[0]["graph_size"] > 0
    client.close()

    # -- writes behind the master's back ----------------------------------------------------------
    import superduperdb

    writer = superduperdb.connect(uri, cluster=None, config=QUIET)
    wcoll = writer.db["bench"]
    current = {i: data[i] for i in range(n)}
    rng = np.random.default_rng(1)
    changed = rng.choice(n, 2 * c, replace=False)
    for j, i in enumerate(changed[:c].tolist()):
        wcoll.update_one({"_id": i}, {"$set": {f"_outputs.{KEY}.{MODEL}": fresh[j][::-1].copy(),
                                               f"_fingerprints.{KEY}.{MODEL}": f"v2:{i}"}}, refresh=False)
        current[i] = fresh[j][::-1].copy()
    deleted = changed[c:].tolist()
    if deleted:
        wcoll.delete_many({"_id": {"$in": deleted}})
    for i in deleted:
        current.pop(i)
    if c:
        wcoll.insert_many([{"_id": n + j, "i": n + j, "_outputs": {KEY: {MODEL: fresh[j]}},
                            "_fingerprints": {KEY: {MODEL: f"v1:{n + j}"}}} for j in range(c)], refresh=False)
    current.update({n + j: fresh[j] for j in range(c)})
    writer.close()
    ids = np.array(list(current))
    truth = ids[exact_topk(normalize(np.stack(list(current.values()))), query, k)].tolist()

    # -- restarts, alternating ------------------------------------------------------------------------
    runs: dict[str, list] = {"without_snapshot": [first], "with_snapshot": []}
    order = [("with_snapshot", with_snap), ("without_snapshot", no_snap)] * args.repeats
    for name, cfg in order[:-1]:  # the first master was a restart without a snapshot already
        client, _, result = restart(uri, cfg, query, k)
        client.close()
        result["recall_at_10"] = len(set(result["found"]) & set(truth)) / k
        runs[name].append(result)
        logger.info("%s: %s", name, {k_: v for k_, v in result.items() if k_ != "found"})
    for name, results in runs.items():
        for result in results:
            result.pop("found", None)
        out[name] = {"runs": results,
                     "best_first_answer_s": min(r["first_answer_s"] for r in results),
                     "best_total_s": min(r["total_s"] for r in results)}
    out["speedup_first_answer"] = _util.ratio(out["without_snapshot"]["best_first_answer_s"],
                                              out["with_snapshot"]["best_first_answer_s"])
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--changes", type=int, default=100, help="documents updated, deleted and inserted after the snapshot")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--graph", action="store_true", help="build the graph before the snapshot (it is then in it)")
    p.add_argument("--uri", default=None, help="a MongoDB URI (default: the embedded store, mongomock://...)")
    p.add_argument("--name", default="restart")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    _util.setup_logging(args.verbose)
    started = time.perf_counter()
    sizes = {}
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        print(f"restart benchmark: {n:,} x {args.dim}, {args.changes} changes after the snapshot", flush=True)
        sizes[str(n)] = run_size(args, n)
    result = {"benchmark": "restart", "config": vars(args), "environment": _util.environment(), "targets": TARGETS,
              "notes": ["Synthetic clustered vectors (bench/search.py blobs); outputs and fingerprints stored "
                        "directly with refresh=False; the store as installed, no patches.",
                        "first_answer_s: from the started cluster to the first find(like=) answer (a new master "
                        "loads the index); total_s adds the cluster start."],
              "sizes": sizes, "total_s": time.perf_counter() - started}
    path = _util.write_result(args.name, result)
    f = _util.fmt
    for n, s in sizes.items():
        w, wo = s["with_snapshot"], s["without_snapshot"]
        print(f"\n== {int(n):,} x {s['dim']} (snapshot {s['snapshot']['bytes'] / 1e6:.0f} MB, graph in it: "
              f"{s['graph_in_snapshot']}, written in {f(s['snapshot']['seconds'], ' s', 2)}) ==")
        print(f"  first answer without snapshot: best {f(wo['best_first_answer_s'], ' s', 2)} "
              f"(total with cluster start {f(wo['best_total_s'], ' s', 2)})")
        print(f"  first answer with snapshot:    best {f(w['best_first_answer_s'], ' s', 2)} "
              f"(total {f(w['best_total_s'], ' s', 2)}); catch-up {w['runs'][0]['catch_up']}, "
              f"recall@10 {w['runs'][0]['recall_at_10']:.2f}")
        print(f"  speedup {f(s['speedup_first_answer'], 'x', 1)}")
    print(f"\ntargets: {TARGETS}\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
