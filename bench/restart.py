"""Restart benchmark: a new master's first answer and catch-up, in time proportional to what changed.

For each size (default 100k; synthetic clustered 384-d vectors, the blobs of ``bench/search.py``,
cosine), on the store as installed (the embedded default unless ``--uri``):

1. Documents ``{i, _outputs.i.ident: vector, _fingerprints.i.ident}`` are inserted through the
   library with ``refresh=False`` (so they carry their write position); their fingerprints are
   those of their input ``i``, so the reconciler finds every output current.
2. **Baseline, without a snapshot** (``master.snapshot_interval: 0``): a new client, cluster and
   master; the first ``find(like=)`` reads every document. Then a snapshot is saved.
3. **With the snapshot**, nothing changed: first answer and catch-up, from the **local copy** and
   from **GridFS alone** (``master.snapshot_dir: ''``).
4. ``--changes`` documents changed through the library (half updated, a quarter deleted, a quarter
   inserted) while no master runs: first answer and the catch-up's own time.
5. A **reconcile pass** over the unchanged collection (after a first, full one): documents read, time.
6. **Other programs' writes** (plain pymongo on the raw collection: copies inserted, outputs
   updated, documents deleted) while no master runs: after the restart and the digest check,
   every document with an output is in the index and nothing else (missing, ghosts counted).
7. **Damaged snapshots** (rotted vectors, inconsistent parts, truncated): every query after the
   restart compared with exact search.

``--kills N`` (a server store, ``--uri``: worker processes) kills the master's worker N times while
another thread queries without pause, and times each first answer after a kill, compared with
exact search.

Examples
--------
    python bench/restart.py                                   # 100k x 384, embedded store
    python bench/restart.py --sizes 1000000 --changes 1000    # 1M
    python bench/restart.py --sizes 2000 --uri mongodb://127.0.0.1:PORT/ --kills 20
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
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
MODEL, KEY, INDEX = "ident", "i", "vectors"
PATH, FP_PATH = f"_outputs.{KEY}.{MODEL}", f"_fingerprints.{KEY}.{MODEL}"
TARGETS = {"first_answer_with_snapshot_s@100k": 1.0, "first_answer_local_copy_s@1M": 2.0,
           "catch_up_1000_changes_s@1M": 0.3, "catch_up_0_changes_s@1M": 0.05,
           "reconcile_unchanged_s@1M": 0.5, "reconcile_unchanged_documents_read": 0,
           "plain_writes_missing": 0, "plain_writes_ghosts": 0, "kill_first_answer_s": 5.0}
# Jobs inline, no reconciler, a short position lag (a snapshot right after a full load has a safe position).
QUIET = {"master.warm_up": False, "master.snapshot_interval": 0, "reconcile.interval": 0, "master.position_lag": 1.0}


def fingerprints(coll: Any, ids: list) -> list[str]:
    from superduperdb.store.layout import fingerprint

    version = coll._services.scope.metadata.get("models", MODEL).get("version")
    return [fingerprint(version, i) for i in ids]


def doc(coll: Any, i: int, x: np.ndarray, fp: str) -> dict:
    return {"_id": i, KEY: i, "_outputs": {KEY: {MODEL: x}}, "_fingerprints": {KEY: {MODEL: fp}}}


def store(uri: str, X: np.ndarray) -> float:
    import superduperdb

    t0 = time.perf_counter()
    setup = superduperdb.connect(uri, cluster=None, config=QUIET)
    coll = setup.db["bench"]
    coll.drop()
    coll.create_model(MODEL, np.asarray, key=KEY).wait(60)
    coll.create_semantic_index(INDEX, models=[MODEL], keys=[KEY], measure="cosine").wait(60)
    for start in range(0, len(X), 10_000):
        ids = list(range(start, min(len(X), start + 10_000)))
        coll.insert_many([doc(coll, i, X[i], fp) for i, fp in zip(ids, fingerprints(coll, ids))], refresh=False)
    setup.close()
    return time.perf_counter() - t0


def restart(uri: str, config: dict, query: np.ndarray, k: int, processes: bool = False) -> tuple[Any, Any, dict]:
    """A new client, cluster and master; ``find(like=query)``; timings and the master's stats."""
    import superduperdb

    t0 = time.perf_counter()
    client = superduperdb.connect(uri, cluster="local", config={**config, "cluster.processes": processes})
    client.cluster.client  # noqa: B018 - start the local cluster now
    up = time.perf_counter()
    _util.quiet_libraries()
    coll = client.db["bench"]
    found = [d["_id"] for d in coll.find(like={KEY: query}, n=k)]
    done = time.perf_counter()
    stats = [s for s in coll._services.indexes.master.stats() if s["index"] == INDEX][0]
    catch_up = stats["catch_up"] or {}
    out = {"cluster_up_s": up - t0, "first_answer_s": done - up, "total_s": done - t0,
           "master_load_s": stats["load_seconds"], "source": stats["source"],
           "snapshot_from": catch_up.get("snapshot_from"), "snapshot_read_s": catch_up.get("read_s"),
           "catch_up_mode": catch_up.get("mode"), "catch_up_s": catch_up.get("seconds"),
           "catch_up": {k_: catch_up.get(k_) for k_ in ("read", "tombstones", "upserted", "removed", "as_of")},
           "rejected": stats["snapshot_rejected"], "size": stats["size"], "found": found}
    return client, coll, out


def truth_of(current: dict, queries: np.ndarray, k: int) -> list[list]:
    ids = np.array(list(current))
    Xn = normalize(np.stack(list(current.values())))
    return [ids[exact_topk(Xn, q, k)].tolist() for q in queries]


def matches(coll: Any, queries: np.ndarray, truth: list[list], k: int) -> int:
    return sum([d["_id"] for d in coll.find(like={KEY: q}, n=k)] == t for q, t in zip(queries, truth))


def wait_digests(coll: Any, timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = [s for s in coll._services.indexes.master.stats() if s["index"] == INDEX][0]
        found = (stats["catch_up"] or {}).get("digests")
        if found:
            return found
        time.sleep(0.1)  # polling the master's report, with a deadline
    raise TimeoutError("the digests were not checked in time")


def run_size(args: argparse.Namespace, n: int) -> dict:
    import superduperdb
    from superduperdb.index import snapfile
    from superduperdb.index.env import configure_numba_env
    from superduperdb.master.snapshots import snapshot_name

    configure_numba_env()
    k, c = args.k, args.changes
    X = blobs(n + c + 1 + args.queries, args.dim, args.clusters, 16, 0.05, seed=n)
    data, fresh, queries = X[:n], X[n:n + c], X[n + c:]
    query = queries[0]
    uri = args.uri or f"mongomock://bench-restart-{n}"
    out: dict[str, Any] = {"size": n, "dim": args.dim, "changes": c, "store_s": store(uri, data)}
    base = {"cluster.n_workers": args.workers, "cluster.timeout": 900.0, "reconcile.interval": 0,
            "master.position_lag": 1.0, "master.warm_up": False}
    no_snap = {**base, "master.snapshot_interval": 0}
    with_snap = {**base, "master.snapshot_interval": 3600.0}  # no background refresh during the runs
    gridfs_only = {**with_snap, "master.snapshot_dir": ""}
    current = {i: data[i] for i in range(n)}

    def measure(name: str, config: dict, keep: bool = False) -> tuple[Any, Any, dict]:
        client, coll, result = restart(uri, config, query, k)
        result["recall_at_k"] = len(set(result.pop("found")) & set(truth_of(current, query[None], k)[0])) / k
        logger.info("%s: %s", name, result)
        out.setdefault("runs", {}).setdefault(name, []).append(result)
        if not keep:
            client.close()
        return client, coll, result

    # -- baseline: no snapshot; then the snapshot -------------------------------------------------------
    client, coll, _ = measure("without_snapshot", no_snap, keep=True)
    indexes = coll._services.indexes
    master, row, target = indexes.master, indexes.get(None), coll._services.scope.target
    if args.graph:
        t0 = time.perf_counter()
        master.rebuild(target, row, wait=True, timeout=3600.0)
        out["graph_build_s"] = time.perf_counter() - t0
    client.close()
    client, coll, _ = measure("with_snapshot_first_from_documents", with_snap, keep=True)  # it saves one
    written = coll._services.indexes.master.snapshot(target, row)
    out["snapshot"] = {k_: written.get(k_) for k_ in ("vectors", "bytes", "seconds")}
    client.close()

    # -- restarts with the snapshot, nothing changed --------------------------------------------------------
    for _ in range(args.repeats):
        measure("snapshot_local_copy", with_snap)
        measure("snapshot_gridfs_only", gridfs_only)
        measure("without_snapshot", no_snap)

    # -- changes through the library while no master runs -------------------------------------------------
    if c:
        writer = superduperdb.connect(uri, cluster=None, config=QUIET)
        wcoll = writer.db["bench"]
        rng = np.random.default_rng(1)
        picked = rng.choice(n, c, replace=False).tolist()
        updated, deleted = picked[: c // 2], picked[c // 2: c // 2 + c // 4]
        inserted = list(range(n, n + c - len(updated) - len(deleted)))
        for j, i in enumerate(updated):
            wcoll.update_one({"_id": i}, {"$set": {PATH: fresh[j]}}, refresh=False)
            current[i] = fresh[j]
        wcoll.delete_many({"_id": {"$in": deleted}})
        for i in deleted:
            current.pop(i)
        fps = fingerprints(wcoll, inserted)
        wcoll.insert_many([doc(wcoll, i, fresh[-1 - j], fp) for j, (i, fp) in enumerate(zip(inserted, fps))],
                          refresh=False)
        current.update({i: fresh[-1 - j] for j, i in enumerate(inserted)})
        writer.close()
        client, coll, result = measure("snapshot_after_changes", with_snap, keep=True)
        out["changes_detail"] = {"updated": len(updated), "deleted": len(deleted), "inserted": len(inserted)}
        # a fresh snapshot, so the runs below start from an up-to-date one
        coll._services.indexes.master.snapshot(target, row)
        client.close()
        measure("snapshot_local_copy_after_resnapshot", with_snap)

    # -- a reconcile pass over the unchanged collection ----------------------------------------------------
    client, coll, _ = restart(uri, with_snap, query, k)
    t0 = time.perf_counter()
    first = coll.reconcile(wait=True, timeout=3600).result()
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = coll.reconcile(wait=True, timeout=3600).result()
    out["reconcile"] = {"first_pass_s": first_s, "first_pass": first, "unchanged_pass_s": time.perf_counter() - t0,
                        "unchanged_pass": again}
    master = coll._services.indexes.master
    master.snapshot(target, row)
    client.close()

    # -- other programs' writes while no master runs -------------------------------------------------------
    writer = superduperdb.connect(uri, cluster=None, config=QUIET)
    raw = writer.db["bench"].raw
    m = args.plain
    ids = list(current)
    rng = np.random.default_rng(2)
    sources = rng.choice(len(ids), 3 * m, replace=False).tolist()
    types = writer.db["bench"]._types
    copies = [raw.find_one({"_id": ids[s]}) for s in sources[:m]]
    for j, (s, copy) in enumerate(zip(sources[:m], copies)):
        moved = (current[ids[s]] + rng.normal(scale=0.05, size=args.dim)).astype(np.float32)
        copy.update(_id=10 * n + j, i=10 * n + j)  # its stale bookkeeping names another partition
        copy["_outputs"][KEY][MODEL] = types.encode({"v": moved})["v"]
        current[10 * n + j] = moved
    raw.insert_many(copies)
    for s in sources[m:2 * m]:
        current[ids[s]] = -current[ids[s]]
        raw.update_one({"_id": ids[s]}, {"$set": {PATH: types.encode({"v": current[ids[s]]})["v"],
                                                  FP_PATH: f"other-program:{ids[s]}"}})
    gone = [ids[s] for s in sources[2 * m:]]
    raw.delete_many({"_id": {"$in": gone}})
    for i in gone:
        current.pop(i)
    writer.close()
    client, coll, result = restart(uri, with_snap, query, k)
    t0 = time.perf_counter()
    digests = wait_digests(coll)
    master = coll._services.indexes.master
    held = master.vectors_of(target, row, list(current))
    missing = sum(v is None for v in held)
    size = [s for s in master.stats() if s["index"] == INDEX][0]["size"]
    truth = truth_of(current, queries, k)
    out["plain_writes"] = {"inserted": m, "updated": m, "deleted": m, "first_answer_s": result["first_answer_s"],
                           "digest_check": digests, "digest_wait_s": time.perf_counter() - t0,
                           "missing": missing, "ghosts": size - (len(current) - missing),
                           "queries": len(queries), "exact_matches": matches(coll, queries, truth, k)}
    master.snapshot(target, row)
    client.close()

    # -- damaged snapshots ---------------------------------------------------------------------------------
    if args.damage:
        probe = superduperdb.connect(uri, cluster=None, config=QUIET)
        artifacts = probe.db["bench"]._services.scope.artifacts
        good, _ = artifacts.get_named(snapshot_name(row))
        probe.close()
        out["damaged"] = {}
        for name, damage in (("rotted", _rot), ("inconsistent", _inconsistent), ("truncated", _truncated)):
            probe = superduperdb.connect(uri, cluster=None, config=QUIET)
            probe.db["bench"]._services.scope.artifacts.put_named(snapshot_name(row), damage(good, snapfile))
            probe.close()
            client, coll, result = restart(uri, with_snap, query, k)
            out["damaged"][name] = {"rejected": result["rejected"], "source": result["source"],
                                    "first_answer_s": result["first_answer_s"], "queries": len(queries),
                                    "exact_matches": matches(coll, queries, truth, k)}
            client.close()
    return out


def _rot(data: bytes, snapfile: Any) -> bytes:
    out = bytearray(data)
    entry = snapfile.read_header(data)[1]["vectors"]
    dim = entry["shape"][1]
    for r in range(25):
        out[entry["offset"] + (r * 997 % entry["shape"][0]) * dim * 4 + 3] ^= 0x20  # an exponent bit
    return bytes(out)


def _inconsistent(data: bytes, snapfile: Any) -> bytes:
    snap = snapfile.read(data)
    parts = {k: (np.array(v) if hasattr(v, "dtype") else (bytes(v) if isinstance(v, memoryview) else v))
             for k, v in snap.parts.items()}
    parts["ids"] = parts["ids"][:-3]
    return snapfile.write(snap.manifest, parts)


def _truncated(data: bytes, snapfile: Any) -> bytes:
    return data[: len(data) * 2 // 3]


async def exit_process() -> None:
    """Run on the master's worker (``dask_client.run``): the process dies at once."""
    os._exit(1)


def run_kills(args: argparse.Namespace) -> dict:
    """Kill the master's worker ``args.kills`` times under query load; time each first answer."""
    import superduperdb

    n = int(args.sizes.split(",")[0])
    X = blobs(n + args.queries, args.dim, args.clusters, 16, 0.05, seed=7)
    data, queries = X[:n], X[n:]
    uri = args.uri
    store(uri, data)
    truth = truth_of({i: data[i] for i in range(n)}, queries, args.k)
    import dask

    # Dask's LocalCluster closes a worker's nanny for good when the worker is still down this long after it
    # left (default 15 s); a loop that kills every second or two would end with no workers at all.
    dask.config.set({"distributed.deploy.lost-worker-timeout": "1 hour"})
    client = superduperdb.connect(uri, cluster="local", config={
        "cluster.n_workers": 2, "cluster.processes": True, "reconcile.interval": 0, "master.warm_up": False,
        "master.position_lag": 1.0, "cluster.timeout": 120.0})
    coll = client.db["bench"]
    master = coll._services.indexes.master
    coll.find_one(like={KEY: queries[0]})
    master.snapshot(coll._services.scope.target, coll._services.indexes.get(None))
    stop = threading.Event()
    load = {"queries": 0, "errors": 0}

    def hammer() -> None:  # another user of the cluster, querying without pause
        other = superduperdb.connect(uri, cluster=client.cluster.client.scheduler.address,
                                     config={"reconcile.interval": 0, "master.warm_up": False, "cluster.timeout": 120.0})
        while not stop.is_set():
            try:
                other.db["bench"].find_one(like={KEY: queries[load["queries"] % len(queries)]})
                load["queries"] += 1
            except Exception:  # noqa: BLE001 - counted: the load goes on across kills
                load["errors"] += 1
        other.close()

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    firsts, exact = [], 0
    for kill in range(args.kills):
        address = master.worker()
        client.cluster.client.run(exit_process, workers=[address], wait=False)
        t0 = time.perf_counter()
        q = kill % len(queries)
        found = [d["_id"] for d in coll.find(like={KEY: queries[q]}, n=args.k)]
        firsts.append(time.perf_counter() - t0)
        exact += found == truth[q]
        logger.info("kill %d: first answer after %.2f s", kill, firsts[-1])
    stop.set()
    thread.join(60)
    client.close()
    return {"kills": args.kills, "size": n, "first_answer_s": firsts, "max_first_answer_s": max(firsts),
            "exact_matches": exact, "load": load}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--changes", type=int, default=1000, help="documents changed through the library after the snapshot")
    p.add_argument("--plain", type=int, default=100, help="documents inserted, updated and deleted by plain pymongo")
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--graph", action="store_true", help="build the graph before the snapshot (it is then in it)")
    p.add_argument("--no-damage", dest="damage", action="store_false", help="skip the damaged-snapshot restarts")
    p.add_argument("--kills", type=int, default=0, help="kill the master's worker this many times (needs --uri)")
    p.add_argument("--uri", default=None, help="a MongoDB URI (default: the embedded store, mongomock://...)")
    p.add_argument("--name", default="restart")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    _util.setup_logging(args.verbose)
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "restart", "config": vars(args), "environment": _util.environment(),
                              "targets": TARGETS}
    if args.kills:
        if not args.uri:
            p.error("--kills needs a server store (--uri): worker processes cannot share the embedded one")
        result["kills"] = run_kills(args)
    else:
        result["sizes"] = {}
        for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
            print(f"restart benchmark: {n:,} x {args.dim}, {args.changes} changes after the snapshot", flush=True)
            result["sizes"][str(n)] = run_size(args, n)
    result["total_s"] = time.perf_counter() - started
    result["notes"] = ["Synthetic clustered vectors (bench/search.py blobs); outputs stored with refresh=False through "
                       "the library (they carry their write position); the store as installed, no patches.",
                       "first_answer_s: from the started cluster to the first find(like=) answer (a new master "
                       "loads the index); total_s adds the cluster start. Ratios against the same run's restart "
                       "without a snapshot are the comparable figures (the machine is shared)."]
    path = _util.write_result(args.name, result)
    report(result)
    print(f"\ntargets: {TARGETS}\nwrote {path}")
    return result


def best(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return min(values) if values else None


def report(result: dict) -> None:
    f = _util.fmt
    if "kills" in result:
        k = result["kills"]
        print(f"kills: {k['kills']}, max first answer {f(k['max_first_answer_s'], ' s', 2)}, exact "
              f"{k['exact_matches']}/{k['kills']}, load {k['load']}")
        return
    for n, s in result["sizes"].items():
        runs = s["runs"]
        base = best(runs["without_snapshot"], "first_answer_s")
        print(f"\n== {int(n):,} x {s['dim']} (snapshot {s['snapshot']['bytes'] / 1e6:.0f} MB) ==")
        for name, rs in runs.items():
            fa = best(rs, "first_answer_s")
            print(f"  {name:40s} first answer {f(fa, ' s', 3)} ({f(_util.ratio(fa, base), 'x', 3)} of the baseline), "
                  f"catch-up {f(best(rs, 'catch_up_s'), ' s', 3)}, read {rs[0]['catch_up'].get('read')}, "
                  f"recall {rs[0]['recall_at_k']:.2f}")
        r = s["reconcile"]
        print(f"  reconcile: first pass {f(r['first_pass_s'], ' s', 2)}, unchanged pass {f(r['unchanged_pass_s'], ' s', 3)}"
              f" reading {r['unchanged_pass'].get('documents_checked')} documents "
              f"(digests read {r['unchanged_pass'].get('digest_documents_read')})")
        pw = s["plain_writes"]
        print(f"  plain pymongo writes: missing {pw['missing']}, ghosts {pw['ghosts']}, exact {pw['exact_matches']}/"
              f"{pw['queries']}, digest check {pw['digest_check']}")
        for name, d in (s.get("damaged") or {}).items():
            print(f"  damaged ({name}): rejected {[x['part'] for x in d['rejected'] or []]}, source {d['source']}, "
                  f"exact {d['exact_matches']}/{d['queries']}")


if __name__ == "__main__":
    main()
