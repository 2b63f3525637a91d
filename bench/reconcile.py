"""Reconcile benchmark: one reconciler pass vs the bare read it cannot avoid.

What it measures, in one run, on the store as installed (no emulation, no
patch: the stock embedded store, or ``--uri mongodb://...``), with
``reconcile.interval = 0`` (no background sweep) and ``cluster=None``, so
``coll.reconcile(wait=True)`` runs the pass inline and its wall time is the
pass itself:

1. **Consistent pass.** A collection of ``--n`` documents (default 100000),
   each a 384-d float32 vector ``x`` with its output (a model that is the
   identity) and fingerprint already current: the pass checks every document
   and must recompute nothing. Time, microseconds per document, its report.
2. **Baseline, same run, same collection.** What any pass has to look at:
   ``list(raw.find({}, {"x": 1, "_fingerprints.x.ident": 1}))`` plus the
   fingerprint (``superduperdb.store.layout.fingerprint``) of every input.
   Reported: pass / baseline. Rounds alternate the order (``--repeats``);
   the best of each is compared.
3. **Stale pass.** A collection where ``--stale-fraction`` (1%) of the
   documents hold the output and fingerprint of another vector: the pass
   recomputes and rewrites them. Then a second pass over the same collection
   (the consistency check of the repair: it must recompute nothing) is the
   same-size consistent reference for the ratio stale / consistent.
   On the stock embedded store every output written (an ``update_one`` by
   ``_id``) scans the whole collection: ~20 ms each at 20k documents, 0.1-0.25 s
   at 100k, so 1% of 100k (1000 outputs) would add minutes of the stand-in's
   scans to the pass, and the ratio would measure mongomock, not the pass.
   This part therefore runs at ``--stale-n`` documents (default 20000: 200
   outputs, a few seconds) unless ``--uri`` is given, where it runs at ``--n``.

How the collections are built. Per-document writes would be quadratic on the
stock store, so the model and its watcher are registered on an EMPTY
collection (``create_model("ident", identity, key="x")``: an empty
backfill), and the documents are then inserted complete with the raw
collection's ``insert_many``, in exactly the stored form the library writes:
the document encoded by the collection's type registry as ``insert_many``
does, the output as ``superduperdb.tasks.outputs.encode_outputs`` encodes it
(``types.encode_many(outputs, path="outputs")``, the model has no ``type``),
and ``fingerprint(model version, raw encoded input)``. The construction is
checked: the first pass over the consistent collection must report
``outputs_computed == 0`` (the run fails otherwise), and after the stale pass
the outputs the library rewrote must equal, byte for byte, what the builder
writes for the same inputs.

``--index`` adds a cosine semantic index (created after the documents are in:
it loads them) so each pass also syncs the index; keep ``--n`` below
``master.exact_threshold`` (20000) then, or the load builds a graph.

Examples
--------
    python bench/reconcile.py                          # 100k consistent, 20k with 1% stale (stock store)
    python bench/reconcile.py --n 10000 --index        # with a semantic index
    python bench/reconcile.py --uri mongodb://localhost:27017/
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util  # noqa: E402
import numpy as np  # noqa: E402

logger = logging.getLogger("bench.reconcile")

MODEL = "ident"
KEY = "x"
INDEX = "vectors"
BUILD_CHUNK = 5000


def identity(x: Any) -> np.ndarray:
    """The benchmark's model: its output is its input, as float32."""
    return np.asarray(x, dtype="float32")


# ---------------------------------------------------------------------------------------
# building a collection whose outputs are already computed
# ---------------------------------------------------------------------------------------
def vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return rng.standard_normal((n, dim), dtype=np.float32)


def build(coll: Any, n: int, dim: int, seed: int, stale_every: int = 0) -> dict:
    """Register the model and its watcher on the empty ``coll``, then insert ``n`` complete documents.

    ``stale_every=k``: every k-th document (i % k == 0) stores the output and
    fingerprint of another vector (a stale output). Returns what it built.
    """
    from superduperdb.store.layout import FINGERPRINTS, OUTPUTS, fingerprint

    coll.drop()
    t0 = time.perf_counter()
    coll.create_model(MODEL, identity, key=KEY).wait(600)  # empty collection: the backfill finds nothing
    version = coll._metadata.get("models", MODEL)["version"]
    rng = np.random.default_rng(seed)
    stale = 0
    timings: dict[str, float] = {}
    for start in range(0, n, BUILD_CHUNK):
        count = min(BUILD_CHUNK, n - start)
        xs = vectors(rng, count, dim)
        with _util.timer(timings, "encode_s"):
            docs = coll._types.encode_many([{"i": start + j, KEY: xs[j]} for j in range(count)])
            sources = xs.copy()
            for j in range(count):
                if stale_every and (start + j) % stale_every == 0:
                    sources[j] = -xs[j]  # the output and fingerprint of another vector
                    stale += 1
            outputs = coll._types.encode_many([identity(v) for v in sources], path="outputs")
            stale_inputs = {j: coll._types.encode(sources[j], "document")
                            for j in range(count) if stale_every and (start + j) % stale_every == 0}
            for j, (doc, out) in enumerate(zip(docs, outputs)):
                raw_input = stale_inputs.get(j, doc[KEY])
                doc[OUTPUTS] = {KEY: {MODEL: out}}
                doc[FINGERPRINTS] = {KEY: {MODEL: fingerprint(version, raw_input)}}
        with _util.timer(timings, "insert_many_s"):
            coll.raw.insert_many(docs)
    built = {"documents": n, "stale": stale, "model_version": version, "seconds": time.perf_counter() - t0,
             **timings}
    logger.info("built %s: %s", coll.name, built)
    return built


def expected_output(coll: Any, x: np.ndarray) -> Any:
    """What the builder (and, if it is right, the library) stores as the output of ``x``."""
    return coll._types.encode_many([identity(x)], path="outputs")[0]


# ---------------------------------------------------------------------------------------
# the measurements
# ---------------------------------------------------------------------------------------
def timed_pass(coll: Any, profile: cProfile.Profile | None = None) -> dict:
    """Wall time of ``coll.reconcile(wait=True)`` (inline: the pass itself) and its report."""
    t0 = time.perf_counter()
    if profile is not None:
        profile.enable()
    job = coll.reconcile(wait=True)
    if profile is not None:
        profile.disable()
    seconds = time.perf_counter() - t0
    report = job.result()
    docs = max(int(report.get("documents_checked") or 0), 1)
    return {"seconds": seconds, "us_per_doc": seconds / docs * 1e6, "report": report}


def baseline_read(coll: Any, version: Any) -> dict:
    """The read a pass cannot avoid: every input and stored fingerprint, and the digest of every input."""
    from superduperdb.store.layout import fingerprint, fingerprint_path, get_path

    fp_path = fingerprint_path(KEY, MODEL)
    t0 = time.perf_counter()
    docs = list(coll.raw.find({}, {KEY: 1, fp_path: 1}))
    read = time.perf_counter()
    current = sum(fingerprint(version, d[KEY]) == get_path(d, fp_path) for d in docs)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "us_per_doc": seconds / max(len(docs), 1) * 1e6, "read_s": read - t0,
            "fingerprint_s": seconds - (read - t0), "documents": len(docs), "current": current}



def profile_top(profile: cProfile.Profile, limit: int = 15) -> dict:
    """The functions with the largest cumulative and own time in ``profile``."""
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():
        short = "/".join(Path(filename).parts[-2:]) if filename != "~" else "builtin"
        rows.append({"function": f"{short}:{line}({name})", "calls": calls, "tottime_s": tottime,
                     "cumtime_s": cumtime})
    return {"by_cumtime": sorted(rows, key=lambda r: -r["cumtime_s"])[:limit],
            "by_tottime": sorted(rows, key=lambda r: -r["tottime_s"])[:limit]}


def fail(message: str) -> None:
    raise SystemExit(f"reconcile benchmark: {message}")


# ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See bench/README.md.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="documents of the consistent collection (default 100000)")
    p.add_argument("--stale-n", type=int, default=20_000,
                   help="documents of the collection with stale outputs on the embedded store (default 20000: "
                        "every output written scans the collection there); with --uri: --n")
    p.add_argument("--stale-fraction", type=float, default=0.01, help="share of stale outputs (default 0.01)")
    p.add_argument("--dim", type=int, default=384, help="vector dimension (default 384)")
    p.add_argument("--index", action="store_true",
                   help="add a cosine semantic index on the outputs, so each pass also syncs it "
                        "(keep --n below 20000, master.exact_threshold: above it the load builds a graph)")
    p.add_argument("--repeats", type=int, default=2,
                   help="rounds of (baseline, pass) over the consistent collection, order alternating; "
                        "best of each is compared (default 2)")
    p.add_argument("--profile", action="store_true",
                   help="also run one consistent pass under cProfile (not timed) and record where it spends its time")
    p.add_argument("--uri", default="mongomock://bench-reconcile",
                   help="store: mongomock://<name> (default, the stock embedded store) or mongodb://host:port/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None,
                   help="result name: bench/results/<name>.json (default reconcile, or reconcile-<options> "
                        "for non-default runs)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p.parse_args(argv)


def default_name(args: argparse.Namespace) -> str:
    parts = []
    if args.n != 100_000:
        parts.append(f"n{args.n}")
    if args.stale_n != 20_000 or args.stale_fraction != 0.01:
        parts.append(f"stale{args.stale_n}x{args.stale_fraction:g}")
    if args.dim != 384:
        parts.append(f"d{args.dim}")
    if args.index:
        parts.append("index")
    if not args.uri.startswith("mongomock://"):
        parts.append("server")
    return "-".join(["reconcile", *parts])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    _util.setup_logging(args.verbose)
    import superduperdb

    _util.quiet_libraries()
    started = time.perf_counter()
    env = _util.environment()
    mongomock = args.uri.startswith("mongomock://")
    stale_n = args.stale_n if mongomock else args.n
    stale_every = max(int(round(1 / args.stale_fraction)), 1)
    config = {"reconcile.interval": 0, "master.warm_up": False}
    client = superduperdb.connect(args.uri, cluster=None, config=config)
    db = client["bench_reconcile"]
    print(f"reconcile benchmark: {args.n} documents (consistent), {stale_n} with 1 in {stale_every} stale, "
          f"{args.dim}-d float32, identity model{', cosine semantic index' if args.index else ''}, "
          f"store {args.uri} (as installed), {os.cpu_count()} CPUs, load {env.get('loadavg_at_start')}", flush=True)

    # 1-2. the consistent collection: the pass and the baseline read, alternating
    coll = db["consistent"]
    built = build(coll, args.n, args.dim, args.seed)
    print(f"  built {args.n} documents in {built['seconds']:.1f} s (encode {built['encode_s']:.1f} s, "
          f"insert_many {built['insert_many_s']:.1f} s)", flush=True)
    index_load = None
    if args.index:
        t0 = time.perf_counter()
        coll.create_semantic_index(INDEX, [MODEL], [KEY], measure="cosine").wait(3600)
        index_load = {"seconds": time.perf_counter() - t0}
        print(f"  semantic index created (loads {args.n} vectors) in {index_load['seconds']:.1f} s", flush=True)
    version = built["model_version"]
    rounds = []
    for k in range(args.repeats):
        order = ("pass", "baseline") if k % 2 == 0 else ("baseline", "pass")
        r: dict[str, Any] = {"order": "-".join(order)}
        for what in order:
            r[what] = timed_pass(coll) if what == "pass" else baseline_read(coll, version)
            print(f"  round {k + 1} {what:8} {r[what]['seconds']:8.2f} s  {r[what]['us_per_doc']:8.1f} us/doc",
                  flush=True)
        rep = r["pass"]["report"]
        if rep["outputs_computed"] or rep["outputs_removed"] or rep["remaining"]:
            fail(f"the pass over the freshly built consistent collection repaired something: {rep} "
                 "(the builder does not write what the library writes)")
        if rep["documents_checked"] != args.n or r["baseline"]["current"] != args.n:
            fail(f"checked {rep['documents_checked']} documents, {r['baseline']['current']} current, of {args.n}")
        if args.index and (rep["index_upserted"] or rep["index_removed"]):
            fail(f"the index was not in step after its load: {rep}")
        r["ratio"] = _util.ratio(r["pass"]["seconds"], r["baseline"]["seconds"])
        rounds.append(r)
    best_pass = min((r["pass"] for r in rounds), key=lambda x: x["seconds"])
    best_base = min((r["baseline"] for r in rounds), key=lambda x: x["seconds"])
    profile = None
    if args.profile:
        prof = cProfile.Profile()
        profiled = timed_pass(coll, prof)
        profile = {"pass_seconds_under_profile": profiled["seconds"], "top": profile_top(prof)}
    probe_consistent = _util.find_one_probe(coll.raw, samples=5, stride=100) if mongomock else None
    coll.drop()

    # 3. the collection with stale outputs
    scoll = db["stale"]
    sbuilt = build(scoll, stale_n, args.dim, args.seed + 1, stale_every)
    if args.index:
        scoll.create_semantic_index(INDEX, [MODEL], [KEY], measure="cosine").wait(3600)
    print(f"  built {stale_n} documents ({sbuilt['stale']} stale) in {sbuilt['seconds']:.1f} s", flush=True)
    sbase = baseline_read(scoll, version)
    if sbase["current"] != stale_n - sbuilt["stale"]:
        fail(f"{sbase['current']} current fingerprints, expected {stale_n - sbuilt['stale']}")
    stale = timed_pass(scoll)
    print(f"  stale pass       {stale['seconds']:8.2f} s  {stale['us_per_doc']:8.1f} us/doc  "
          f"({stale['report']['outputs_computed']} outputs recomputed)", flush=True)
    if stale["report"]["outputs_computed"] != sbuilt["stale"] or stale["report"]["remaining"]:
        fail(f"the stale pass recomputed {stale['report']['outputs_computed']} of {sbuilt['stale']}: {stale['report']}")
    after = timed_pass(scoll)
    print(f"  then consistent  {after['seconds']:8.2f} s  {after['us_per_doc']:8.1f} us/doc", flush=True)
    if after["report"]["outputs_computed"] or after["report"]["outputs_removed"]:
        fail(f"a second pass after the repair still repaired something: {after['report']}")
    if args.index and stale["report"]["index_upserted"] != sbuilt["stale"]:
        fail(f"the index re-read {stale['report']['index_upserted']} vectors, expected {sbuilt['stale']}")
    # The outputs the library rewrote are what the builder writes for the same inputs.
    out_path = f"_outputs.{KEY}.{MODEL}"
    checked = 0
    for doc in scoll.raw.find({"i": {"$in": [0, stale_every, 2 * stale_every]}}, {KEY: 1, out_path: 1}):
        x = scoll._types.decode(doc[KEY])
        if doc["_outputs"][KEY][MODEL] != expected_output(scoll, x):
            fail(f"the library's output of document {doc['_id']} differs from the builder's encoding")
        checked += 1
    probe_stale = _util.find_one_probe(scoll.raw, samples=5, stride=100) if mongomock else None
    scoll.drop()
    client.close()

    recomputed = stale["report"]["outputs_computed"]
    per_output_ms = (stale["seconds"] - after["seconds"]) / recomputed * 1000 if recomputed else None
    result = {
        "benchmark": "reconcile",
        "config": {**vars(args), "stale_n_used": stale_n, "stale_every": stale_every, "cluster": None,
                   "client_config": config},
        "environment": {**_util.environment(), "loadavg_at_start": env.get("loadavg_at_start")},
        "store_notes": [
            "The store as installed: the library's embedded store (superduperdb.store.embedded), nothing "
            "patched. The pass and the baseline read through the same store.",
        ] if mongomock else ["MongoDB-wire server at --uri."],
        "consistent": {
            "documents": args.n, "build": built, "index_load": index_load,
            "how": "best of the rounds for each (the machine is shared); rounds alternate the order",
            "pass": best_pass, "baseline": best_base,
            "ratio_pass_over_baseline": _util.ratio(best_pass["seconds"], best_base["seconds"]),
            "paired_ratios": [r["ratio"] for r in rounds], "rounds": rounds,
            "find_one_by_id": probe_consistent, "profile": profile,
        },
        "stale": {
            "documents": stale_n, "stale_outputs": sbuilt["stale"], "build": sbuilt, "pass": stale,
            "consistent_pass_after": after, "baseline": sbase,
            "ratio_stale_over_consistent_same_size": _util.ratio(stale["seconds"], after["seconds"]),
            "ratio_per_doc_stale_over_consistent_n": _util.ratio(stale["us_per_doc"], best_pass["us_per_doc"]),
            "ratio_consistent_pass_over_baseline_same_size": _util.ratio(after["seconds"], sbase["seconds"]),
            "ms_per_recomputed_output": per_output_ms, "find_one_by_id": probe_stale,
            "outputs_checked_against_builder": checked,
        },
        "total_s": time.perf_counter() - started,
    }
    path = _util.write_result(args.name or default_name(args), result)
    print_summary(result, path)
    return result


def print_summary(r: dict, path: Path) -> None:
    c, s = r["consistent"], r["stale"]
    f = _util.fmt
    print()
    print(f"consistent  {c['documents']} docs: pass {f(c['pass']['seconds'], ' s', 2)} "
          f"({f(c['pass']['us_per_doc'], ' us/doc')}), baseline read+digest {f(c['baseline']['seconds'], ' s', 2)} "
          f"({f(c['baseline']['us_per_doc'], ' us/doc')}: read {c['baseline']['read_s']:.2f} s, digests "
          f"{c['baseline']['fingerprint_s']:.2f} s); pass/baseline {f(c['ratio_pass_over_baseline'], '', 2)} "
          f"(per round " + ", ".join(f"{x:.2f}" for x in c["paired_ratios"]) + ")")
    print(f"            report {c['pass']['report']}")
    print(f"stale       {s['documents']} docs, {s['stale_outputs']} stale: pass {f(s['pass']['seconds'], ' s', 2)} "
          f"({f(s['pass']['us_per_doc'], ' us/doc')}), the consistent pass after it {f(s['consistent_pass_after']['seconds'], ' s', 2)} "
          f"({f(s['consistent_pass_after']['us_per_doc'], ' us/doc')}); stale/consistent "
          f"{f(s['ratio_stale_over_consistent_same_size'], '', 2)} same size, per doc vs the {c['documents']}-doc pass "
          f"{f(s['ratio_per_doc_stale_over_consistent_n'], '', 2)}; {f(s['ms_per_recomputed_output'], ' ms')} per "
          f"recomputed output")
    if s["find_one_by_id"]:
        print(f"            one find_one by _id: {f(c['find_one_by_id'].get('p50_ms'), ' ms')} at {c['documents']}, "
              f"{f(s['find_one_by_id'].get('p50_ms'), ' ms')} at {s['documents']} documents")
    if c["profile"]:
        print(f"profile     one consistent pass under cProfile: {c['profile']['pass_seconds_under_profile']:.2f} s")
        for row in c["profile"]["top"]["by_tottime"][:10]:
            print(f"            {row['cumtime_s']:8.2f} s cum {row['tottime_s']:8.2f} s own {row['calls']:>9} "
                  f"{row['function']}")
    for note in r["store_notes"]:
        print(f"note: {note}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
