"""What keeping the embedded store in a folder costs: the same writes in memory and in a folder.

The folder store (``superduperdb.connect("./my-data")``, ``file://``) is the in-memory
embedded store plus a journal that every change is appended to before the call returns
(:mod:`superduperdb.store.embedded.folder`). This measures that cost on the writes the
library does, against the in-memory store **in the same run**, rounds alternating between
the two (each round a fresh store, the folder a fresh temporary one), and the time to open
the folder again (what a restarted kernel waits):

* ``insert_many`` of N documents (an int, a string and a 1.5 KB binary, the size of a
  384-d float32 vector);
* ``bulk_write`` of N ``UpdateOne`` ``$set`` of a 1.5 KB output (what a model job writes),
  in batches of 1000;
* ``update_one`` by ``_id`` with a small ``$set``, ``--calls`` times;
* a ``find`` of every document (reads do not touch the journal: a ratio near 1);
* ``reopen`` (folder only): close, open the folder, count the documents.

The ratios (folder / memory, best round of each) are the result; absolute times move with the
load of the machine (recorded).

Examples
--------
    python bench/folder_store.py                  # N=20000, 3 rounds
    python bench/folder_store.py --n 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util  # noqa: E402
from bson.binary import Binary  # noqa: E402
from pymongo import UpdateOne  # noqa: E402

from superduperdb.store.embedded import EmbeddedClient  # noqa: E402
from superduperdb.store.embedded.folder import Folder  # noqa: E402

OPS = ("insert_many", "bulk_write_outputs", "update_one", "find_all")


def one_round(kind: str, n: int, calls: int, flush_interval: float) -> dict:
    rng = random.Random(0)
    payload = [Binary(rng.randbytes(1536)) for _ in range(64)]
    folder = tempfile.mkdtemp(prefix="bench-folder-") if kind == "folder" else None
    client = EmbeddedClient(folder=Folder(folder, flush_interval=flush_interval)) if folder else EmbeddedClient()
    coll = client.bench.docs
    docs = [{"i": i, "text": f"document {i}", "x": payload[i % 64]} for i in range(n)]
    out: dict[str, Any] = {}
    t = time.perf_counter()
    ids = coll.insert_many(docs).inserted_ids
    out["insert_many"] = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, n, 1000):
        coll.bulk_write([UpdateOne({"_id": _id}, {"$set": {"_outputs.x.model": payload[k % 64]}})
                         for k, _id in enumerate(ids[start:start + 1000])], ordered=False)
    out["bulk_write_outputs"] = time.perf_counter() - t
    picks = rng.sample(ids, min(calls, n))
    t = time.perf_counter()
    for k, _id in enumerate(picks):
        coll.update_one({"_id": _id}, {"$set": {"n": k}})
    out["update_one"] = time.perf_counter() - t
    t = time.perf_counter()
    assert sum(1 for _ in coll.find({})) == n
    out["find_all"] = time.perf_counter() - t
    if folder:
        client.close()
        t = time.perf_counter()
        again = EmbeddedClient(folder=Folder(folder, flush_interval=flush_interval))
        count = again.bench.docs.count_documents({})
        out["reopen"] = time.perf_counter() - t
        assert count == n, f"{count} of {n} documents after reopening"
        out["folder_mb"] = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6
        again.close()
        shutil.rmtree(folder, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="documents (default 20000)")
    p.add_argument("--calls", type=int, default=1000, help="update_one calls (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each, alternating (default 3)")
    p.add_argument("--flush-interval", type=float, default=1.0, help="the folder's mongodb.flush_interval (default 1)")
    p.add_argument("--name", default="folder-store", help="result name: bench/results/<name>.json")
    args = p.parse_args(argv)
    started = time.perf_counter()
    env = _util.environment()
    rounds: dict[str, list[dict]] = {"memory": [], "folder": []}
    for r in range(args.rounds):
        order = ("memory", "folder") if r % 2 == 0 else ("folder", "memory")
        for kind in order:
            res = one_round(kind, args.n, args.calls, args.flush_interval)
            res["load"] = os.getloadavg()[0]
            rounds[kind].append(res)
            print(f"round {r + 1} {kind:6}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)
    best = {kind: {op: min(r[op] for r in rs) for op in rs[0] if op != "load"} for kind, rs in rounds.items()}
    ratios = {op: _util.ratio(best["folder"][op], best["memory"][op]) for op in OPS}
    per_round = {op: [_util.ratio(f[op], m[op]) for f, m in zip(rounds["folder"], rounds["memory"])] for op in OPS}
    result = {"benchmark": "folder_store", "config": vars(args), "environment": env, "rounds": rounds,
              "best_s": best, "ratio_folder_over_memory": ratios, "ratio_per_round": per_round,
              "total_s": time.perf_counter() - started}
    path = _util.write_result(args.name, result)
    print("\n| operation | memory (best) | folder (best) | folder / memory | per round |")
    print("|---|---|---|---|---|")
    for op in OPS:
        print(f"| {op} | {best['memory'][op]:.3f} s | {best['folder'][op]:.3f} s | {ratios[op]:.2f} | "
              + ", ".join(f"{x:.2f}" for x in per_round[op]) + " |")
    print(f"| reopen {args.n} documents | | {best['folder']['reopen']:.3f} s | | |")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
