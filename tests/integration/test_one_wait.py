"""One wait: ``Collection.watch_job`` is ``Job.wait`` streaming the job's log lines, with the same
timeout default and the same detection of a job whose task the cluster lost."""

from __future__ import annotations

import logging
import time

import dask
import pymongo
import pytest
import testmodels

import superduperdb
from superduperdb.errors import JobFailedError, JobTimeoutError

pytestmark = pytest.mark.integration

WAIT = 120


def test_watch_job_ends_at_once_when_the_worker_running_the_job_dies(server_uri, unique_name, tmp_path):
    """The job's worker dies and Dask gives up on it: watch_job (a handle without the job's future,
    from its id) fails at once, as wait() does, instead of spinning until its timeout."""
    import distributed  # noqa: F401  (loads its config, which the override below must not replace)

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):  # read when the scheduler starts
        client = superduperdb.connect(server_uri, cluster="local",
                                      config={"master.warm_up": False, "reconcile.interval": 0})
        client.cluster.client  # noqa: B018  (started under the override)
    try:
        coll = client[unique_name].docs
        coll.create_model("die_once", testmodels.DieOnce(str(tmp_path / "died")))
        coll.create_watcher("die_once", "v").wait(WAIT)
        job_id = coll.insert_one({"v": 4}).jobs[0].id  # the result, and with it the job's future, dropped
        start = time.monotonic()
        with pytest.raises(JobFailedError, match="lost: its task is no longer on the cluster"):
            coll.watch_job(job_id, timeout=WAIT)
        assert time.monotonic() - start < 60
        assert (tmp_path / "died").exists()
        assert coll.get_job(job_id).status == "failed"
    finally:
        client.close()
        with pymongo.MongoClient(server_uri, serverSelectionTimeoutMS=10_000) as raw:
            raw.drop_database(unique_name)


def test_watch_job_waits_as_long_as_the_config_says(unique_name, tmp_path, caplog):
    """jobs.wait_timeout is watch_job's default timeout, as it is wait()'s (it waited 600 s)."""
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster="local",
                                  config={"master.warm_up": False, "jobs.wait_timeout": 0.5})
    try:
        coll = client[unique_name].docs
        coll.create_model("gate", testmodels.Gate(str(tmp_path / "open"), timeout=30.0))
        coll.create_watcher("gate", "x", active=True).wait(30)
        job = coll.insert_one({"x": 1}).jobs[0]
        start = time.monotonic()
        with pytest.raises(JobTimeoutError):
            coll.watch_job(job.id)
        assert time.monotonic() - start < 10
        (tmp_path / "open").write_text("go")
        job.wait(30)
        other = client[unique_name].other
        other.create_model("shout", testmodels.shout, key="text").wait(30)
        shouting = other.insert_one({"text": "hi"}).jobs[0]
        with caplog.at_level(logging.INFO, logger="superduperdb.jobs"):
            other.watch_job(shouting.id, timeout=30)
        assert any("shouting 'hi'" in r.getMessage() for r in caplog.records)
    finally:
        client.close()
