"""Restarts of the master in every cluster mode: catch-up from the write position, other programs'
writes found by the digests, a lost position, snapshots and local copies that fail their checks.

Each test takes a snapshot, changes the collection, restarts the master (its worker process killed
with worker processes; the index dropped from memory otherwise) and checks every answer against
exact search over what the collection holds.
"""

from __future__ import annotations

import bson
import numpy as np
import pytest
import testmodels
from waiting import poll

from superduperdb.index import snapfile
from superduperdb.master import localcopy
from superduperdb.master.snapshots import snapshot_name
from superduperdb.store.positions import Positions

WAIT = 120
DIM = 8
N = 120


@pytest.fixture
def indexed(client, unique_name):
    coll = client[unique_name].docs
    X = np.random.default_rng(11).normal(size=(N, DIM)).astype("float32")
    coll.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    coll.create_model("ident", testmodels.identity)
    coll.create_semantic_index("vectors", models=["ident"], keys=["x"]).wait(WAIT)
    indexes = coll._services.indexes
    yield coll, indexes.master, indexes.get("vectors"), coll._services.scope.target
    client.drop_database(unique_name)


def stats_of(master, coll) -> dict:
    return [s for s in master.stats() if s["index"] == "vectors" and s["collection"] == f"{coll.database.name}.docs"][0]


def restart(client, master, target, row) -> None:
    """A new master (worker processes: its worker killed) or the index dropped from memory (else)."""
    if client.mode == "processes":
        address = master.worker()
        client.cluster.client.run(testmodels.exit_process, workers=[address], wait=False)
        poll(lambda: address not in client.cluster.client.nthreads(), WAIT, "the master's worker to go")
    else:
        master.drop(target, row)


def present(coll) -> dict:
    """``{_id: output vector}`` of every document with an indexed output (read raw, as another program)."""
    return {d["_id"]: np.asarray(coll._types.decode(d)["_outputs"]["x"]["ident"], dtype="float32")
            for d in coll.raw.find({"_outputs.x.ident": {"$exists": True}})}


def assert_exact(coll, master, target, row, queries: int = 6) -> None:
    """The index holds exactly the documents with outputs (0 missing, 0 ghosts), and answers exactly."""
    truth = present(coll)
    coll.find_one(like={"x": np.ones(DIM, "float32")})  # loads the index if it is not
    assert stats_of(master, coll)["size"] == len(truth)
    held = master.vectors_of(target, row, list(truth))
    missing = [i for i, v in zip(truth, held) if v is None]
    assert not missing, f"{len(missing)} documents missing from the index"
    ids = list(truth)
    M = np.stack([truth[i] for i in ids])
    Mn = M / np.linalg.norm(M, axis=1, keepdims=True)
    for q in np.random.default_rng(5).normal(size=(queries, DIM)).astype("float32"):
        scores = Mn @ (q / np.linalg.norm(q))
        best = np.sort(scores)[::-1][:5]
        found = list(coll.find(like={"x": q}, n=5))
        # (copies hold equal vectors: compare scores, and that each id found has its score)
        np.testing.assert_allclose([d["_score"] for d in found], best, rtol=1e-4, atol=1e-5)
        for d in found:
            assert scores[ids.index(d["_id"])] == pytest.approx(d["_score"], rel=1e-4, abs=1e-5)


def test_library_writes_and_deletes_are_caught_up_from_the_position(client, indexed):
    coll, master, row, target = indexed
    master.snapshot(target, row)
    coll.insert_many([{"x": np.arange(DIM, dtype="float32") * (k + 1) - k, "i": 500 + k} for k in range(5)]).jobs.wait(WAIT)
    coll.update_many({"i": {"$lt": 4}}, {"$set": {"x": np.ones(DIM, "float32")}}).jobs.wait(WAIT)
    coll.replace_one({"i": 10}, {"i": 10, "x": -np.ones(DIM, "float32")}).jobs.wait(WAIT)
    coll.delete_many({"i": {"$in": [20, 21, 22]}}).jobs.wait(WAIT)
    restart(client, master, target, row)
    assert coll.find_one(like={"x": -np.ones(DIM, "float32")})["i"] == 10
    catch_up = stats_of(master, coll)["catch_up"]
    assert catch_up["mode"] == "position", catch_up
    assert catch_up["removed"] == 3 and catch_up["upserted"] == 5 + 4 + 1, catch_up
    assert catch_up["as_of"]["behind"] > 0
    assert_exact(coll, master, target, row)


def test_plain_pymongo_writes_while_the_master_is_down_are_all_searchable(client, indexed):
    """Another program inserts (copies, whose stale bookkeeping names another partition), updates
    outputs and deletes while no master runs: after the restart, 0 missing and 0 ghosts."""
    coll, master, row, target = indexed
    master.snapshot(target, row)
    if client.mode == "processes":  # the master is down while the other program writes
        address = master.worker()
        client.cluster.client.run(testmodels.exit_process, workers=[address], wait=False)
        poll(lambda: address not in client.cluster.client.nthreads(), WAIT, "the master's worker to go")
    else:
        master.drop(target, row)
    raw = coll.raw
    for k in range(8):
        copy = raw.find_one({"i": k})
        copy.update(_id=bson.ObjectId(), i=1000 + k)
        raw.insert_one(copy)
    for k in range(30, 35):  # take another document's output and input
        src = raw.find_one({"i": k + 50}, {"x": 1, "_outputs": 1, "_fingerprints": 1})
        raw.update_one({"i": k}, {"$set": {"x": src["x"], "_outputs": src["_outputs"],
                                           "_fingerprints": src["_fingerprints"]}})
    raw.delete_many({"i": {"$in": [40, 41, 42, 43]}})
    coll.find_one(like={"x": np.ones(DIM, "float32")})  # the new master loads and catches up
    poll(lambda: (stats_of(master, coll)["catch_up"] or {}).get("digests"), WAIT, "the digests to be checked")
    found = stats_of(master, coll)["catch_up"]["digests"]
    assert found["upserted"] == 8 + 5 and found["removed"] == 4, found
    assert_exact(coll, master, target, row)


def test_a_lost_position_falls_back_to_a_full_resync(client, indexed):
    coll, master, row, target = indexed
    master.snapshot(target, row)
    coll.delete_many({"i": {"$in": [1, 2]}}).jobs.wait(WAIT)
    coll.insert_one({"x": np.full(DIM, 3.0, "float32"), "i": 999}).jobs.wait(WAIT)
    positions = Positions(coll.raw)
    positions.trim(positions.current().seq)  # tombstones gone past the snapshot's position
    restart(client, master, target, row)
    assert coll.find_one(like={"x": np.full(DIM, 3.0, "float32")})["i"] == 999
    catch_up = stats_of(master, coll)["catch_up"]
    assert catch_up["mode"] == "full" and "trimmed" in catch_up["reason"], catch_up
    assert_exact(coll, master, target, row)

    master.snapshot(target, row)  # a new snapshot holds a position of the same counter
    coll.raw.database[f"{coll.raw.name}._positions"].drop()  # the counter itself is lost: a new epoch
    coll.delete_one({"i": 5}).jobs.wait(WAIT)
    restart(client, master, target, row)
    coll.find_one(like={"x": np.ones(DIM, "float32")})
    catch_up = stats_of(master, coll)["catch_up"]
    assert catch_up["mode"] == "full" and "epoch" in catch_up["reason"], catch_up
    assert_exact(coll, master, target, row)


def test_the_local_copy_is_used_and_a_corrupt_one_is_ignored(client, indexed):
    coll, master, row, target = indexed
    master.snapshot(target, row)
    path = localcopy.path_for(localcopy.folder(coll._services.scope.config.master.snapshot_dir), target, row)
    assert path.exists()
    restart(client, master, target, row)
    coll.find_one(like={"x": np.ones(DIM, "float32")})
    stats = stats_of(master, coll)
    assert stats["source"] == "snapshot" and stats["catch_up"]["snapshot_from"] == "local", stats["catch_up"]

    data = bytearray(path.read_bytes())
    offset = snapfile.read_header(bytes(data))[1]["vectors"]["offset"]
    data[offset + 7] ^= 0x40  # one flipped exponent bit in the first vector
    path.write_bytes(bytes(data))
    restart(client, master, target, row)
    coll.find_one(like={"x": np.ones(DIM, "float32")})
    stats = stats_of(master, coll)
    assert stats["source"] == "snapshot" and stats["catch_up"]["snapshot_from"] == "gridfs", stats["catch_up"]
    rejected = stats["snapshot_rejected"]
    assert rejected and rejected[0]["part"] == "vectors" and "local copy" in rejected[0]["where"], rejected
    assert_exact(coll, master, target, row)


def _rot(data: bytes) -> bytes:
    """25 vectors with one flipped exponent bit each (their checksum no longer matches)."""
    out = bytearray(data)
    entry = snapfile.read_header(data)[1]["vectors"]
    for r in range(25):
        out[entry["offset"] + r * DIM * 4 + 3] ^= 0x20
    return bytes(out)


def _inconsistent(data: bytes) -> bytes:
    """Valid checksums, but fewer ids than rows."""
    snap = snapfile.read(data)
    parts = {k: (np.array(v) if hasattr(v, "dtype") else (bytes(v) if isinstance(v, memoryview) else v))
             for k, v in snap.parts.items()}
    parts["ids"] = parts["ids"][:-3]
    return snapfile.write(snap.manifest, parts)


def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


@pytest.mark.parametrize("damage", [_rot, _inconsistent, _truncated], ids=["rotted", "inconsistent", "truncated"])
def test_a_snapshot_that_fails_a_check_is_replaced_by_a_rebuild(client, indexed, damage):
    coll, master, row, target = indexed
    master.snapshot(target, row)
    artifacts = coll._services.scope.artifacts
    data, _ = artifacts.get_named(snapshot_name(row))
    bad = artifacts.put_named(snapshot_name(row), damage(data))  # the newest version (the local copy is older)
    restart(client, master, target, row)
    assert_exact(coll, master, target, row)
    stats = stats_of(master, coll)
    assert stats["source"] == "database" and stats["snapshot_rejected"], stats
    # the bad snapshot is replaced by a new one (an index loaded from the documents saves one at once)
    poll(lambda: _readable_snapshot(artifacts, row) and artifacts.info_named(snapshot_name(row))["_id"] != bad, WAIT,
         "a new snapshot")


def _readable_snapshot(artifacts, row) -> bool:
    try:  # (a version may be pruned while it is read: a newer one was saved)
        found = artifacts.get_named(snapshot_name(row))
        return found is not None and snapfile.read(found[0]) is not None
    except Exception:  # noqa: BLE001 - not yet
        return False


def test_a_reconcile_pass_over_an_unchanged_collection_reads_no_documents(client, indexed):
    coll, master, row, target = indexed
    coll.reconcile(wait=True, timeout=WAIT).result()
    again = coll.reconcile(wait=True, timeout=WAIT).result()
    assert again["digest_partitions"] == 0 and again["documents_checked"] == 0, again
    coll.raw.update_one({"i": 7}, {"$set": {"x": [9.0] * DIM}})  # another program changes one document
    third = coll.reconcile(wait=True, timeout=WAIT).result()
    assert third["digest_partitions"] == 1 and third["outputs_computed"] == 1 and third["index_upserted"] == 1, third
    assert third["documents_checked"] < N
    assert coll.find_one(like={"x": np.full(DIM, 9.0, "float32")})["i"] == 7


def test_a_vector_that_rots_in_memory_is_found_and_repaired(client, indexed):
    """The master checks its vectors against their checksums (before each snapshot and in each
    reconcile pass), so memory that rotted is re-read from the documents, never saved."""
    if client.mode != "inline":
        pytest.skip("reaches into the master's memory: only in this process")
    coll, master, row, target = indexed
    coll.find_one(like={"x": np.ones(DIM, "float32")})
    loaded = next(v for v in master.actor._indexes.values() if v.row["uid"] == row["uid"])
    for _id in list(loaded.index._where)[:3]:
        segment, row_number = loaded.index._where[_id]
        segment.vectors[row_number, 0] *= -1e6  # what flipped bits do to a float
    report = coll.reconcile(wait=True, timeout=WAIT).result()
    assert report["index_rotted"] == 3, report
    assert_exact(coll, master, target, row)


@pytest.mark.slow
def test_a_query_while_the_index_loads_waits_or_says_how_far_it_got(unique_name):
    """A query during a long load is answered within its timeout or raises IndexLoadingError (a
    TimeoutError) with the load's phase and progress; the load goes on, and later queries are exact."""
    import superduperdb
    from superduperdb.errors import IndexLoadingError
    from superduperdb.store.layout import fingerprint

    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None,
                                  config={"master.warm_up": False, "cluster.timeout": 0.5, "reconcile.interval": 0,
                                          "master.snapshot_interval": 0})
    coll = client[unique_name].docs
    coll.create_model("ident", testmodels.identity, key="i")
    coll.create_semantic_index("vectors", models=["ident"], keys=["i"]).wait(WAIT)
    X = np.random.default_rng(3).normal(size=(60_000, DIM)).astype("float32")
    version = coll._services.scope.metadata.get("models", "ident").get("version")
    for start in range(0, len(X), 10_000):
        coll.insert_many([{"_id": i, "i": i, "_outputs": {"i": {"ident": X[i]}},
                           "_fingerprints": {"i": {"ident": fingerprint(version, i)}}}
                          for i in range(start, start + 10_000)], refresh=False)
    indexes = coll._services.indexes
    indexes.master.drop(coll._services.scope.target, indexes.get("vectors"))
    try:
        first = coll.find_one(like={"_id": 5})
        assert first["_id"] == 5
    except IndexLoadingError as exc:
        assert isinstance(exc, TimeoutError) and exc.phase in ("snapshot", "documents", "catch-up", "starting")
        assert exc.elapsed > 0 and "still loading" in str(exc)
    found = poll(lambda: _quiet_find(coll, 5), WAIT, "the load to finish")
    assert found["_id"] == 5
    client.close()


def _quiet_find(coll, _id):
    from superduperdb.errors import IndexLoadingError

    try:
        return coll.find_one(like={"_id": _id})
    except IndexLoadingError:
        return None
