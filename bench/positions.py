"""Where to keep the write position: on the documents, or in a change log (an outbox) beside them.

Both placements measured on the store as installed (the embedded default unless ``--uri``), in one
run, against a baseline that keeps no position:

* **writes**: ``insert_many`` of N documents in batches of 1,000 and U single ``update_one``;
  *on the documents* the number rides in the write (``_sdb: {seq, part}``, as
  :mod:`superduperdb.store.positions` stamps it); the *outbox* adds one ``{_id: seq, doc, op}``
  row per written document to ``<collection>._changes``;
* **range reads**: "what changed since position p" for the last C = 10 and 1,000 changes: on the
  documents, one indexed read of ``_sdb.seq > p``; with the outbox, a read of the log, then of the
  documents it names.

Examples
--------
    python bench/positions.py                    # 100k documents, embedded store
    python bench/positions.py --n 5000 --uri mongodb://127.0.0.1:PORT/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util  # noqa: E402
import numpy as np  # noqa: E402
from bson import Binary  # noqa: E402
from pymongo import ASCENDING  # noqa: E402

from superduperdb.store.partitions import partition_of  # noqa: E402


def docs(start: int, stop: int, dim: int) -> list[dict]:
    rng = np.random.default_rng(start)
    return [{"_id": i, "i": i, "v": Binary(rng.standard_normal(dim).astype("float32").tobytes())}
            for i in range(start, stop)]


def run(raw_db: Any, placement: str, n: int, updates: int, dim: int) -> dict:
    coll, log = raw_db[f"pos_{placement}"], raw_db[f"pos_{placement}._changes"]
    coll.drop()
    log.drop()
    if placement == "documents":
        coll.create_index([("_sdb.seq", ASCENDING)])
    if placement == "outbox":
        log.create_index([("seq", ASCENDING)])
    seq = 0
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        batch = docs(start, min(n, start + 1000), dim)
        seq += 1
        if placement == "documents":
            batch = [{**d, "_sdb": {"seq": seq, "part": partition_of(d["_id"])}} for d in batch]
        coll.insert_many(batch)
        if placement == "outbox":
            log.insert_many([{"_id": seq * 10_000 + j, "seq": seq * 10_000 + j, "doc": d["_id"], "op": "insert"}
                             for j, d in enumerate(batch)])
    insert_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    targets = rng.choice(n, updates, replace=False).tolist()
    marks = {}
    t0 = time.perf_counter()
    for k, i in enumerate(targets):
        seq += 1
        if len(targets) - k in (1000, 10):
            marks[len(targets) - k] = seq - 1  # the position "C changes ago"
        if placement == "documents":
            coll.update_one({"_id": i}, {"$set": {"x": k, "_sdb.seq": seq * 10_000}})
        else:
            coll.update_one({"_id": i}, {"$set": {"x": k}})
            if placement == "outbox":
                log.insert_one({"_id": seq * 10_000, "seq": seq * 10_000, "doc": i, "op": "update"})
    update_s = time.perf_counter() - t0
    reads = {}
    for c, mark in sorted(marks.items()):
        t0 = time.perf_counter()
        if placement == "documents":
            found = list(coll.find({"_sdb.seq": {"$gt": mark * 10_000}}, {"x": 1}))
        elif placement == "outbox":
            ids = list(dict.fromkeys(r["doc"] for r in log.find({"seq": {"$gt": mark * 10_000}}, {"doc": 1})))
            found = list(coll.find({"_id": {"$in": ids}}, {"x": 1}))
        else:
            continue
        reads[f"read_{c}_changes_s"] = time.perf_counter() - t0
        reads[f"read_{c}_changes_found"] = len(found)
    coll.drop()
    log.drop()
    return {"insert_s": insert_s, "update_s": update_s, **reads}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--uri", default=None)
    p.add_argument("--name", default="positions")
    args = p.parse_args(argv)
    import superduperdb

    client = superduperdb.connect(args.uri or "mongomock://bench-positions", cluster=None,
                                  config={"reconcile.interval": 0, "master.warm_up": False})
    raw_db = client.raw["bench_positions"]
    out = {placement: run(raw_db, placement, args.n, args.updates, args.dim)
           for placement in ("none", "documents", "outbox")}
    client.close()
    for placement in ("documents", "outbox"):
        for key in ("insert_s", "update_s"):
            out[placement][f"{key}_ratio_to_none"] = _util.ratio(out[placement][key], out["none"][key])
    result = {"benchmark": "positions", "config": vars(args), "environment": _util.environment(), "placements": out}
    path = _util.write_result(args.name, result)
    for placement, r in out.items():
        print(placement, {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
