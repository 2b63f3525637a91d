"""See it working on a cluster started with the Dask CLIs: /metrics, ``superduperdb status``, the page in a browser.

``dask scheduler --dashboard --preload superduperdb.cluster.preload`` and two
``dask worker`` processes (one ``--resources MASTER=1``), against the
MongoDB-wire server. A client ingests documents in batches through a gated
model (so the backlog is seen at its full size), then opens the gate:

* the scheduler's ``/metrics`` shows the lag at the number of documents
  written, then falling to 0, never rising meanwhile;
* ``superduperdb status --json`` (a separate process, configured by the
  environment) agrees with ``coll.count_documents`` of the outputs, while
  held and once done; its text form shows the same rows;
* headless Chromium (Debian's package, driven by Selenium) opens the
  dashboard, follows the "superduperdb" link of Dask's navigation bar, and
  reads the jobs, the watcher, its lag and the index off the page.
  ``SUPERDUPERDB_TEST_SCREENSHOT=path.png`` saves what it saw (the one in
  ``docs/img/`` was taken so).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import distributed
import numpy as np
import pytest
import testmodels
from prometheus_client.parser import text_string_to_metric_families
from test_cli_cluster import BIN, START, WAIT, DaskCLICluster
from waiting import poll

import superduperdb
from superduperdb.cluster.spec import PRELOAD

pytestmark = [pytest.mark.slow, pytest.mark.integration]

N, BATCH = 600, 60
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1300")
# The text a user sees: Bokeh draws into shadow roots, so walk them (and skip styles and scripts).
PAGE_TEXT = """
function collect(node, out) {
  if (node.shadowRoot) collect(node.shadowRoot, out);
  for (const c of node.childNodes) {
    if (c.nodeType === 3) out.push(c.textContent);
    else if (c.nodeType === 1 && c.tagName !== 'STYLE' && c.tagName !== 'SCRIPT') collect(c, out);
  }
  return out;
}
return collect(document.body, []).join(' ').split(/\\s+/).join(' ');
"""

LAG_LINES = """
const data = Bokeh.documents[0].get_model_by_name('superduperdb-lag').renderers[0].data_source.data;
const get = (key) => Array.from(data instanceof Map ? data.get(key) : data[key]);
const out = {};
get('name').forEach((name, k) => { const ys = Array.from(get('ys')[k]); out[name] = ys[ys.length - 1]; });
return out;
"""


class DashboardCluster(DaskCLICluster):
    """The Dask CLI cluster of test_cli_cluster, with the scheduler's dashboard on (a free port)."""

    def start_scheduler(self) -> None:
        self.procs.start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--dashboard", "--dashboard-address", "127.0.0.1:0",
                                       "--scheduler-file", self.scheduler_file, "--preload", PRELOAD],
                         env=self.env, cwd=self.root)
        self.address = poll(lambda: self._address(), START, "the scheduler file")

    def _address(self) -> str | None:
        assert self.procs.started["scheduler"].poll() is None, self.procs.log("scheduler")
        try:
            return json.loads(Path(self.scheduler_file).read_text())["address"]
        except (OSError, ValueError):
            return None

    @property
    def dashboard(self) -> str:
        with distributed.Client(self.address, timeout=30, set_as_default=False) as client:
            port = client.scheduler_info()["services"]["dashboard"]
        return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def cluster(server_uri, tmp_path_factory):
    cluster = DashboardCluster(tmp_path_factory.mktemp("observe"))
    try:
        cluster.start_scheduler()
        cluster.add_worker("w1")
        cluster.add_worker("master", "--resources", "MASTER=1")
        cluster.wait_for({"w1", "master"})
        yield cluster
        cluster.stop()  # asserts that nothing is left running
    finally:
        cluster.procs.kill_all()


@pytest.fixture(scope="module")
def ingested(cluster, server_uri, tmp_path_factory):
    """An ingest of N documents through a gated model, watched from /metrics and `superduperdb status`."""
    name = f"t{os.getpid()}obs"
    client = superduperdb.connect(server_uri, cluster=cluster.address)
    coll = client[name].docs
    gate = tmp_path_factory.mktemp("gate") / "open"
    seen: dict = {"lag": []}
    try:
        coll.create_model("gate", testmodels.Gate(str(gate), timeout=4 * WAIT), key="x").wait(WAIT)
        coll.create_semantic_index("idx", models=["gate"], keys=["x"]).wait(WAIT)
        xs = np.random.default_rng(0).normal(size=(N, 4)).astype("float32")
        groups = [coll.insert_many([{"x": x, "i": i + k} for k, x in enumerate(xs[i:i + BATCH])]).jobs
                  for i in range(0, N, BATCH)]
        seen["held"] = poll(lambda: (m := lag(cluster.dashboard, name)) == N and m, WAIT,
                            f"the lag of {N} documents on the scheduler's /metrics")
        seen["status_held"] = status(cluster, server_uri, "--json", "-d", name)
        seen["outputs_held"] = coll.count_documents({"_outputs.x.gate": {"$exists": True}})
    finally:
        gate.write_text("open")

    def fallen():
        seen["lag"].append(lag(cluster.dashboard, name))
        return seen["lag"][-1] == 0

    poll(fallen, 4 * WAIT, "the lag to fall to 0", interval=0.2)
    for g in groups:
        g.wait(WAIT)
    poll(lambda: index_vectors(cluster.dashboard, name) == N, WAIT, "the index to hold every vector")
    for _ in range(5):
        assert list(coll.find({}, like={"x": xs[3]}, n=3))[0]["i"] == 3
    poll(lambda: sum(v[0] for i in status(cluster, server_uri, "--json", "-d", name)["indexes"]
                     for v in i["queries"].values()) >= 5, WAIT, "the queries in the master's report")
    seen["status_done"] = status(cluster, server_uri, "--json", "-d", name)
    seen["text_done"] = status(cluster, server_uri, "-d", name)
    seen["outputs_done"] = coll.count_documents({"_outputs.x.gate": {"$exists": True}})
    yield name, seen
    client.close()
    import pymongo

    with pymongo.MongoClient(server_uri, serverSelectionTimeoutMS=5000) as raw:
        raw.drop_database(name)


def metrics_of(dashboard: str) -> list:
    text = urllib.request.urlopen(f"{dashboard}/metrics", timeout=30).read().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def lag(dashboard: str, database: str) -> float | None:
    found = [s.value for s in metrics_of(dashboard) if s.name == "superduperdb_outputs_lag_documents"
             and s.labels == {"database": database, "collection": "docs", "watcher": "gate/x"}]
    return found[0] if found else None


def index_vectors(dashboard: str, database: str) -> float | None:
    found = [s.value for s in metrics_of(dashboard) if s.name == "superduperdb_index_vectors"
             and s.labels.get("database") == database and s.labels.get("index") == "idx"]
    return sum(found) if found else None


def status(cluster: DashboardCluster, uri: str, *args: str):
    env = {**cluster.env, "SUPERDUPERDB_CLUSTER__ADDRESS": cluster.address, "SUPERDUPERDB_MONGODB__URI": uri}
    done = subprocess.run([str(BIN / "superduperdb"), "status", *args], env=env, cwd=cluster.root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def _watcher(report: dict) -> dict:
    (c,) = report["collections"]
    (w,) = c["watchers"]
    return w


def test_lag_on_metrics_falls_to_zero(ingested):
    name, seen = ingested
    assert seen["held"] == N
    values = [v for v in seen["lag"] if v is not None]
    assert values[-1] == 0
    assert all(a >= b for a, b in zip(values, values[1:])), values  # the backlog only falls


def test_status_agrees_with_the_documents(ingested):
    name, seen = ingested
    held, done = _watcher(seen["status_held"]), _watcher(seen["status_done"])
    assert held["documents"] == N and held["outputs"] == seen["outputs_held"] == 0
    assert held["lag_documents"] == N == held["documents"] - held["outputs"]
    assert done["outputs"] == seen["outputs_done"] == N and done["lag_documents"] == 0
    (c,) = seen["status_done"]["collections"]
    assert c["jobs"]["model"]["success"] == N // BATCH + 1  # the batches' jobs and create_model's
    (index,) = seen["status_done"]["indexes"]
    assert index["index"] == "idx" and index["vectors"] == N and index["shards"] == 1
    assert sum(v[0] for v in index["queries"].values()) >= 5
    text = seen["text_done"]
    (row,) = [line.split() for line in text.splitlines() if line.strip().startswith("gate/x")]
    assert row[:5] == ["gate/x", str(N), str(N), "0", "0.0"]
    assert f"{name}.docs" in text and "master    generation 1" in text


def _browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"the browser test needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "bash tests/browser/install.sh")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (the dev extra)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_the_page_in_a_browser(cluster, ingested, server_uri):
    name, _ = ingested
    browser = _browser()
    try:
        browser.set_page_load_timeout(60)
        browser.get(f"{cluster.dashboard}/status")
        link = poll(lambda: [a for a in browser.find_elements("css selector", ".navbar a")
                             if a.get_attribute("href").endswith("/superduperdb")], WAIT,
                    "the superduperdb link in Dask's navigation bar")
        link[0].click()
        poll(lambda: browser.current_url.endswith("/superduperdb"), WAIT, "the page to open")

        def shown_with(part: str) -> str | None:
            text = browser.execute_script(PAGE_TEXT)
            return text if part in text else None

        text = poll(lambda: shown_with(f"{name}.docs idx {N} "), WAIT, "the page to show the index")
        assert "master generation 1" in text
        # jobs: model and index rows with nothing pending, running or failed
        assert f"{name}.docs model 0 0 {N // BATCH + 1} 0 0" in text
        # the watcher's row: lag 0 documents, 0 s, no jobs pending or running
        assert f"{name}.docs gate/x 0 0.0 0 0" in text
        # the lag chart (drawn on a canvas: read its data from the page's Bokeh document) ends at 0
        lines = browser.execute_script(LAG_LINES)
        assert lines[f"{name}.docs gate/x"] == 0, lines
        # live: a write made while the page is open shows up on it without a reload
        client = superduperdb.connect(server_uri, cluster=cluster.address)
        try:
            xs = np.random.default_rng(1).normal(size=(BATCH, 4)).astype("float32")
            client[name].docs.insert_many([{"x": x, "i": N + k} for k, x in enumerate(xs)]).jobs.wait(WAIT)
        finally:
            client.close()
        text = poll(lambda: shown_with(f"{name}.docs idx {N + BATCH} "), WAIT, "the page to show the new vectors")
        assert f"{name}.docs model 0 0 {N // BATCH + 2} 0 0" in text
        if os.environ.get("SUPERDUPERDB_TEST_SCREENSHOT"):
            time.sleep(3)  # let the lag chart draw a few points for the picture (not a synchronisation)
            browser.save_screenshot(os.environ["SUPERDUPERDB_TEST_SCREENSHOT"])
    finally:
        browser.quit()
