"""The write position, snapshot files and digests, in-process (the embedded store, no cluster)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from bson import ObjectId

import superduperdb
from superduperdb.index import snapfile
from superduperdb.index.checksums import row_checksums
from superduperdb.index.persist import decode_ids, encode_ids
from superduperdb.store import digests
from superduperdb.store.partitions import partition_of
from superduperdb.store.positions import (
    Position,
    Positions,
    SafePosition,
    lost_reason,
    stamp_replacement,
    stamp_update,
)


@pytest.fixture
def docs(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None, config={"master.warm_up": False})
    yield client[unique_name].docs
    client.close()


def test_library_writes_carry_a_growing_position_and_deletes_leave_tombstones(docs):
    caller = {"x": 1}
    docs.insert_one(caller)
    assert "_sdb" not in caller  # the caller's dict gets its _id (as pymongo), never the bookkeeping
    first = docs.raw.find_one({"_id": caller["_id"]})["_sdb"]
    assert first["part"] == partition_of(caller["_id"])
    inserted = docs.insert_many([{"x": i} for i in range(3)]).inserted_ids
    docs.update_one({"x": 1}, {"$set": {"_outputs.x.m": 5}})  # writes an output: a new number
    assert docs.raw.find_one({"_id": caller["_id"]})["_sdb"]["seq"] > first["seq"]
    unchanged = docs.update_one({"x": 1}, {"$set": {"x": 1}})
    assert unchanged.modified_count == 0  # an update that changes nothing still says so
    docs.delete_one({"x": 2})
    changed, gone = Positions(docs.raw).changed_since(first["seq"])
    assert {d["_id"] for d in changed} == {caller["_id"], *inserted} - {inserted[2]}  # x == 2 was deleted
    assert gone == []  # tombstones only where an index must forget a document (none here)
    assert "_sdb" not in docs.find_one({"_id": caller["_id"]})
    assert "_sdb" in docs.find_one({"_id": caller["_id"]}, raw=True)


def test_upserts_and_replacements_keep_or_get_their_bookkeeping(docs):
    docs.update_one({"k": 1}, {"$set": {"v": 1}}, upsert=True)
    up = docs.raw.find_one({"k": 1})
    assert up["_sdb"]["part"] == partition_of(up["_id"])
    docs.replace_one({"k": 1}, {"k": 1, "v": 2})
    assert docs.raw.find_one({"k": 1})["_sdb"] == up["_sdb"]  # no output written: the same number
    assert stamp_replacement({"a": 1, "_outputs": {}}, 9, up)["_sdb"]["seq"] == 9


def test_stamping_leaves_other_updates_alone():
    assert stamp_update({"$set": {"a": 1}}, 3) == {"$set": {"a": 1}}
    assert stamp_update({"$unset": {"_outputs.x.m": ""}}, 3) == {"$unset": {"_outputs.x.m": ""}, "$set": {"_sdb.seq": 3}}
    assert stamp_update([{"$set": {"a": 1}}], 3) == [{"$set": {"a": 1}}]


def test_a_position_is_lost_when_the_counter_restarts_or_tombstones_are_trimmed():
    assert lost_reason(Position("e", 5), Position("e", 9)) is None
    assert "epoch" in lost_reason(Position("e", 5), Position("f", 9))
    assert "trimmed" in lost_reason(Position("e", 5), Position("e", 9, trimmed=7))
    assert "ahead" in lost_reason(Position("e", 50), Position("e", 9))
    assert lost_reason(None, Position("e", 1)) is not None


def test_a_position_becomes_safe_one_lag_after_it_was_seen():
    safe = SafePosition(Position("e", 1), lag=0.05)
    safe.observe(Position("e", 10))
    safe.read_completed(time.monotonic())  # a read that began right away: not yet
    assert safe.safe().seq == 1
    deadline = time.monotonic() + 5
    while not safe.ripe(time.monotonic()) and time.monotonic() < deadline:
        time.sleep(0.01)  # the lag itself is what is tested
    safe.read_completed(time.monotonic())
    assert safe.safe().seq == 10


@pytest.mark.parametrize("ids", [[1, 2, 3], [ObjectId(), ObjectId()], ["a", "b"], [1, "a", ObjectId(), 2.5]])
def test_ids_travel_as_plain_data(ids):
    kind, value = encode_ids(ids)
    assert decode_ids(kind, value).tolist() == ids


def test_a_snapshot_file_names_the_part_that_fails():
    data = snapfile.write({"m": 1}, {"a": np.arange(10, dtype="float32"), "b": {"k": [1, 2]}})
    assert snapfile.read(data).parts["b"] == {"k": [1, 2]}
    with pytest.raises(snapfile.SnapshotCorrupt) as info:
        snapfile.read(data[:-100])
    assert info.value.part in ("a", "b")
    bad = bytearray(data)
    bad[snapfile.read_header(data)[1]["a"]["offset"]] ^= 1
    with pytest.raises(snapfile.SnapshotCorrupt, match="'a' fails its checksum"):
        snapfile.read(bytes(bad))
    with pytest.raises(snapfile.SnapshotCorrupt, match="magic"):
        snapfile.read(b"not a snapshot at all")


def test_the_embedded_store_keeps_digests_and_they_name_the_partitions_that_changed(docs):
    docs.insert_many([{"i": i} for i in range(200)])
    before = digests.compute(docs.raw)
    assert before.source == "embedded" and sum(c for c, _ in before.buckets.values()) == 200
    assert digests.compute(docs.raw).differ(before) == []
    target = docs.raw.find_one({"i": 7})
    docs.raw.update_one({"_id": target["_id"]}, {"$set": {"i": 700}})  # another program
    docs.raw.insert_one({"i": -1})
    after = digests.compute(docs.raw)
    assert after.differ(before) == [partition_of(target["_id"])]
    assert after.unstamped == 1 and len(after.unstamped_ids) == 1


def test_row_checksums_notice_a_single_flipped_bit():
    X = np.random.default_rng(0).normal(size=(100, 16)).astype("float32")
    sums = row_checksums(X)
    for bit in (0, 22, 30, 31):
        Y = X.copy()
        Y.view("uint32")[42, 5] ^= 1 << bit
        assert np.flatnonzero(row_checksums(Y) != sums).tolist() == [42]


class _Stream:
    """What pymongo's change stream offers: try_next, alive, resume_token, a context manager."""

    def __init__(self, changes: list, error: Exception | None = None) -> None:
        self.changes, self.error, self.alive, self.resume_token = list(changes), error, True, {"_data": "T"}

    def __enter__(self):
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc):
        return False

    def try_next(self):
        return self.changes.pop(0) if self.changes else None


class _Watched:
    def __init__(self, stream: _Stream) -> None:
        self.stream, self.calls = stream, []

    def watch(self, pipeline=None, **kwargs):
        self.calls.append(kwargs)
        return self.stream


def test_a_resume_token_replays_the_changes_and_history_lost_falls_back():
    from pymongo.errors import OperationFailure

    from superduperdb.master import resume

    watched = _Watched(_Stream([{"documentKey": {"_id": 1}}, {"documentKey": {"_id": 2}}, {"documentKey": {"_id": 1}}]))
    assert resume.changed_since(watched, {"_data": "A"}) == ([1, 2], None)
    assert watched.calls[0]["resume_after"] == {"_data": "A"}
    assert resume.current_token(_Watched(_Stream([]))) == {"_data": "T"}
    lost = _Watched(_Stream([], OperationFailure("history lost", code=286)))
    ids, why = resume.changed_since(lost, {"_data": "A"})
    assert ids is None and "history lost" in why
    # the stores here have none: no token, nothing replayed
    client = superduperdb.connect("mongomock://resume-none", cluster=None)
    assert resume.current_token(client.db.docs.raw) is None
    client.close()


def test_with_an_artifact_key_a_snapshots_local_copy_is_checked_against_its_gridfs_signature(tmp_path):
    """A local copy is used only when its bytes are what GridFS's newest snapshot file signs (a copy that
    differs, same length and file id, is rejected naming the signature, before any byte is parsed)."""
    import mongomock

    from superduperdb.errors import ArtifactIntegrityError
    from superduperdb.master import localcopy, snapshots
    from superduperdb.store.artifacts import ArtifactStore

    artifacts = ArtifactStore(mongomock.MongoClient().db, "docs", key="k3y")
    row = {"name": "ix", "uid": "u1"}
    name = snapshots.snapshot_name(row)
    data = b"not a snapshot, but signed"
    artifacts.put_named(name, data)
    info = artifacts.info_named(name)
    artifacts.check_named(name, memoryview(data), info)  # buffers (a memory map) are checked as bytes
    local = tmp_path / "ix.snap"
    localcopy.write(local, b"X" * len(data), info)  # same file id and length, other bytes
    restored, rejected = snapshots.load(artifacts, row, local=local)
    assert restored is None
    assert rejected[0]["where"] == "local copy of the" and "signature" in rejected[0]["reason"], rejected
    assert not local.exists()  # discarded
    with pytest.raises(ArtifactIntegrityError):
        artifacts.check_named(name, b"X" * len(data), info)
