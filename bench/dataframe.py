"""DataFrame benchmark: ``to_pandas`` and ``to_dask`` vs a hand-written pymongo -> pandas loop.

One collection of ``N`` documents (an int, a float, a short text, a ``--dim``
float32 array stored by the array type, and one output of a registered model
per document at ``_outputs.x.norm``, inserted with the documents: a watcher's
backfill writes one document per update, which the stock mongomock store makes
quadratic, and only reading is measured here) is read three ways, on the same
store, in the same run:

* *baseline*: what a data scientist writes by hand: iterate the raw pymongo
  cursor, decode the stored ``.npy`` bytes with ``numpy.load``, flatten
  ``_outputs.<key>.<model>`` into a column, ``pandas.DataFrame(rows)``;
* ``coll.to_pandas()``;
* ``coll.to_dask(partition_size=...)`` computed on the client's Dask cluster
  (the workers read the partitions in parallel; on the embedded store they are
  threads of this process, on ``--uri mongodb://...`` processes).

Each is run ``--repeats`` times; the best time is reported as rows/s with the
ratio to the baseline. The store is the one the library runs on, unpatched
(mongomock by default: a scan per query, no index).

Examples
--------
    python bench/dataframe.py                       # N=20000, dim 32 on the embedded store
    python bench/dataframe.py --n 5000 --repeats 2
    python bench/dataframe.py --uri mongodb://localhost:27017/
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util  # noqa: E402
import numpy as np  # noqa: E402


def norm(x) -> float:
    return float(np.linalg.norm(x))


def baseline(raw) -> object:
    """The hand-written loop: raw documents -> decoded rows -> DataFrame."""
    import pandas as pd

    rows = []
    for doc in raw.find({}):
        row = {k: v for k, v in doc.items() if k not in ("_outputs", "_fingerprints")}
        content = row["x"]["_content"]
        row["x"] = np.load(io.BytesIO(bytes(content["bytes"])), allow_pickle=False)
        row["norm(x)"] = doc.get("_outputs", {}).get("x", {}).get("norm")
        rows.append(row)
    return pd.DataFrame(rows)


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--partition-size", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--uri", default="mongomock://bench-dataframe")
    parser.add_argument("--name", default="dataframe")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    _util.setup_logging(args.verbose)

    import superduperdb

    client = superduperdb.connect(args.uri, cluster="local", config={"master.warm_up": False})
    _util.quiet_libraries()
    coll = client.bench_dataframe.docs
    coll.drop()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for start in range(0, args.n, 5000):
        n = min(5000, args.n - start)
        xs = rng.normal(size=(n, args.dim)).astype("float32")
        coll.insert_many([{"i": start + j, "f": float(rng.normal()), "text": f"document {start + j}",
                           "x": x, "_outputs": {"x": {"norm": norm(x)}}} for j, x in enumerate(xs)])
    coll.create_model("norm", norm)
    setup_s = time.perf_counter() - t0
    dask_client = client.cluster.client

    base_s, base = best(lambda: baseline(coll.raw), args.repeats)
    pandas_s, df = best(lambda: coll.to_pandas(), args.repeats)
    dask_s, ddf_out = best(lambda: coll.to_dask(partition_size=args.partition_size).compute(scheduler=dask_client),
                           args.repeats)
    assert len(base) == len(df) == len(ddf_out) == args.n
    assert np.allclose(np.sort(df["norm(x)"].to_numpy()), np.sort(base["norm(x)"].to_numpy()))

    def rate(seconds: float) -> float:
        return args.n / seconds

    result = {
        "what": "rows/s reading N documents (int, float, text, float32 array, one model output) into a DataFrame",
        "store": args.uri.split("@")[-1],  # no credentials in results
        "n": args.n, "dim": args.dim, "partition_size": args.partition_size, "repeats": args.repeats,
        "workers": len(dask_client.scheduler_info(n_workers=-1)["workers"]),
        "setup_s": setup_s,
        "baseline": {"seconds": base_s, "rows_per_s": rate(base_s)},
        "to_pandas": {"seconds": pandas_s, "rows_per_s": rate(pandas_s), "ratio": _util.ratio(base_s, pandas_s)},
        "to_dask": {"seconds": dask_s, "rows_per_s": rate(dask_s), "ratio": _util.ratio(base_s, dask_s),
                    "partitions": -(-args.n // args.partition_size)},
        "environment": _util.environment(),
    }
    path = _util.write_result(args.name, result)
    print(f"N={args.n} dim={args.dim} on {result['store']} ({result['workers']} workers)")
    for label in ("baseline", "to_pandas", "to_dask"):
        r = result[label]
        ratio = f"  x{r['ratio']:.2f} of baseline" if "ratio" in r and r["ratio"] else ""
        print(f"  {label:10} {r['seconds']:7.2f} s  {_util.fmt(r['rows_per_s'], ' rows/s', 0)}{ratio}")
    print(f"wrote {path}")
    coll.drop()
    client.close()


if __name__ == "__main__":
    main()
