"""One bad document never blocks the rest, in every cluster mode (and on both stores).

``create_model("length", len, key="text")`` over good texts and one ``{"text": 5}``:
every good document gets its output, the bad one is recorded (``list_errors``)
with its ``_id``, and neither model jobs nor the reconciler try it again until
its input changes. ``on_error="raise"`` keeps the all-or-nothing job.
"""

from __future__ import annotations

import logging

import pytest

from superduperdb.errors import JobFailedError, ModelError

WAIT = 180
OUT = "_outputs.text.length"


def test_one_bad_document_among_1001_leaves_1000_outputs_and_one_listed_failure(coll, caplog):
    coll.create_model("length", len, key="text").wait(WAIT)
    docs = [{"i": i, "text": "x" * (i % 7 + 1)} for i in range(1000)]
    docs.insert(617, {"i": -1, "text": 5})
    result = coll.insert_many(docs)
    bad_id = result.inserted_ids[617]
    with caplog.at_level(logging.WARNING, logger="superduperdb.jobs.handles"):
        result.jobs.wait(WAIT)
    (job,) = list(result.jobs)
    assert job.status == "success"
    assert job.result()["failed"] == 1 and job.result()["computed"] == 1000
    told = [r.getMessage() for r in caplog.records if "failed and got no output" in r.getMessage()]
    assert len(told) == 1 and "list_errors('length')" in told[0]

    assert coll.count_documents({OUT: {"$exists": True}}) == 1000
    assert all(d["_outputs"]["text"]["length"] == len(d["text"]) for d in coll.find({"i": {"$gte": 0}}))
    assert "_outputs" not in coll.find_one({"_id": bad_id})

    (error,) = coll.list_errors()
    assert error["document"] == bad_id
    assert (error["model"], error["key"], error["watcher"], error["error"]) == ("length", "text", "length/text",
                                                                               "TypeError")
    assert "has no len()" in error["message"] and "TypeError" in error["traceback"]
    assert "version" in error
    assert error["job_id"] == job.id
    assert coll.list_errors("length") == [error] and coll.list_errors("other") == []

    # The reconciler does not try it again (same input, same model version) ...
    report = coll.reconcile(wait=True, timeout=WAIT).result()
    assert report["outputs_computed"] == 0 and report["outputs_failed"] == 0, report
    assert len(coll.list_errors()) == 1

    # ... until its input changes: a good value is computed and leaves the list.
    coll.update_one({"_id": bad_id}, {"$set": {"text": "fixed"}}).jobs.wait(WAIT)
    assert coll.find_one({"_id": bad_id})["_outputs"]["text"]["length"] == 5
    assert coll.list_errors() == []


def test_a_job_whose_every_document_fails_fails_and_records_them(coll):
    coll.create_model("length", len, key="text").wait(WAIT)
    result = coll.insert_one({"text": 5})
    with pytest.raises(JobFailedError, match="has no len"):
        result.jobs.wait(WAIT)
    (error,) = coll.list_errors("length")
    assert error["document"] == result.inserted_id
    report = coll.reconcile(wait=True, timeout=WAIT).result()
    assert report["outputs_failed"] == 0 and report["outputs_computed"] == 0, report
    assert coll.clear_errors("length") == 1
    report = coll.reconcile(wait=True, timeout=WAIT).result()  # cleared: tried (and recorded) once more
    assert report["outputs_failed"] == 1, report
    assert len(coll.list_errors()) == 1
    coll.delete_many({})  # a deleted document leaves the list at the next full pass
    coll.reconcile(wait=True, timeout=WAIT).result()
    assert coll.list_errors() == []


def test_on_error_raise_keeps_all_or_nothing(coll):
    coll.create_model("length", len, key="text", on_error="raise").wait(WAIT)
    result = coll.insert_many([{"text": "a"}, {"text": 5}, {"text": "bc"}])
    with pytest.raises(JobFailedError, match="has no len"):
        result.jobs.wait(WAIT)
    assert coll.list_errors() == []
    assert coll.count_documents({OUT: {"$exists": True}}) == 0


def test_on_error_is_checked_before_anything_is_stored(coll):
    with pytest.raises(ModelError, match="on_error"):
        coll.create_model("length", len, key="text", on_error="ignore")
    assert coll.list_models() == [] and coll.list_watchers() == []
