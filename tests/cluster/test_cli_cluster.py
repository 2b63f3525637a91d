"""Cluster deployments started through their command lines, used from a separate client.

Three ways to run a cluster, each as real subprocesses against the
MongoDB-wire server (``server_uri``), each driven by ``tests/cluster/scenario.py``
in its own client process (model + watcher + semantic index, insert, wait,
search), each stopped at the end with a check that none of its processes is
left:

* ``superduperdb local-cluster``;
* ``dask scheduler`` / ``dask worker`` with ``--preload superduperdb.cluster.preload``
  (one of them ``--resources MASTER=1``), which also shows that a worker added
  while jobs run takes work, and that a worker stopped mid-job loses nothing;
* ``supervisord`` with ``deploy/supervisord.conf`` and a ``config.json`` in the
  original layout.

Processes started here get ``SUPERDUPERDB_MASTER__WARM_UP=false`` (no 45-165 s
JIT warm-up) and ``tests/`` on ``PYTHONPATH`` (the workers import testmodels).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import distributed
import psutil
import pytest
import testmodels
from waiting import poll

import superduperdb
from superduperdb.cluster.spec import PRELOAD
from superduperdb.tasks.report import process_report

pytestmark = [pytest.mark.slow, pytest.mark.integration]

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
SCENARIO = Path(__file__).with_name("scenario.py")
BIN = Path(sys.executable).parent
START = 120.0  # seconds for a cluster to come up (Python start-ups on a busy 2-core machine)
WAIT = 120.0
STOP = 60.0


# -- helpers ----------------------------------------------------------------------------------
def cluster_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("SUPERDUPERDB_") and not k.startswith("SUPERDUPERDB_TEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(BIN), os.environ.get("PATH", "")))
    env["SUPERDUPERDB_MASTER__WARM_UP"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




class Processes:
    """Commands started in their own sessions; remembers every descendant to check it is gone."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.started: dict[str, subprocess.Popen] = {}
        self.seen: dict[int, psutil.Process] = {}
        self.group: dict[int, int] = {}  # pid -> process group, as seen while it ran

    def start(self, name: str, command: list[str], *, env: dict, cwd: Path | str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
        log.close()
        self.started[name] = proc
        self.snapshot()
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def snapshot(self) -> list[psutil.Process]:
        for proc in self.started.values():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    if p.pid not in self.seen:
                        self.seen[p.pid] = p
                        with contextlib.suppress(OSError):
                            self.group[p.pid] = os.getpgid(p.pid)
        return list(self.seen.values())

    def alive(self, name: str | None = None) -> list[psutil.Process]:
        """Live processes seen so far (``name``: only those in that command's process group)."""
        left = []
        for p in self.seen.values():
            if name is not None and self.group.get(p.pid) != self.started[name].pid:
                continue
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
        return left

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = STOP) -> int:
        proc = self.started[name]
        self.snapshot()
        if proc.poll() is None:
            proc.send_signal(sig)
        return proc.wait(timeout)

    def kill_all(self) -> None:
        """Last-resort clean-up, so that a failing test leaves nothing behind."""
        for proc in self.started.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for p in self.alive():
            with contextlib.suppress(psutil.Error):
                p.kill()
        for proc in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def assert_all_gone(self, timeout: float = 20.0) -> None:
        poll(lambda: not self.alive(), timeout, "every cluster process to exit")


def run_scenario(db: str, *, cwd: Path, env: dict, uri: str | None = None, cluster: str | None = None) -> dict:
    command = [sys.executable, str(SCENARIO), "--db", db]
    if uri:
        command += ["--uri", uri]
    if cluster:
        command += ["--cluster", cluster]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"scenario failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(summary["checks"].values()), summary
    summary["stderr"] = done.stderr
    return summary


def run_info(*, cwd: Path, env: dict) -> dict:
    done = subprocess.run([str(BIN / "superduperdb"), "info", "--json"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def scheduler_workers(address: str) -> dict:
    with distributed.Client(address, timeout=30, set_as_default=False) as client:
        return client.scheduler_info(n_workers=-1)["workers"]


@pytest.fixture(autouse=True)
def drop_database(server_uri, unique_name):
    """Leave nothing behind on a real MongoDB (SUPERDUPERDB_TEST_MONGODB_URI)."""
    yield
    import pymongo

    with pymongo.MongoClient(server_uri, serverSelectionTimeoutMS=5000) as client:
        client.drop_database(unique_name)


# -- 1. superduperdb local-cluster ----------------------------------------------------------------
def test_local_cluster_command(server_uri, unique_name, tmp_path):
    procs = Processes(tmp_path / "logs")
    env = cluster_env()
    out = tmp_path / "local-cluster.out"
    try:
        t0 = time.perf_counter()
        with open(out, "wb") as stdout:
            launcher = subprocess.Popen(
                [str(BIN / "superduperdb"), "local-cluster", "--n-workers", "1", "--port", "0",
                 "--log-dir", str(tmp_path / "logs")],
                stdout=stdout, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
        procs.started["local-cluster"] = launcher

        def address():
            assert launcher.poll() is None, out.read_text()
            for line in out.read_text().splitlines():
                if line.startswith("scheduler: "):
                    return line.split()[1]
            return None

        addr = poll(address, START, "local-cluster to print the scheduler address")
        started = time.perf_counter() - t0
        tree = procs.snapshot()
        assert len(tree) >= 6, [p.cmdline() for p in tree]  # launcher, scheduler, 2 x (nanny + worker)
        workers = scheduler_workers(addr)
        assert sorted(w["name"] for w in workers.values()) == ["master", "worker-0"]
        assert [w["resources"] for w in workers.values() if w["name"] == "master"] == [{"MASTER": 1.0}]

        summary = run_scenario(unique_name, uri=server_uri, cluster=addr, cwd=tmp_path, env=env)
        assert summary["cluster"] == addr

        info = run_info(cwd=tmp_path, env={**env, "SUPERDUPERDB_CLUSTER__ADDRESS": addr,
                                           "SUPERDUPERDB_MONGODB__URI": server_uri})
        assert info["cluster"]["reachable"] is True and info["cluster"]["workers"] == 2
        assert all(w["preload"] is True for w in info["cluster"]["worker list"].values())
        master = info["master"]
        assert master["state"] == "running" and workers[master["worker"]]["name"] == "master"
        (index,) = [s for s in master["indexes"] if s["collection"] == f"{unique_name}.docs"]
        assert index["index"] == "idx" and index["size"] == 40 and index["tail"] == 40
        assert info["jobs"][f"{unique_name}.docs"] == {"success": summary["jobs"]}

        t1 = time.perf_counter()
        assert procs.stop("local-cluster", signal.SIGINT) == 0  # Ctrl-C
        stopped = time.perf_counter() - t1
        procs.assert_all_gone()
        assert "stopped." in out.read_text()
        print(f"local-cluster: started in {started:.1f} s, scenario {summary['total']:.1f} s "
              f"{summary['timings']}, stopped in {stopped:.1f} s; jobs {summary['job_seconds']}")
    finally:
        procs.kill_all()


# -- 2. dask scheduler / dask worker with the preload --------------------------------------------
class DaskCLICluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs = Processes(root / "logs")
        self.env = cluster_env()
        self.scheduler_file = str(root / "scheduler.json")
        self.address: str | None = None

    def start_scheduler(self) -> None:
        self.procs.start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--no-dashboard", "--dashboard-address", "127.0.0.1:0",
                                       "--scheduler-file", self.scheduler_file, "--preload", PRELOAD],
                         env=self.env, cwd=self.root)

        def address():
            assert self.procs.started["scheduler"].poll() is None, self.procs.log("scheduler")
            with contextlib.suppress(OSError, ValueError):
                return json.loads(Path(self.scheduler_file).read_text())["address"]
            return None

        self.address = poll(address, START, "the scheduler file")

    def add_worker(self, name: str, *extra: str) -> None:
        self.procs.start(name, [str(BIN / "dask"), "worker", "--scheduler-file", self.scheduler_file,
                                "--preload", PRELOAD, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                                "--name", name, *extra], env=self.env, cwd=self.root)

    def wait_for(self, names: set[str]) -> dict:
        def registered():
            for name in names:
                assert self.procs.started[name].poll() is None, self.procs.log(name)
            workers = scheduler_workers(self.address)
            return workers if names <= {w["name"] for w in workers.values()} else None

        return poll(registered, START, f"workers {sorted(names)} to register", interval=0.25)

    def address_of(self, name: str) -> str:
        return next(a for a, w in scheduler_workers(self.address).items() if w["name"] == name)

    def stop(self) -> None:
        for name in [n for n in self.procs.started if n != "scheduler"] + ["scheduler"]:
            self.procs.stop(name)
        self.procs.assert_all_gone()


@pytest.fixture(scope="module")
def dask_cli_cluster(server_uri, tmp_path_factory):
    cluster = DaskCLICluster(tmp_path_factory.mktemp("dask-cli"))
    try:
        cluster.start_scheduler()
        cluster.add_worker("w1")
        cluster.add_worker("master", "--resources", "MASTER=1")
        cluster.wait_for({"w1", "master"})
        yield cluster
        cluster.stop()  # asserts that nothing is left running
    finally:
        cluster.procs.kill_all()


@pytest.fixture
def cluster_client(dask_cli_cluster, server_uri):
    client = superduperdb.connect(server_uri, cluster=dask_cli_cluster.address)
    yield client
    client.close()


def test_dask_cli_scenario(dask_cli_cluster, server_uri, unique_name, tmp_path):
    summary = run_scenario(unique_name, uri=server_uri, cluster=dask_cli_cluster.address, cwd=tmp_path,
                           env=dask_cli_cluster.env)
    assert summary["workers"], summary
    with distributed.Client(dask_cli_cluster.address, timeout=30, set_as_default=False) as client:
        reports = client.run(process_report)
    assert {r["role"] for r in reports.values()} == {"worker"}
    assert all(r["preload"] and r["OMP_WAIT_POLICY"] == "PASSIVE" and r["NUMBA_CACHE_DIR"] for r in reports.values())
    assert "ready: scheduler" in dask_cli_cluster.procs.log("scheduler")
    assert "resources {'MASTER': 1.0}" in dask_cli_cluster.procs.log("master")


def _records(coll) -> list[dict]:
    return coll.list_jobs()


def test_added_worker_takes_work(dask_cli_cluster, cluster_client, unique_name, tmp_path):
    coll = cluster_client[unique_name].docs
    gate = tmp_path / "open"
    try:
        coll.create_model("gate", testmodels.Gate(str(gate), timeout=WAIT), key="x").wait(WAIT)
        threads = sum(w["nthreads"] for w in scheduler_workers(dask_cli_cluster.address).values())
        groups = [coll.insert_one({"x": i}).jobs for i in range(2 * threads + 2)]
        ids = {j.id for g in groups for j in g}
        poll(lambda: sum(r["status"] == "running" for r in _records(coll) if str(r["_id"]) in ids) == threads,
             WAIT, "every thread of the cluster to hold a gated job")

        dask_cli_cluster.add_worker("late")
        dask_cli_cluster.wait_for({"late"})
        late = dask_cli_cluster.address_of("late")
        poll(lambda: [r for r in _records(coll) if r.get("worker") == late], WAIT,
             "the added worker to start one of the waiting jobs")
    finally:
        gate.write_text("open")
    for g in groups:
        g.wait(WAIT)
    docs = list(coll.find({}, {"x": 1, "_outputs": 1}))
    assert sorted(d["_outputs"]["x"]["gate"] for d in docs) == list(range(len(groups)))
    assert late in {r["worker"] for r in _records(coll)}


def test_stopped_worker_loses_nothing(dask_cli_cluster, cluster_client, unique_name, tmp_path):
    coll = cluster_client[unique_name].docs
    gate = tmp_path / "open"
    try:
        coll.create_model("gate", testmodels.Gate(str(gate), timeout=WAIT), key="x").wait(WAIT)
        result = coll.insert_many([{"x": i} for i in range(5)])
        (job,) = result.jobs

        def running_on():
            record = job.record()
            return record.get("worker") if record["status"] == "running" else None

        victim = poll(running_on, WAIT, "the job to start")
        name = scheduler_workers(dask_cli_cluster.address)[victim]["name"]
        survivors = {w["name"] for w in scheduler_workers(dask_cli_cluster.address).values()} - {name}
        assert survivors, "needs a second worker"
        procs = dask_cli_cluster.procs
        procs.snapshot()
        assert len(procs.alive(name)) >= 2  # the dask worker CLI (nanny) and its worker process
        assert procs.stop(name) == 0  # SIGTERM: the worker closes mid-job
        poll(lambda: not procs.alive(name), STOP, f"every process of worker {name} to exit")
        poll(lambda: (job.record().get("worker") not in (None, victim)) or None, WAIT,
             "the job to be restarted on another worker")
    finally:
        gate.write_text("open")
    job.wait(WAIT)
    record = job.record()
    assert record["status"] == "success" and record["worker"] != victim
    assert sorted(d["_outputs"]["x"]["gate"] for d in coll.find({}, {"_outputs": 1})) == list(range(5))


# -- 3. supervisord with deploy/supervisord.conf and the original config.json --------------------
def test_supervisord_with_original_config(server_uri, unique_name, tmp_path):
    supervisord = shutil.which("supervisord", path=str(BIN)) or shutil.which("supervisord")
    if supervisord is None:
        pytest.skip("supervisor is not installed (pip install supervisor)")
    shutil.copy(REPO / "deploy" / "supervisord.conf", tmp_path / "supervisord.conf")
    (tmp_path / "logs").mkdir()
    jobs_port, master_port = free_port(), free_port()
    parts = urlsplit(server_uri)
    simple = parts.hostname and parts.port and not parts.username and parts.path in ("", "/") and not parts.query
    mongodb = {"host": parts.hostname, "port": parts.port} if simple else {"uri": server_uri}
    (tmp_path / "config.json").write_text(json.dumps({
        "remote": True,
        "master": {"host": "127.0.0.1", "port": master_port},
        "jobs": {"host": "127.0.0.1", "port": jobs_port},
        "redis": {"host": "localhost", "port": 6379},
        "mongodb": mongodb,
    }))
    address = f"tcp://127.0.0.1:{jobs_port}"
    procs = Processes(tmp_path / "test-logs")
    env = cluster_env()
    try:
        t0 = time.perf_counter()
        procs.start("supervisord", [supervisord, "-n", "-c", str(tmp_path / "supervisord.conf")], env=env, cwd=tmp_path)

        def ready():
            assert procs.started["supervisord"].poll() is None, procs.log("supervisord")
            with contextlib.suppress(OSError, TimeoutError):
                workers = scheduler_workers_quick(address)
                return workers if len(workers) == 3 else None
            return None

        workers = poll(ready, START, "supervisord's scheduler and three workers", interval=0.5)
        started = time.perf_counter() - t0
        master = workers[f"tcp://127.0.0.1:{master_port}"]
        assert master["resources"] == {"MASTER": 1.0} and master["name"] == "master"
        assert sorted(w["name"] for w in workers.values()) == ["jobs-worker-0", "jobs-worker-1", "master"]
        procs.snapshot()

        summary = run_scenario(unique_name, cwd=tmp_path, env=env)  # client configured by ./config.json only
        assert summary["cluster"] == address
        assert "'redis' section is ignored" in summary["stderr"]

        logs = tmp_path / "logs"
        assert "ready: scheduler" in (logs / "jobs-master.out").read_text()
        assert "resources {'MASTER': 1.0}" in (logs / "master.out").read_text()
        assert "ready: worker" in (logs / "jobs-worker_0.out").read_text()

        t1 = time.perf_counter()
        assert procs.stop("supervisord") == 0
        stopped = time.perf_counter() - t1
        procs.assert_all_gone()
        print(f"supervisord: started in {started:.1f} s, scenario {summary['total']:.1f} s {summary['timings']}, "
              f"stopped in {stopped:.1f} s; jobs {summary['job_seconds']}")
    finally:
        procs.kill_all()


def scheduler_workers_quick(address: str) -> dict:
    with distributed.Client(address, timeout=2, set_as_default=False) as client:
        return client.scheduler_info(n_workers=-1)["workers"]
