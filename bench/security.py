"""What the security settings cost, each against a baseline measured in the same run.

1. **Signed artifacts**: loading a model artifact (uncached, ``ArtifactStore.load_fresh``) with
   ``security.artifact_key`` (signature and digest checked) vs without, on the embedded store;
   artifacts of about 1 MB and 20 MB.
2. **TLS on the cluster**: a Dask task round trip (``submit(...).result()``) on a local cluster
   of worker processes with ``security.tls_*`` vs plain TCP.
3. **Failed logins**: how many of a burst of 320 wrong passwords the model server answers with
   401 (a guess checked) before it answers 429, and at what rate, vs the same server with a
   limit too high to reach (what the server did before).

    python bench/security.py            # writes bench/results/security.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _util import environment, ratio, setup_logging, summary_ms, write_result  # noqa: E402


def artifact_loads(repeats: int) -> dict:
    import superduperdb

    out = {}
    for label, size in (("1MB", 2**18), ("20MB", 5 * 2**20)):
        name = f"bench-sec-{uuid.uuid4().hex[:6]}"
        weights = np.random.default_rng(0).normal(size=size).astype("float32")
        times = {}
        for keyed in (False, True):
            config = {"security.artifact_key": "bench-key"} if keyed else {}
            client = superduperdb.connect(f"mongomock://{name}-{keyed}", cluster=None, config=config)
            coll = client[name].docs
            coll.create_model("m", _Scale(weights))
            store, ref = coll._services.scope.artifacts, coll.raw.database["docs._models"].find_one()["artifact"]
            expect = ("models/m", 1)
            samples = []
            for _ in range(repeats):
                t = time.perf_counter()
                store.load_fresh(ref, expect)
                samples.append(time.perf_counter() - t)
            times[keyed] = summary_ms(samples)
            client.close()
        out[label] = {"unsigned": times[False], "signed": times[True],
                      "ratio_p50": ratio(times[True]["p50_ms"], times[False]["p50_ms"])}
    return out


class _Scale:
    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def __call__(self, x):
        return float(np.sum(x)) * float(self.weights[0])


def _inc(x):
    return x + 1


def dask_round_trips(repeats: int, folder: str) -> dict:
    import distributed
    from certs import make_certs

    from superduperdb.cluster.security import security_of

    files = make_certs(folder)
    out = {}
    for label, security in (("tcp", None), ("tls", security_of((files.ca, files.cert, files.key)))):
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                      security=security) as cluster, \
                distributed.Client(cluster, security=security) as client:
            assert client.scheduler.address.startswith(f"{label}://")
            for i in range(20):  # warm up
                client.submit(_inc, i, pure=False).result()
            samples = []
            for i in range(repeats):
                t = time.perf_counter()
                client.submit(_inc, i, pure=False).result()
                samples.append(time.perf_counter() - t)
            out[label] = summary_ms(samples)
    out["ratio_p50"] = ratio(out["tls"]["p50_ms"], out["tcp"]["p50_ms"])
    return out


def wrong_passwords(burst: int) -> dict:
    import httpx

    import superduperdb

    out = {}
    for label, limit in (("unlimited", 10**9), ("limited", 10)):
        name = f"bench-auth-{uuid.uuid4().hex[:6]}"
        client = superduperdb.connect(f"mongomock://{name}", cluster=None, config={"serve.max_failed_logins": limit})
        with superduperdb.serve(client, host="127.0.0.1", port=0, username="u", password="right", block=False) as server, \
                httpx.Client() as http:
            statuses = []
            t = time.perf_counter()
            for i in range(burst):
                statuses.append(http.get(f"{server.url}/models/db/docs", auth=("u", f"guess{i}")).status_code)
            took = time.perf_counter() - t
        client.close()
        out[label] = {"guesses_checked": statuses.count(401), "refused_429": statuses.count(429),
                      "answers_per_s": burst / took}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--burst", type=int, default=320)
    parser.add_argument("--out", default="security")
    args = parser.parse_args(argv)
    setup_logging()
    with tempfile.TemporaryDirectory() as folder:
        result = {"environment": environment(), "artifact_load": artifact_loads(args.repeats),
                  "dask_round_trip": dask_round_trips(args.round_trips, folder),
                  "wrong_passwords": wrong_passwords(args.burst)}
    path = write_result(args.out, result)
    for label, entry in result["artifact_load"].items():
        print(f"artifact load {label}: signed/unsigned p50 ratio {entry['ratio_p50']:.2f} "
              f"({entry['signed']['p50_ms']:.1f} / {entry['unsigned']['p50_ms']:.1f} ms)")
    rt = result["dask_round_trip"]
    print(f"dask round trip: tls/tcp p50 ratio {rt['ratio_p50']:.2f} ({rt['tls']['p50_ms']:.1f} / "
          f"{rt['tcp']['p50_ms']:.1f} ms)")
    for label, entry in result["wrong_passwords"].items():
        print(f"wrong passwords ({label}): {entry['guesses_checked']} of {args.burst} checked, "
              f"{entry['refused_429']} refused with 429, {entry['answers_per_s']:.0f} answers/s")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
