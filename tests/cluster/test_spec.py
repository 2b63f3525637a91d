"""Fast checks of the cluster command lines and ``info``'s report (no processes started)."""

from __future__ import annotations

import json
import logging

import mongomock
import pytest
from click.testing import CliRunner

from superduperdb.cli import main
from superduperdb.cli.status import format_sections, job_counts
from superduperdb.cluster.spec import PRELOAD, ClusterSpec, load_config


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in [n for n in __import__("os").environ if n.startswith("SUPERDUPERDB_")]:
        monkeypatch.delenv(name)
    return tmp_path


ORIGINAL = {
    "remote": True,
    "master": {"host": "localhost", "port": 5001},
    "jobs": {"host": "localhost", "port": 5002},
    "redis": {"host": "localhost", "port": 6379},
    "mongodb": {"host": "localhost", "port": 27017},
}


def test_original_config_json_maps_onto_the_dask_cluster(here, caplog):
    path = here / "elsewhere.json"
    path.write_text(json.dumps(ORIGINAL))
    with caplog.at_level(logging.WARNING):
        cfg = load_config(path)
    assert "'redis' section is ignored" in caplog.text
    assert cfg.cluster.address == "tcp://localhost:5002"
    spec = ClusterSpec.from_config(cfg)
    assert (spec.host, spec.port, spec.master_host, spec.master_port) == ("localhost", 5002, "localhost", 5001)
    scheduler = spec.scheduler_command()
    assert scheduler[1:4] == ["-m", "dask", "scheduler"]
    assert scheduler[scheduler.index("--port") + 1] == "5002" and PRELOAD in scheduler
    master = spec.worker_command(master=True)
    assert master[4] == "tcp://localhost:5002"
    assert master[master.index("--resources") + 1] == "MASTER=1"
    assert master[master.index("--worker-port") + 1] == "5001"
    worker = spec.worker_command(name="w")
    assert "--resources" not in worker and "--worker-port" not in worker and PRELOAD in worker


def test_cluster_address_wins_and_overrides_win_over_both(here):
    (here / "superduperdb.yaml").write_text(
        "cluster:\n  address: tcp://0.0.0.0:9999\n  n_workers: 3\njobs:\n  host: other\n  port: 1\n")
    spec = ClusterSpec.from_config(load_config())
    assert (spec.host, spec.port, spec.n_workers) == ("0.0.0.0", 9999, 3)
    assert spec.address == "tcp://127.0.0.1:9999"
    assert "--host" not in spec.worker_command()  # all interfaces: Dask picks the address to advertise
    spec = ClusterSpec.from_config(load_config(), host="127.0.0.1", port=0, n_workers=1)
    assert (spec.host, spec.port, spec.n_workers) == ("127.0.0.1", 0, 1)


def test_defaults_without_any_config(here):
    spec = ClusterSpec.from_config(load_config())
    assert spec.address == "tcp://127.0.0.1:8786" and spec.master_port is None and spec.resource == "MASTER"


def test_scheduler_and_worker_commands_dry_run(here):
    (here / "config.json").write_text(json.dumps(ORIGINAL))
    runner = CliRunner()
    out = runner.invoke(main, ["scheduler", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "dask scheduler --host localhost --port 5002 --preload superduperdb.cluster.preload" in out.output
    out = runner.invoke(main, ["worker", "--master", "--dry-run", "--", "--memory-limit", "1GB"])
    assert out.exit_code == 0, out.output
    line = out.output.strip().splitlines()[-1]
    assert "worker tcp://localhost:5002" in line and "--resources MASTER=1 --worker-port 5001" in line
    assert line.endswith("--memory-limit 1GB")


def test_missing_config_file_is_a_clear_error(here):
    out = CliRunner().invoke(main, ["local-cluster", "--config", "nope.json"])
    assert out.exit_code == 1 and "nope.json" in out.output and "does not exist" in out.output


def test_job_counts_and_text_report():
    client = mongomock.MongoClient()
    client.shop["docs._jobs"].insert_many([{"status": "success"}, {"status": "success"}, {"status": "failed"}])
    client.shop["docs"].insert_one({"x": 1})
    counts = job_counts(client, client.list_database_names())
    assert counts == {"shop.docs": {"success": 2, "failed": 1}}
    report = {
        "database": {"uri": "mongodb://x/"},
        "cluster": {"address": "tcp://h:1", "worker list": {
            "tcp://h:2": {"name": "master", "threads": 1, "memory limit": "1.0 GiB", "executing": 0,
                          "resources": {"MASTER": 1.0}, "preload": True}}},
        "master": {"state": "running", "worker": "tcp://h:2", "up": "0:00:10", "indexes": [
            {"index": "idx", "collection": "shop.docs", "size": 10, "dim": 4, "tail": 10, "graph_size": 0,
             "deleted": 0, "builds": 0, "last_build_seconds": None, "building": False}],
            "generation": 2,
            "reconciler": {"shop.docs": {"interval": 10.0, "change_stream": "following", "at": 0.0, "ago": 3.2,
                                         "seconds": 0.25,
                                         "report": {"documents_checked": 10, "outputs_computed": 4, "jobs_lost": 0}},
                           "shop.other": {"interval": 10.0},
                           "shop.down": {"interval": 5.0, "at": 0.0, "ago": 1, "seconds": 5.0,
                                         "error": "ServerSelectionTimeoutError: no server"}}},
        "jobs": counts,
    }
    text = "\n".join(format_sections(report))
    assert "worker tcp://h:2  name=master" in text and "resources: MASTER=1" in text
    assert "index 'idx' of shop.docs: size 10, dim 4, tail 10 (exact search), graph 0" in text
    assert "last build none yet" in text
    assert "generation             2" in text
    assert "reconciler shop.docs: change stream and every 10 s, last pass 0:00:03 ago, took 0.25 s: outputs_computed 4" in text
    assert "reconciler shop.other: every 10 s, no pass yet" in text
    assert "reconciler shop.down: every 5 s, last pass 0:00:01 ago, took 5.00 s, failed: ServerSelection" in text
    assert "shop.docs" in text and "failed 1, success 2" in text
