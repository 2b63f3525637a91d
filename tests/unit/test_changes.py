"""The change feed: what it hands the reconciler from a change stream, and how it falls back.

No stand-in here has change streams (a MongoDB replica set has), so the
stream is a scripted one with pymongo's ``ChangeStream`` interface
(``try_next``, ``alive``, a context manager).
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import mongomock

from superduperdb.master import changes
from superduperdb.master.changes import ChangeFeed, only_derived

TARGET = SimpleNamespace(uri="mongomock://changes", database="db", collection="docs")


class ScriptedStream:
    def __init__(self, events: list) -> None:
        self.events = list(events)
        self.alive = True

    def try_next(self):
        return self.events.pop(0) if self.events else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.alive = False


class Collection:
    def __init__(self, events: list) -> None:
        self.events = events
        self.pipelines: list = []

    def watch(self, pipeline, **kwargs):
        self.pipelines.append(pipeline)
        return ScriptedStream(self.events)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_only_derived_updates_are_the_jobs_own():
    assert only_derived({"updateDescription": {"updatedFields": {"_outputs.x.m": 1, "_fingerprints.x.m": "v1:a"}}})
    assert only_derived({"updateDescription": {"updatedFields": {}, "removedFields": ["_like.near"]}})
    assert not only_derived({"updateDescription": {"updatedFields": {"x": 1, "_outputs.x.m": 2}}})
    assert not only_derived({"updateDescription": {}})


def test_the_feed_hands_over_written_ids_but_not_the_jobs_own_writes(monkeypatch):
    monkeypatch.setattr(changes, "GRACE", 0.0)
    events = [
        {"operationType": "insert", "documentKey": {"_id": 1}},
        {"operationType": "update", "documentKey": {"_id": 2}, "updateDescription": {"updatedFields": {"x": 3}}},
        {"operationType": "update", "documentKey": {"_id": 3},
         "updateDescription": {"updatedFields": {"_outputs.x.m": 1}}},
        {"operationType": "delete", "documentKey": {"_id": 4}},
    ]
    got: list = []
    stop = threading.Event()
    collection = Collection(events)
    feed = ChangeFeed(TARGET, got.extend, stop, collection=collection)
    try:
        wait_for(lambda: sorted(got) == [1, 2, 4])
        assert feed.state == "following"
        assert collection.pipelines == [[{"$match": {"operationType": {"$in": changes.OPERATIONS}}}]]
    finally:
        stop.set()


def test_without_change_streams_the_feed_says_so_and_ends():
    stop = threading.Event()
    feed = ChangeFeed(TARGET, lambda ids: None, stop, collection=mongomock.MongoClient().db.docs)
    wait_for(lambda: feed.state != "starting")
    assert feed.state.startswith("unavailable") and "periodic sweep only" in feed.state
