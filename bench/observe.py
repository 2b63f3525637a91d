"""See it working during an ingest: the lag on /metrics and the dashboard page, and `superduperdb status`.

Issue 22's target: during a 20,000-document ingest the lag metric and the
dashboard page show the backlog falling to 0, and ``superduperdb status``
agrees with ``coll.count_documents`` of the outputs.

On the embedded store with a local cluster (its scheduler runs the
superduperdb preload, so it serves the gauges and the page): a watcher
(``numpy.asarray`` on stored 384-d vectors) and a semantic index; ``N``
documents written in batches of ``--batch`` (the writes outrun the jobs, so a
backlog builds). A sampler scrapes the scheduler's ``/metrics`` every
``--every`` seconds, and runs ``superduperdb status``'s report (the same
function as the command, configured by the environment) next to
``count_documents`` of the outputs. With Chromium (``tests/browser/install.sh``)
the page stays open in a headless browser through the ingest; its lag chart is
read at the end and ``--screenshot`` saves it (``docs/img/dashboard.png``).

Writes ``bench/results/observe-n<N>.json``: every sample, the peak lag, the
seconds from the last write to a lag of 0, whether the lag only fell after
the writes ended, and status vs ``count_documents`` at the end.

    python bench/observe.py                                  # 20,000 documents
    python bench/observe.py --n 2000 --screenshot docs/img/dashboard.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _util  # noqa: E402
import numpy as np  # noqa: E402

DIM = 384
PAGE_LAG = """
const data = Bokeh.documents[0].get_model_by_name('superduperdb-lag').renderers[0].data_source.data;
const get = (key) => Array.from(data instanceof Map ? data.get(key) : data[key]);
const out = {};
get('name').forEach((name, k) => { out[name] = Array.from(get('ys')[k]); });
return out;
"""


def scrape(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=30).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name.startswith("superduperdb_")}


def browser():
    if not (shutil.which("/usr/bin/chromium") and shutil.which("/usr/bin/chromedriver")):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1300"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


class Sampler:
    """Scrapes /metrics every ``every`` s; runs the status report and count_documents every ``status_every`` s."""

    def __init__(self, metrics_url: str, lag_key: tuple, coll, path: str, every: float, status_every: float) -> None:
        self.metrics_url, self.lag_key, self.coll, self.path = metrics_url, lag_key, coll, path
        self.every, self.status_every = every, status_every
        self.samples: list[dict] = []
        self.status: list[dict] = []
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from superduperdb.cli.status import gather_status

        last_status = -1e9
        while not self._stop.wait(self.every):
            t = time.perf_counter() - self.t0
            got = scrape(self.metrics_url)
            self.samples.append({"t": t, "lag_documents": got.get(("superduperdb_outputs_lag_documents",
                                                                   self.lag_key)),
                                 "lag_seconds": got.get(("superduperdb_outputs_lag_seconds", self.lag_key))})
            if t - last_status >= self.status_every:
                last_status = t
                self.status.append(self.status_sample(gather_status))

    def status_sample(self, gather_status) -> dict:
        t = time.perf_counter() - self.t0
        report = gather_status(f"{self.coll.database.name}.{self.coll.name}")
        counted = self.coll.count_documents({self.path: {"$exists": True}})
        (c,) = report["collections"]
        (w,) = c["watchers"]
        return {"t": t, "status_outputs": w.get("outputs"), "status_documents": w.get("documents"),
                "status_lag": w["lag_documents"], "count_documents_outputs": counted}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=500, help="documents per insert_many (default 500)")
    p.add_argument("--every", type=float, default=0.5, help="seconds between scrapes of /metrics")
    p.add_argument("--status-every", type=float, default=3.0, help="seconds between status reports")
    p.add_argument("--screenshot", default=None, help="save the page as this PNG at the end")
    p.add_argument("--timeout", type=float, default=1800.0)
    args = p.parse_args(argv)
    _util.setup_logging(False)
    import superduperdb

    uri = "mongomock://bench-observe"
    client = superduperdb.connect(uri, cluster="local", config={"master.warm_up": False})
    coll = client["bench_observe"]["docs"]
    coll.drop()
    coll.create_model("ident", np.asarray, key="x").wait(600)
    coll.create_semantic_index("idx", models=["ident"], keys=["x"]).wait(600)
    _util.quiet_libraries()
    link = client.cluster.dashboard_link
    base = link.rsplit("/", 1)[0]
    # `superduperdb status` reads the config: point it at this store and this cluster's scheduler.
    os.environ["SUPERDUPERDB_MONGODB__URI"] = uri
    os.environ["SUPERDUPERDB_CLUSTER__ADDRESS"] = client.cluster.client.scheduler.address
    xs = np.random.default_rng(0).standard_normal((args.n, DIM)).astype(np.float32)
    page = browser()
    if page is not None:
        page.get(f"{base}/superduperdb")
    lag_key = (("collection", "docs"), ("database", "bench_observe"), ("watcher", "ident/x"))
    sampler = Sampler(f"{base}/metrics", lag_key, coll, "_outputs.x.ident", args.every, args.status_every)
    start = time.perf_counter()
    groups = []
    for i in range(0, args.n, args.batch):
        groups.append(coll.insert_many([{"x": x, "i": i + k} for k, x in enumerate(xs[i:i + args.batch])]).jobs)
    written = time.perf_counter() - sampler.t0
    for g in groups:
        g.wait(args.timeout)
    deadline = time.monotonic() + 120
    while not (sampler.samples and sampler.samples[-1]["lag_documents"] == 0) and time.monotonic() < deadline:
        time.sleep(0.2)  # the sampler's next scrape, not a synchronisation of the ingest (its jobs were waited on)
    done = time.perf_counter() - start
    time.sleep(3 * args.every)  # a few samples at 0 for the record and the chart
    sampler.stop()
    final = sampler.status_sample(__import__("superduperdb.cli.status", fromlist=["gather_status"]).gather_status)
    page_lag = None
    if page is not None:
        page_lag = {k: v[-1] if v else None for k, v in page.execute_script(PAGE_LAG).items()}
        if args.screenshot:
            page.save_screenshot(args.screenshot)
        page.quit()
    lags = [s["lag_documents"] for s in sampler.samples if s["lag_documents"] is not None]
    peak = max(lags, default=None)
    after = [s["lag_documents"] for s in sampler.samples if s["t"] >= written and s["lag_documents"] is not None]
    zero_at = next((s["t"] for s in sampler.samples if s["t"] >= written and s["lag_documents"] == 0), None)
    result = {
        "benchmark": "observe",
        "config": vars(args),
        "environment": _util.environment(),
        "ingest_s": done, "docs_per_s": args.n / done, "writes_done_at_s": written,
        "peak_lag_documents": peak,
        "lag_zero_s_after_last_write": None if zero_at is None else zero_at - written,
        "lag_only_fell_after_writes": all(a >= b for a, b in zip(after, after[1:])),
        "final_status": final,
        "status_agrees_with_count_documents": final["status_outputs"] == final["count_documents_outputs"] == args.n
        and final["status_lag"] == 0,
        "page_lag_last": page_lag,
        "samples": sampler.samples, "status_samples": sampler.status,
    }
    path = _util.write_result(f"observe-n{args.n}", result)
    client.close()
    print(f"ingest of {args.n} documents in {done:.1f} s ({args.n / done:,.0f} docs/s); lag peaked at {peak:,.0f} "
          f"documents, 0 {result['lag_zero_s_after_last_write']} s after the last write; fell monotonically "
          f"after the writes: {result['lag_only_fell_after_writes']}; status outputs {final['status_outputs']} vs "
          f"count_documents {final['count_documents_outputs']} (lag {final['status_lag']}); page's last lag "
          f"{page_lag}\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
