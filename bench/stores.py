"""Embedded-store candidates: the same pymongo operations on each, in-process, at 20k documents.

Why: the library's embedded default (``mongomock://<name>``) must behave like a
MongoDB server (an ``_id`` index, secondary indexes that queries use, linear
cursors, ``bulk_write``, ``GridFSBucket``). This script measures the candidates
that could be that default on the operations the library runs, and records what
each one cannot do:

* ``mongomock``: stock ``mongomock.MongoClient()`` (a dependency of the library);
* ``embedded``: ``superduperdb.store.embedded.EmbeddedClient()`` (mongomock with
  an ``_id`` map, field indexes, linear cursors, ``bulk_write``, GridFS: what
  ``mongomock://`` opens);
* ``mongomock-ng``: ``mongomock_ng.MongoClient()`` (a maintained mongomock fork);
* ``tinymongo``: ``tinymongo.TinyMongoClient(backend="memory")``;
* ``mongita``: ``mongita.MongitaClientMemory()``;

and the candidates for a store **kept in a folder** (``superduperdb.connect("./my-data")``),
each in a fresh temporary folder, with one more operation, ``reopen``: close the client, open
the folder again and check that every document is there (how long a restarted kernel waits):

* ``embedded-folder``: ``EmbeddedClient(folder=...)``: the embedded store above with its
  journal and snapshots (:mod:`superduperdb.store.embedded.folder`; what ``file://`` opens);
* ``montydb``: ``montydb.MontyClient(folder)`` with its SQLite storage;
* ``polodb``: ``polodb.PoloDB(folder)`` (polodb-python; collections through ``db.collection(name)``);
* ``bsondb``: ``bsondb.BsonDBClient(folder)``;
* ``mongoeco``: ``mongoeco.MongoClient(SQLiteEngine(file))`` (needs Python >= 3.13: run it with
  ``--python`` pointing at a 3.13 interpreter that has it).

Each candidate runs in its own process (fresh memory, no shared state). The
third-party ones are not dependencies of the library: a candidate that imports
neither in this interpreter nor in any ``--python`` interpreter is recorded as
"not installed". They install offline into a separate virtual environment::

    python -m venv /tmp/storesvenv
    /tmp/storesvenv/bin/pip install mongomock-ng==7.11.1 tinymongo mongita pymongo numpy
    python bench/stores.py --python /tmp/storesvenv/bin/python

Operations (documents: ``i``, ``cat = i % 100``, ``score``, a short string and a
1.5 KB binary ``x``, the size of a 384-d float32 vector; ``_id`` assigned by the
store as users let it): ``insert_many``; ``find_one`` by ``_id`` x1000;
``find({'_id': {'$in': 1000 ids}})``; an equality filter matching 1% (``cat``)
and a range filter matching 1% (``i``), each before and after ``create_index``
on the field (the speed-up says whether the index is used); ``update_one`` by
``_id`` x1000 with a 1.5 KB binary ``$set``; iterating every document;
``bulk_write`` of 1000 ``UpdateOne``; an ``aggregate`` (``$match``/``$group``);
``GridFSBucket`` upload and download of 10 MB. Every result is checked (counts,
values); an operation that raises or returns a wrong answer is recorded as
failed with its error. Operations repeated 1000 times stop after ``--budget``
seconds and report the mean per call (``done`` says how many ran).

Examples
--------
    python bench/stores.py                                   # the candidates importable here
    python bench/stores.py --python /tmp/storesvenv/bin/python
    python bench/stores.py --n 2000 --budget 5               # quick
    python bench/stores.py --candidates embedded-folder,montydb,polodb,bsondb,mongoeco \\
        --python /tmp/storesvenv/bin/python --python /tmp/stores313/bin/python --name stores-folder
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util  # noqa: E402

# name -> (module that must import, what the client is)
CANDIDATES: dict[str, tuple[str, str]] = {
    "mongomock": ("mongomock", "mongomock.MongoClient() (stock)"),
    "embedded": ("superduperdb.store.embedded", "superduperdb.store.embedded.EmbeddedClient()"),
    "mongomock-ng": ("mongomock_ng", "mongomock_ng.MongoClient()"),
    "tinymongo": ("tinymongo", "tinymongo.TinyMongoClient(backend='memory')"),
    "mongita": ("mongita", "mongita.MongitaClientMemory()"),
    "embedded-folder": ("superduperdb.store.embedded.folder", "EmbeddedClient(folder=<tmp>) (file:// of this library)"),
    "montydb": ("montydb", "montydb.MontyClient(<tmp>) (sqlite storage)"),
    "polodb": ("polodb", "polodb.PoloDB(<tmp>) (polodb-python)"),
    "bsondb": ("bsondb", "bsondb.BsonDBClient(<tmp>)"),
    "mongoeco": ("mongoeco", "mongoeco.MongoClient(SQLiteEngine(<tmp>/db.sqlite))"),
}
# The candidates that keep their data in a folder (and get the `reopen` operation).
FOLDER = ("embedded-folder", "montydb", "polodb", "bsondb", "mongoeco")
OPS = ["insert_many", "find_one_by_id", "id_in", "eq_filter_scan", "create_index_eq", "eq_filter_indexed",
       "range_filter_scan", "create_index_range", "range_filter_indexed", "update_one_by_id", "iterate_all",
       "bulk_write_update_one", "aggregate", "gridfs_upload", "gridfs_download", "reopen"]


class _Polo:
    """``client[db][coll]`` over polodb-python, whose one database hands out ``db.collection(name)``."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def __getitem__(self, name: str) -> Any:
        return _PoloDatabase(self.db)

    def close(self) -> None:
        self.db.close()


class _PoloDatabase:
    def __init__(self, db: Any) -> None:
        self.db = db

    def __getitem__(self, name: str) -> Any:
        return self.db.collection(name)


def make_client(name: str, folder: str | None = None) -> Any:
    if name == "embedded-folder":
        from superduperdb.store.embedded import EmbeddedClient

        return EmbeddedClient(folder=folder)
    if name == "montydb":
        import montydb

        montydb.set_storage(folder, storage="sqlite")
        return montydb.MontyClient(folder)
    if name == "polodb":
        import polodb

        return _Polo(polodb.PoloDB(folder))
    if name == "bsondb":
        import bsondb

        return bsondb.BsonDBClient(folder)
    if name == "mongoeco":
        import mongoeco
        from mongoeco.engines import SQLiteEngine

        return mongoeco.MongoClient(SQLiteEngine(os.path.join(folder, "db.sqlite")))
    if name == "mongomock":
        import mongomock

        return mongomock.MongoClient()
    if name == "embedded":
        from superduperdb.store.embedded import EmbeddedClient

        return EmbeddedClient()
    if name == "mongomock-ng":
        import mongomock_ng

        return mongomock_ng.MongoClient()
    if name == "tinymongo":
        import tinymongo

        return tinymongo.TinyMongoClient(backend="memory")
    if name == "mongita":
        import mongita

        return mongita.MongitaClientMemory()
    raise ValueError(f"unknown candidate {name!r}; choose from {', '.join(CANDIDATES)}")


def version_of(name: str) -> str | None:
    from importlib import metadata

    dist = {"embedded": None, "embedded-folder": None, "polodb": "polodb-python"}.get(name, name)
    if dist is None:
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------
# the operations, in one child process per candidate
# ---------------------------------------------------------------------------------------
class Failed(Exception):
    """An operation returned a wrong answer."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)


def measure(results: dict, op: str, fn: Callable[[], dict | None]) -> None:
    """Run ``fn``, record its time (or its failure) as ``results[op]``, and save what is measured so far."""
    t0 = time.perf_counter()
    try:
        extra = fn() or {}
        seconds = time.perf_counter() - t0
        results[op] = {"ok": True, "seconds": seconds, **extra}
    except Exception as exc:  # noqa: BLE001 - recorded: that the candidate cannot do it is the result
        results[op] = {"ok": False, "seconds": time.perf_counter() - t0,
                       "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                       "where": traceback.format_exc(limit=-2).strip().splitlines()[-3:]}
    r = results[op]
    shown = f"{r['seconds']:.3f} s" if r["ok"] else f"FAILED {r['error'][:100]}"
    print(f"    {op:<24} {shown}", flush=True)
    if SAVE_TO is not None:  # a candidate that runs out of time still reports what it did
        SAVE_TO.write_text(json.dumps(results, default=_util._json_default))


SAVE_TO: Path | None = None


def repeated(calls: list[Callable[[], None]], budget: float) -> dict:
    """Run ``calls`` in order until done or ``budget`` seconds passed; mean per call."""
    t0 = time.perf_counter()
    done = 0
    for call in calls:
        call()
        done += 1
        if time.perf_counter() - t0 > budget:
            break
    seconds = time.perf_counter() - t0
    per = seconds / done
    return {"done": done, "of": len(calls), "per_call_ms": per * 1000, "projected_s": per * len(calls),
            "stopped_at_budget": done < len(calls)}


def timed_reps(fn: Callable[[], Any], reps: int, budget: float) -> dict:
    times = []
    t0 = time.perf_counter()
    for _ in range(reps):
        t1 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t1)
        if time.perf_counter() - t0 > budget:
            break
    return {"reps": len(times), "per_query_ms": 1000 * sum(times) / len(times), "min_ms": 1000 * min(times)}


def run_candidate(name: str, n: int, budget: float, calls: int, gridfs_mb: int) -> dict:
    import random

    from bson.binary import Binary

    rng = random.Random(0)
    payload = [Binary(rng.randbytes(1536)) for _ in range(64)]
    folder = tempfile.mkdtemp(prefix=f"stores-{name}-") if name in FOLDER else None
    t0 = time.perf_counter()
    client = make_client(name, folder) if folder else make_client(name)
    db = client["bench_stores"]
    coll = db["docs"]
    setup_s = time.perf_counter() - t0
    res: dict[str, Any] = {"candidate": name, "client": CANDIDATES[name][1], "version": version_of(name),
                           "python": sys.executable, "n": n, "setup_s": setup_s}
    print(f"  {name} ({res['version'] or 'this tree'}, {sys.executable})", flush=True)
    docs = [{"i": i, "cat": i % 100, "score": float(i) / n, "text": f"document {i}", "x": payload[i % 64]}
            for i in range(n)]
    ids: list = []

    def insert_many():
        out = coll.insert_many(docs)
        ids.extend(out.inserted_ids)
        check(len(ids) == n, f"inserted_ids has {len(ids)} ids for {n} documents")
        check(coll.count_documents({}) == n, "count_documents after insert_many")

    measure(res, "insert_many", insert_many)
    if not ids:  # nothing else can run
        return res
    picks = rng.sample(range(n), min(calls, n))
    pick_ids = [ids[p] for p in picks]

    def find_one_by_id():
        def one(_id, want):
            def call():
                doc = coll.find_one({"_id": _id})
                check(doc is not None and doc["i"] == want, f"find_one({_id!r})")
            return call
        return repeated([one(ids[p], p) for p in picks], budget)

    measure(res, "find_one_by_id", find_one_by_id)

    def id_in():
        found = list(coll.find({"_id": {"$in": pick_ids}}))
        check(sorted(d["i"] for d in found) == sorted(picks), f"_id $in returned {len(found)} of {len(picks)}")
        return {"returned": len(found)}

    measure(res, "id_in", id_in)

    want_eq = len(range(7, n, 100))
    lo, hi = n // 2, n // 2 + max(1, n // 100)

    def eq_filter():
        found = list(coll.find({"cat": 7}))
        check(len(found) == want_eq and all(d["i"] % 100 == 7 for d in found), f"cat == 7 returned {len(found)}")

    def range_filter():
        found = list(coll.find({"i": {"$gte": lo, "$lt": hi}}))
        check(sorted(d["i"] for d in found) == list(range(lo, hi)), f"range returned {len(found)}")

    measure(res, "eq_filter_scan", lambda: timed_reps(eq_filter, 5, budget))
    measure(res, "create_index_eq", lambda: {"name": coll.create_index("cat")})
    measure(res, "eq_filter_indexed", lambda: timed_reps(eq_filter, 20, budget))
    measure(res, "range_filter_scan", lambda: timed_reps(range_filter, 5, budget))
    measure(res, "create_index_range", lambda: {"name": coll.create_index("i")})
    measure(res, "range_filter_indexed", lambda: timed_reps(range_filter, 20, budget))
    for op in ("eq", "range"):
        scan, indexed = res[f"{op}_filter_scan"], res[f"{op}_filter_indexed"]
        if scan["ok"] and indexed["ok"]:
            speedup = scan["per_query_ms"] / indexed["per_query_ms"]
            indexed["speedup_vs_scan"] = speedup
            indexed["index_used"] = speedup >= 3.0

    new = Binary(rng.randbytes(1536))

    def update_one_by_id():
        def one(_id):
            def call():
                out = coll.update_one({"_id": _id}, {"$set": {"y": new}})
                check(out.matched_count == 1, f"update_one({_id!r}) matched {out.matched_count}")
            return call
        stats = repeated([one(_id) for _id in pick_ids], budget)
        check(bytes(coll.find_one({"_id": pick_ids[0]})["y"]) == bytes(new), "the $set value reads back")
        return stats

    measure(res, "update_one_by_id", update_one_by_id)

    def iterate_all():
        count = sum(1 for _ in coll.find({}))
        check(count == n, f"iterated {count} of {n}")

    measure(res, "iterate_all", iterate_all)

    def bulk_write_update_one():
        from pymongo import UpdateOne

        out = coll.bulk_write([UpdateOne({"_id": _id}, {"$set": {"z": k}}) for k, _id in enumerate(pick_ids)],
                              ordered=False)
        check(out.matched_count == len(pick_ids), f"bulk_write matched {out.matched_count}")
        doc = coll.find_one({"_id": pick_ids[-1]})
        check(doc.get("z") == len(pick_ids) - 1, "the bulk $set value reads back")

    measure(res, "bulk_write_update_one", bulk_write_update_one)

    def aggregate():
        out = list(coll.aggregate([{"$match": {"cat": {"$lt": 10}}},
                                   {"$group": {"_id": "$cat", "count": {"$sum": 1}}}]))
        check(len(out) == min(10, n) and sum(d["count"] for d in out) == len([i for i in range(n) if i % 100 < 10]),
              f"aggregate returned {out[:3]}")

    measure(res, "aggregate", aggregate)

    blob = rng.randbytes(gridfs_mb * 1024 * 1024)
    file_id: list = []
    integration = {"mongomock": "mongomock", "embedded": "mongomock", "embedded-folder": "mongomock",
                   "mongomock-ng": "mongomock_ng"}.get(name)
    if integration:  # pymongo's gridfs refuses other Database classes until this patches its checks
        importlib.import_module(f"{integration}.gridfs").enable_gridfs_integration()
        res["gridfs_note"] = f"after {integration}.gridfs.enable_gridfs_integration() (the library calls it)"

    def gridfs_upload():
        import gridfs

        bucket = gridfs.GridFSBucket(db)
        file_id.append(bucket.upload_from_stream("blob.bin", blob))

    def gridfs_download():
        import gridfs

        check(bool(file_id), "nothing was uploaded")
        data = gridfs.GridFSBucket(db).open_download_stream(file_id[0]).read()
        check(data == blob, f"downloaded {len(data)} bytes differ from the {len(blob)} uploaded")

    measure(res, "gridfs_upload", gridfs_upload)
    measure(res, "gridfs_download", gridfs_download)

    def reopen():
        nonlocal client
        close = getattr(client, "close", None)
        if close is not None:
            close()
        client = make_client(name, folder)
        count = client["bench_stores"]["docs"].count_documents({})
        check(count == n, f"{count} of {n} documents after reopening the folder")
        return {"documents": count, "folder_bytes": sum(p.stat().st_size for p in Path(folder).rglob("*")
                                                         if p.is_file())}

    if folder is not None:
        measure(res, "reopen", reopen)
    res["persistent"] = folder is not None
    res["total_s"] = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------
def importable(module: str, python: str) -> bool:
    if python == sys.executable:
        try:
            return importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            return False
    code = f"import importlib.util,sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run([python, "-c", code], env=env, check=False, capture_output=True).returncode == 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See bench/README.md.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000, help="documents (default 20000)")
    p.add_argument("--calls", type=int, default=1000, help="find_one/update_one calls and $in/bulk size (default 1000)")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds after which a repeated operation stops and reports its mean (default 20)")
    p.add_argument("--gridfs-mb", type=int, default=10, help="GridFS file size in MiB (default 10)")
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated (default: all)")
    p.add_argument("--python", action="append", default=[],
                   help="another interpreter to run candidates that do not import here (repeatable)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per candidate")
    p.add_argument("--name", default="stores", help="result name: bench/results/<name>.json")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        global SAVE_TO
        SAVE_TO = Path(args.child_out)
        out = run_candidate(args.child, args.n, args.budget, args.calls, args.gridfs_mb)
        Path(args.child_out).write_text(json.dumps(out, default=_util._json_default))
        return None
    started = time.perf_counter()
    env = _util.environment()
    names = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; choose from {', '.join(CANDIDATES)}")
    print(f"store benchmark: {args.n} documents, {args.calls} calls, budget {args.budget:g} s, "
          f"GridFS {args.gridfs_mb} MiB, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[str, Any] = {}
    pythons = [sys.executable, *args.python]
    for name in names:
        module = CANDIDATES[name][0]
        python = next((p for p in pythons if importable(module, p)), None)
        if python is None:
            results[name] = {"candidate": name, "client": CANDIDATES[name][1], "status": "not installed"}
            print(f"  {name}: not installed", flush=True)
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            out = tmp.name
        cmd = [python, str(Path(__file__).resolve()), *argv, "--child", name, "--child-out", out]
        child_env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        load = os.getloadavg()[0]
        try:
            proc = subprocess.run(cmd, env=child_env, check=False, timeout=args.timeout)
            if proc.returncode == 0:
                results[name] = {**json.loads(Path(out).read_text()), "status": "measured"}
            else:
                partial = json.loads(Path(out).read_text() or "{}")
                results[name] = {**partial, "candidate": name,
                                 "status": f"measured (partly: the process exited {proc.returncode})"}
        except subprocess.TimeoutExpired:
            partial = json.loads(Path(out).read_text() or "{}") if Path(out).exists() else {}
            results[name] = {**partial, "candidate": name,
                             "status": f"measured (partly: stopped after {args.timeout:g} s)"}
        finally:
            os.unlink(out)
        results[name]["loadavg_1min_at_start"] = load
    result = {
        "benchmark": "stores",
        "config": {k: v for k, v in vars(args).items() if not k.startswith("child")},
        "environment": {**_util.environment(), "loadavg_at_start": env.get("loadavg_at_start")},
        "operations": OPS,
        "candidates": results,
        "total_s": time.perf_counter() - started,
    }
    path = _util.write_result(args.name, result)
    print_table(result)
    print(f"wrote {path}")
    return result


def cell(r: dict, op: str) -> str:
    """One table cell: time per call (repeated), per query (filters), or total."""
    x = r.get(op)
    if x is None:
        return "n/a"
    if not x["ok"]:
        return "fails"
    if "per_call_ms" in x:
        return f"{x['per_call_ms']:.2f} ms/call" + (f" ({x['done']} of {x['of']})" if x["stopped_at_budget"] else "")
    if "per_query_ms" in x:
        return f"{x['per_query_ms']:.2f} ms"
    return f"{x['seconds'] * 1000:.0f} ms" if x["seconds"] < 1 else f"{x['seconds']:.2f} s"


def used(r: dict, op: str) -> str:
    x = r.get(f"{op}_filter_indexed") or {}
    if "speedup_vs_scan" not in x:
        return "n/a"
    return f"{'yes' if x['index_used'] else 'no'} ({x['speedup_vs_scan']:.1f}x)"


def print_table(result: dict) -> None:
    cands = result["candidates"]
    measured = [c for c in cands.values() if c.get("status", "").startswith("measured")]
    print("\n| operation | " + " | ".join(c["candidate"] for c in measured) + " |")
    print("|---|" + "---|" * len(measured))
    for op in OPS:
        print(f"| {op} | " + " | ".join(cell(c, op) for c in measured) + " |")
    for op in ("eq", "range"):
        print(f"| {op} index used (speed-up vs scan) | " + " | ".join(used(c, op) for c in measured) + " |")
    for c in cands.values():
        if c.get("status") != "measured":
            print(f"{c['candidate']}: {c['status']}")
        if not c.get("status", "").startswith("measured"):
            continue
        fails = [f"{op}: {c[op]['error'][:120]}" for op in OPS if op in c and not c[op]["ok"]]
        if fails:
            print(f"{c['candidate']} fails: " + "; ".join(fails))


if __name__ == "__main__":
    main()
