"""Shards benchmark: one index over S shard workers against the same index on one master worker, same run.

Three parts, each compared with a baseline measured in the same run:

1. **scale** (worker processes): a cluster started with the Dask command lines
   (``ProcessCluster``: a scheduler, one job worker and one master worker per shard,
   each its own process) against a MongoDB-wire server (``--uri``, else CongoDB started
   here), first with ``master.shards = 1`` (the baseline), then with ``--shards``
   (default 4). For each: **ingest** (documents with their vectors stored, then the
   index loaded by every shard: time to the first answer), **graph ready** (every
   shard's segments have their graphs), **peak memory** of each master worker process
   (its resident set plus its graph-build process, sampled every 0.2 s), ``find(like=)``
   p50/p95 end to end and the fan-out alone (``search_many`` on the master handle:
   what ``find`` does before reading the documents), **recall@10** against exact numpy
   search, and recall of a filtered query (a field matching 10%).
2. **kill** (the sharded cluster of part 1): ``--loop`` queries while one shard's worker
   process is killed after the first 10%: every answer is checked against exact search
   (complete), or against exact search over the other shards' documents when it says
   ``partial`` (half the queries pass ``allow_partial=True``); the time from the kill to
   the first complete answer. Nothing may be wrong (an answer that says it is complete while
   a shard is missing from it) or silently short (fewer than ``n`` results); recall@10 of the
   answers against exact search is reported beside (graph search is approximate).
3. **stream** (the embedded default, one in-process shard): inserts stream in at
   ``--rate`` per second into an index of ``--stream-n`` vectors while queries run;
   insert -> searchable p50/p95 and ``find(like=)`` p50/p95, with graphs built in a
   separate process (``master.build_process: true``, the default) and, as the baseline,
   in a thread of the index's process (``false``).

The store is the one thing these machines lack for the issue's 1M x 384 run: the only
MongoDB-wire server that installs here (CongoDB) scans every document on every query and
holds everything in one Node process, so the scale part runs at ``--n`` (default 20,000)
with ``master.exact_threshold`` lowered (``--exact-threshold``, default 1000) so that
every shard builds graphs at that size; docs/scaling.md extrapolates from the per-shard
costs measured here.

Examples
--------
    python bench/shards.py                          # 20k x 384, 4 shards, 1000-query kill loop, 100k stream
    python bench/shards.py --n 5000 --loop 200 --stream-n 20000 --name shards-quick
    python bench/shards.py --parts stream --stream-n 100000
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import _util  # noqa: E402
import numpy as np  # noqa: E402
from search import blobs, exact_topk, normalize  # noqa: E402

logger = logging.getLogger("bench.shards")
TARGETS = {"recall_delta_max": 0.005, "memory_per_shard": "<= single / shards + 200 MB", "kill_wrong": 0,
           "complete_again_s": 5.0, "stream_insert_to_searchable_p95_ms": 300.0, "stream_find_p95_over_p50": 3.0}
KEY, MODEL, INDEX = "x", "ident", "v"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeakMemory:
    """Peak resident memory of processes (each with its children), sampled in a thread."""

    def __init__(self, pids: dict[str, int], interval: float = 0.2) -> None:
        import psutil

        self._procs = {k: psutil.Process(p) for k, p in pids.items()}
        self.peak = {k: 0 for k in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        import psutil

        while not self._stop.wait(interval):
            for k, proc in self._procs.items():
                try:
                    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                except psutil.Error:
                    continue
                self.peak[k] = max(self.peak[k], rss)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        return {k: v / 2**20 for k, v in self.peak.items()}


def store(uri: str, db: str, data: np.ndarray) -> tuple[Any, float]:
    """The collection with the model, the index and ``data`` stored as documents with outputs (no jobs)."""
    import superduperdb

    # No snapshot from this set-up client (its in-process master would save one of the empty index), and no
    # sweeps: the documents hold outputs without inputs, which the reconciler would rightly remove.
    client = superduperdb.connect(uri, cluster=None, config={"master.warm_up": False, "master.snapshot_interval": 0,
                                                             "reconcile.interval": 0})
    coll = client[db].docs
    coll.drop()
    coll.create_model(MODEL, np.asarray, key=KEY).wait(60)
    coll.create_semantic_index(INDEX, models=[MODEL], keys=[KEY]).wait(60)
    start = time.perf_counter()
    for s in range(0, len(data), 2000):
        coll.insert_many([{"_id": i, "i": i, "grp": i % 10, "_outputs": {KEY: {MODEL: data[i]}}}
                          for i in range(s, min(len(data), s + 2000))], refresh=False)
    seconds = time.perf_counter() - start
    client.close()
    return coll, seconds


def scale(args: argparse.Namespace, uri: str, shards: int, data: np.ndarray, queries: np.ndarray,
          truth: list, kill: bool) -> dict:
    """Part 1 (and 2 when ``kill``) on a fresh process cluster with ``shards`` master workers."""
    import superduperdb
    from superduperdb.cluster.local import ProcessCluster
    from superduperdb.cluster.spec import ClusterSpec

    db = f"bench_shards_{shards}"
    _, store_s = store(uri, db, data)
    spec = ClusterSpec(port=free_port(), n_workers=1, shards=shards, dashboard_address=None)
    env = {"PYTHONPATH": os.pathsep.join([str(HERE.parent / "tests"), os.environ.get("PYTHONPATH", "")])}
    out: dict[str, Any] = {"shards": shards, "store_s": store_s}
    config = {"master.shards": shards, "master.exact_threshold": 10**9 if args.no_graphs else args.exact_threshold,
              "master.warm_up": not args.no_graphs,
              "cluster.timeout": 600, "reconcile.interval": 0, "master.lease_ttl": 5, "master.shard_wait": 120}
    with ProcessCluster(spec, log_dir=Path(args.logs) / f"shards-{shards}", env=env) as cluster:
        client = superduperdb.connect(uri, cluster=cluster.address, config=config)
        dask_client = client.cluster.client
        pids = dask_client.run(os.getpid)
        workers = {a: w for a, w in dask_client.scheduler_info(n_workers=-1)["workers"].items()
                   if (w.get("resources") or {}).get("MASTER")}
        memory = PeakMemory({a: pids[a] for a in workers})
        coll = client[db].docs
        start = time.perf_counter()
        first = list(coll.find(like={KEY: queries[0]}, n=args.k))
        out["ingest_s"] = store_s + time.perf_counter() - start  # stored, then loaded by every shard
        out["load_s"] = time.perf_counter() - start
        indexes = coll._services.indexes
        master, row, target = indexes.master, indexes.get(None), coll._services.scope.target
        # Below master.rebuild_tail (10,000 per shard) vectors arrive in no sealed segment on their own:
        # build every shard's graph now (in its build process), as the graph-ready time.
        if not args.no_graphs:
            master.rebuild(target, row, wait=True, timeout=args.graph_timeout)
        deadline = time.perf_counter() + args.graph_timeout
        while time.perf_counter() < deadline:
            stats = master.stats()
            if stats and all((args.no_graphs or s["graph_size"] >= 0.9 * s["size"] and s.get("warm"))
                             and not s["building"] for s in stats):
                break
            time.sleep(0.5)
        out["graph_ready_s"] = time.perf_counter() - start
        out["per_shard"] = [{k: s.get(k) for k in ("shard", "size", "graph_size", "segments", "builds",
                                                   "last_build_seconds", "worker", "epoch")} for s in master.stats()]
        find_t, fan_t, rec, rec_fan = [], [], [], []
        for q, t in zip(queries, truth):
            t0 = time.perf_counter()
            got = [d["i"] for d in coll.find(like={KEY: q}, n=args.k)]
            find_t.append(time.perf_counter() - t0)
            rec.append(len(set(got) & set(t.tolist())) / args.k)
            t0 = time.perf_counter()
            ids, _ = master.search(target, row, q, args.k)
            fan_t.append(time.perf_counter() - t0)
            rec_fan.append(len(set(ids) & set(t.tolist())) / args.k)
        out["find"] = {**_util.summary_ms(find_t), "recall_at_10": float(np.mean(rec))}
        out["fanout"] = {**_util.summary_ms(fan_t), "recall_at_10": float(np.mean(rec_fan))}
        Xn = normalize(data)
        grp = np.flatnonzero(np.arange(len(data)) % 10 == 3)
        frec = []
        for q in queries[: args.filtered]:
            want = grp[exact_topk(Xn[grp], q, args.k)]
            got = [d["i"] for d in coll.find({"grp": 3}, like={KEY: q}, n=args.k)]
            frec.append(len(set(got) & set(want.tolist())) / args.k)
        out["filtered_recall_at_10"] = float(np.mean(frec))
        out["first_answer_results"] = len(first)
        if kill:
            out["kill"] = kill_loop(args, coll, data, queries, dask_client)
        out["peak_memory_mb"] = memory.stop()
        client.close()
    return out


def kill_loop(args: argparse.Namespace, coll: Any, data: np.ndarray, queries: np.ndarray, dask_client: Any) -> dict:
    """Part 2: queries while a shard's worker is killed; every answer checked."""
    import testmodels

    from superduperdb.store import shards as store_shards
    from superduperdb.store.partitions import partition_of

    table = store_shards.partition_table(store_shards.shards_table(coll.database._raw, coll.name),
                                         coll._services.scope.config.master.shards)["table"]
    owner = np.array([table[partition_of(i)] for i in range(len(data))])
    Xn = normalize(data)
    victim_shard = 1
    counts = {"complete": 0, "partial": 0, "wrong": 0, "short": 0, "errors": 0}
    shards = coll._services.scope.config.master.shards
    recalls: list[float] = []
    killed_at = complete_again = None
    lat = []
    for j in range(args.loop):
        if j == args.loop // 10:
            plan = coll.find(like={KEY: queries[0]}, n=1).explain()
            victim = [s["worker"] for s in plan["shards"] if s["shard"] == victim_shard][0]
            dask_client.run(testmodels.exit_process, workers=[victim], wait=False)
            killed_at = time.perf_counter()
        q = queries[j % len(queries)]
        allow = j % 2 == 0
        t0 = time.perf_counter()
        try:
            cursor = coll.find(like={KEY: q}, n=args.k, allow_partial=allow)
            got = [d["i"] for d in cursor]
            info = cursor.explain()
        except Exception as exc:  # noqa: BLE001 - counted (a ShardUnavailableError past master.shard_wait)
            counts["errors"] += 1
            logger.warning("query %d failed: %r", j, exc)
            continue
        lat.append(time.perf_counter() - t0)
        if info["partial"]:
            among = np.flatnonzero(~np.isin(owner, info["missing"]))
            want = among[exact_topk(Xn[among], q, args.k)].tolist()
            counts["partial"] += 1
        else:
            want = exact_topk(Xn, q, args.k).tolist()
            counts["complete"] += 1
            if killed_at is not None and complete_again is None:
                complete_again = time.perf_counter() - killed_at
        answered = {e["shard"] for e in info["shards"] if not e.get("missing")}
        if len(got) < len(want):
            counts["short"] += 1
        elif not info["partial"] and len(answered) < shards:  # complete by its word, yet a shard is missing
            counts["wrong"] += 1
        recalls.append(len(set(got) & set(want)) / args.k)  # graph search: ANN recall, against exact
    return {"queries": args.loop, **counts, "recall_at_10": float(np.mean(recalls)) if recalls else None,
            "complete_again_s": complete_again, **_util.summary_ms(lat)}


def stream(args: argparse.Namespace, build_process: bool) -> dict:
    """Part 3 in this process: the embedded default, ``--stream-n`` vectors, inserts streaming in."""
    from search import insert_stream

    import superduperdb

    n = args.stream_n
    X = blobs(n + args.inserts + 200, args.dim, 100, 16, 0.05, seed=7)
    uri = f"mongomock://bench-shards-stream-{int(build_process)}"
    config = {"master.build_process": build_process, "cluster.timeout": 600, "reconcile.interval": 0}
    setup = superduperdb.connect(uri, cluster=None, config={"master.warm_up": False, "master.snapshot_interval": 0,
                                                            "reconcile.interval": 0})
    coll = setup.db["bench"]
    coll.drop()
    coll.create_model(MODEL, np.asarray, key=KEY).wait(60)
    coll.create_semantic_index(INDEX, models=[MODEL], keys=[KEY]).wait(60)
    coll.create_index("grp")
    for s in range(0, n, 10_000):
        coll.insert_many([{"_id": i, "i": i, "grp": i % 100, "_outputs": {KEY: {MODEL: X[i]}}}
                          for i in range(s, min(n, s + 10_000))], refresh=False)
    setup.close()
    client = superduperdb.connect(uri, cluster="local", config=config)
    coll = client.db["bench"]
    start = time.perf_counter()
    list(coll.find(like={KEY: X[0]}, n=10))
    out: dict[str, Any] = {"build_process": build_process, "n": n, "load_s": time.perf_counter() - start}
    indexes = coll._services.indexes
    master = indexes.master
    deadline = time.perf_counter() + args.graph_timeout
    graphs = n > client.config.master.exact_threshold  # smaller: exact search by design, no graph
    while time.perf_counter() < deadline:  # warm and with graphs: the steady state the stream runs in
        s = master.stats()[0]
        if (not graphs or s["graph_size"] >= 0.9 * s["size"]) and not s["building"] and s.get("warm"):
            break
        time.sleep(0.5)
    out["graph_ready_s"] = time.perf_counter() - start
    queries = X[n + args.inserts:]
    find_t: list[float] = []
    stop = threading.Event()

    def query_loop() -> None:
        j = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            list(coll.find(like={KEY: queries[j % len(queries)]}, n=10))
            find_t.append(time.perf_counter() - t0)
            j += 1
            time.sleep(0.02)

    reader = threading.Thread(target=query_loop, daemon=True)
    reader.start()
    args.insert_rate, args.deadline = args.rate, 30.0
    out["insert_to_searchable"] = insert_stream(coll, X[n:n + args.inserts], n, args)
    stop.set()
    reader.join(30)
    out["find_during_stream"] = _util.summary_ms(find_t)
    s = master.stats()[0]
    out["after"] = {k: s.get(k) for k in ("size", "graph_size", "tail", "segments", "builds", "last_build_seconds")}
    client.close()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="vectors in the scale part (default 20000)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--filtered", type=int, default=30, help="filtered queries (each scans the store)")
    p.add_argument("--loop", type=int, default=1000, help="queries in the kill loop")
    p.add_argument("--exact-threshold", type=int, default=1000, help="master.exact_threshold in the scale part")
    p.add_argument("--graph-timeout", type=float, default=1800.0)
    p.add_argument("--no-graphs", action="store_true",
                   help="scale part: exact search in every shard (no graph, no JIT): what a loaded 2-core machine "
                        "can run in minutes")
    p.add_argument("--stream-n", type=int, default=100_000)
    p.add_argument("--inserts", type=int, default=200)
    p.add_argument("--rate", type=float, default=5.0, help="inserts per second in the stream")
    p.add_argument("--uri", default=None, help="a MongoDB(-wire) server (default: CongoDB started here)")
    p.add_argument("--parts", default="scale,stream", help="which parts: scale (with kill), stream")
    p.add_argument("--logs", default="/tmp/superduperdb-bench-shards", help="cluster logs")
    p.add_argument("--name", default="shards")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    _util.setup_logging(args.verbose)
    from superduperdb.index.env import configure_numba_env

    configure_numba_env()
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"args": vars(args), "targets": TARGETS, "environment": _util.environment()}
    if "scale" in parts:
        X = blobs(args.n + args.queries, args.dim, 100, 16, 0.05, seed=args.n)
        data, queries = X[: args.n], X[args.n:]
        Xn = normalize(data)
        truth = [exact_topk(Xn, q, args.k) for q in queries]
        with contextlib.ExitStack() as stack:
            uri = args.uri
            if uri is None:
                from congodb_server import CongoDB

                uri = stack.enter_context(CongoDB()).uri
            base = scale(args, uri, 1, data, queries, truth, kill=False)
            sharded = scale(args, uri, args.shards, data, queries, truth, kill=True)
        single_peak = max(base["peak_memory_mb"].values())
        result["scale"] = {"baseline_1_shard": base, f"sharded_{args.shards}": sharded, "compare": {
            "recall_delta": sharded["find"]["recall_at_10"] - base["find"]["recall_at_10"],
            "filtered_recall_delta": sharded["filtered_recall_at_10"] - base["filtered_recall_at_10"],
            "find_p50_ratio": _util.ratio(sharded["find"]["p50_ms"], base["find"]["p50_ms"]),
            "fanout_p50_ratio": _util.ratio(sharded["fanout"]["p50_ms"], base["fanout"]["p50_ms"]),
            "ingest_ratio": _util.ratio(sharded["ingest_s"], base["ingest_s"]),
            "graph_ready_ratio": _util.ratio(sharded["graph_ready_s"], base["graph_ready_s"]),
            "single_peak_mb": single_peak, "shard_peak_mb": max(sharded["peak_memory_mb"].values()),
            "memory_target_mb": single_peak / args.shards + 200,
            "memory_met": max(sharded["peak_memory_mb"].values()) <= single_peak / args.shards + 200}}
    if "stream" in parts:
        thread = stream(args, build_process=False)
        process = stream(args, build_process=True)
        p = process["insert_to_searchable"]
        f = process["find_during_stream"]
        result["stream"] = {"baseline_build_in_thread": thread, "build_process": process, "compare": {
            "insert_to_searchable_p95_ms": p.get("p95_ms"), "find_p50_ms": f.get("p50_ms"),
            "find_p95_ms": f.get("p95_ms"), "find_p95_over_p50": _util.ratio(f.get("p95_ms"), f.get("p50_ms")),
            "baseline_find_p95_over_p50": _util.ratio(thread["find_during_stream"].get("p95_ms"),
                                                      thread["find_during_stream"].get("p50_ms")),
            "baseline_insert_to_searchable_p95_ms": thread["insert_to_searchable"].get("p95_ms")}}
    path = _util.write_result(args.name, result)
    print(f"wrote {path}")  # noqa: T201 - a script's output
    for part in ("scale", "stream"):
        if part in result:
            print(part, result[part]["compare"])  # noqa: T201
    return result


if __name__ == "__main__":
    main()
