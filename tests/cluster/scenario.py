"""The end-to-end scenario, run as a separate client process against a running cluster.

    python tests/cluster/scenario.py --uri mongodb://127.0.0.1:27017/ --cluster tcp://127.0.0.1:8786 --db demo

Without ``--uri``/``--cluster`` the client takes both from the config in force
(e.g. ``./config.json`` in the original layout). Registers a model from
``tests/testmodels.py`` (imported by the workers) with a watcher, a function
defined here (travels by value) with a semantic index, inserts documents, waits for the jobs, searches, and prints a JSON
summary on the last line of stdout. Any failed check exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import testmodels  # from tests/: the workers import it too (PYTHONPATH)

import superduperdb
from superduperdb.client import UNSET

WAIT = 90
PROJECTION = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")


def project(x):
    """A linear embedding defined in ``__main__``: dill stores it by value, the workers need only numpy."""
    return np.asarray(x, dtype="float32") @ PROJECTION


def _seconds(start, end) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", default=None)
    parser.add_argument("--cluster", default=UNSET)
    parser.add_argument("--db", required=True)
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args(argv)

    timings: dict[str, float] = {}
    start = time.perf_counter()
    client = superduperdb.connect(args.uri, cluster=args.cluster)
    coll = client[args.db].docs
    xs = np.random.default_rng(0).normal(size=(args.n, 8)).astype("float32")

    t = time.perf_counter()
    coll.create_model("shout", testmodels.shout)
    coll.create_watcher("shout", "text").wait(WAIT)
    coll.create_model("project", project, key="x").wait(WAIT)
    coll.create_semantic_index("idx", models=["project"], keys=["x"]).wait(WAIT)
    timings["register"] = time.perf_counter() - t

    t = time.perf_counter()
    result = coll.insert_many([{"x": x, "text": f"doc {i}", "i": i} for i, x in enumerate(xs)])
    result.jobs.wait(WAIT)
    timings["insert_and_jobs"] = time.perf_counter() - t

    t = time.perf_counter()
    hits = list(coll.find({}, like={"x": xs[7]}, n=5))
    filtered = list(coll.find({"i": {"$gte": args.n // 2}}, like={"x": xs[7]}, n=5))
    by_id = list(coll.find({}, like={"_id": result.inserted_ids[3]}, n=1))
    timings["search"] = time.perf_counter() - t

    shouted = coll.find_one({"i": 3})["_outputs"]["text"]["shout"]
    jobs = coll.list_jobs()
    checks = {
        "nearest is the query document": hits[0]["i"] == 7,
        "n results": len(hits) == 5,
        "scores descend": all(a["_score"] >= b["_score"] for a, b in zip(hits, hits[1:])),
        "filter applied": len(filtered) == 5 and all(d["i"] >= args.n // 2 for d in filtered),
        "search by _id": by_id[0]["i"] == 3,
        "watcher output": shouted == "DOC 3",
        "every document has outputs": coll.count_documents({"_outputs.x.project": {"$exists": True},
                                                            "_outputs.text.shout": {"$exists": True}}) == args.n,
        "every job succeeded": all(j["status"] == "success" for j in jobs),
    }
    summary = {
        "checks": checks,
        "workers": sorted({j.get("worker") for j in jobs if j.get("worker")}),
        "jobs": len(jobs),
        "job_seconds": [  # (kind, waited before it started, ran, worker): where the time went
            (j["kind"], _seconds(j.get("created_at"), j.get("started_at")), _seconds(j.get("started_at"), j.get("finished_at")),
             j.get("worker")) for j in sorted(jobs, key=lambda j: j["created_at"])],
        "cluster": client.config.cluster.address,
        "uri": client.uri,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "total": round(time.perf_counter() - start, 3),
    }
    client.close()
    print(json.dumps(summary))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
