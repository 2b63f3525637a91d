"""Jobs whose user code raises ``BaseException`` subclasses, in every cluster mode.

A model calling ``sys.exit``, raising ``KeyboardInterrupt`` or another
``BaseException`` ends its job ``failed`` (error and worker traceback in the
record), its dependents are recorded as not run, ``wait`` raises
:class:`JobFailedError` at once, and the cluster and client stay usable.
Inline, a ``KeyboardInterrupt`` is recorded and then re-raised (Ctrl-C must
still stop the caller); a ``SystemExit`` from a model is only recorded.
"""

from __future__ import annotations

import time

import pytest
import testmodels

from superduperdb.errors import JobFailedError

WAIT = 120
PROMPT = 60  # far below jobs.wait_timeout; a job left `running` would exceed it


@pytest.fixture(scope="module")
def client(mode_client):
    return mode_client


@pytest.fixture
def db(client, unique_name):
    yield client[unique_name]
    client.drop_database(unique_name)


CASES = [
    ("exits", testmodels.exits, "SystemExit: exiting on 5"),
    ("interrupts", testmodels.interrupts, "KeyboardInterrupt: interrupted on 5"),
    ("ouch", testmodels.ouch, "Ouch: ouch on 5"),
]


@pytest.mark.parametrize("name,model,error", CASES, ids=[c[0] for c in CASES])
def test_base_exception_fails_the_job_and_spares_the_cluster(client, db, name, model, error):
    coll = db.docs
    coll.create_model(name, model, key="x").wait(WAIT)
    coll.create_model(f"after_{name}", testmodels.norm)
    coll.create_watcher(f"after_{name}", "x", features={"x": name}).wait(WAIT)

    if client.mode == "inline" and name == "interrupts":
        # Inline, the job runs in the caller: Ctrl-C must still interrupt it.
        with pytest.raises(KeyboardInterrupt):
            coll.insert_one({"x": 5})
        (record,) = coll.list_jobs(status="failed")
        assert record["model"] == name and record["error"] == error
        assert "testmodels.py" in record["traceback"] and "KeyboardInterrupt" in record["traceback"]
        assert not [r for r in coll.list_jobs() if r["status"] in ("pending", "running")]
    else:
        result = coll.insert_one({"x": 5})
        started = time.monotonic()
        with pytest.raises(JobFailedError) as info:
            result.jobs.wait(WAIT)
        assert time.monotonic() - started < PROMPT
        assert info.value.error == error
        assert "testmodels.py" in info.value.remote_traceback
        job = result.jobs[0]
        assert job.status == "failed"
        assert job.record()["traceback"] == info.value.remote_traceback
        with pytest.raises(JobFailedError, match="did not run"):
            result.jobs[1].wait(WAIT)
        assert result.jobs[1].status == "failed"

    # The cluster and the client are still usable: a following insert's jobs succeed.
    other = db.other
    other.create_model(f"norm_{name}", testmodels.norm, key="x").wait(WAIT)
    jobs = other.insert_one({"x": [3.0, 4.0]}).jobs
    jobs.wait(WAIT)
    assert all(j.status == "success" for j in jobs)
    assert other.find_one({})["_outputs"]["x"][f"norm_{name}"] == pytest.approx(5.0)


def test_inline_system_exit_is_recorded_not_raised(inline_client, unique_name):
    coll = inline_client[unique_name].docs
    coll.create_model("exits", testmodels.exits, key="x").wait(WAIT)
    result = coll.insert_one({"x": 5})  # no SystemExit escapes
    with pytest.raises(JobFailedError, match="SystemExit"):
        result.jobs.wait(WAIT)
