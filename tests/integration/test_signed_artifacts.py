"""Signed artifacts (``security.artifact_key``), in every cluster mode, through the public API.

An attacker with write access to the database (and without the key) stores a
pickle that, when loaded, creates a folder (the canary, ``tests/canary.py``),
and points a model at it, or forges a signature, or copies a signed reference
to another model, or replaces an index snapshot. Each is refused with
``ArtifactIntegrityError`` naming the artifact, on the client and in the jobs
on the workers, and the canary never appears. Signed artifacts load and run
as before; a database written without a key is signed by
``superduperdb sign-artifacts`` after review, and the key is never stored in
the database, job records or shown.
"""

from __future__ import annotations

import pickle
import uuid

import gridfs
import numpy as np
import pytest
import testmodels
from canary import canary_pickle, plant, point_model_at
from click.testing import CliRunner

import superduperdb
from superduperdb.cli import main
from superduperdb.errors import ArtifactIntegrityError, JobFailedError
from superduperdb.master.snapshots import snapshot_name

pytestmark = pytest.mark.integration

KEY = f"artifact-key-{uuid.uuid4().hex}"
WAIT = 120


@pytest.fixture(scope="module", params=["inline", "threads", "processes"])
def client(request):
    name = f"s{uuid.uuid4().hex[:8]}"
    config = {"master.warm_up": False, "security.artifact_key": KEY}
    if request.param == "inline":
        client = superduperdb.connect(f"mongomock://{name}", cluster=None, config=config)
    elif request.param == "threads":
        client = superduperdb.connect(f"mongomock://{name}", cluster="local", config=config)
    else:
        client = superduperdb.connect(request.getfixturevalue("server_uri"), cluster="local", config=config)
    client.mode = request.param
    yield client
    client.close()


@pytest.fixture
def coll(client, unique_name):
    yield client[unique_name].docs
    client.drop_database(unique_name)


def failed_job_error(result) -> JobFailedError:
    with pytest.raises(JobFailedError) as info:
        result.jobs.wait(WAIT)
    return info.value


def test_signed_models_run_and_planted_artifacts_never_load(client, coll, tmp_path):
    coll.create_model("ident", testmodels.identity)
    coll.create_watcher("ident", "x").wait(WAIT)
    first = coll.insert_one({"x": np.array([1.0, 2.0])})
    first.jobs.wait(WAIT)
    assert np.allclose(coll.find_one({"_id": first.inserted_id})["_outputs"]["x"]["ident"], [1.0, 2.0])
    row = coll.raw.database[f"{coll.name}._models"].find_one({"name": "ident"})
    assert row["artifact"]["signature"]["name"] == "models/ident" and len(row["artifact"]["signature"]["hmac"]) == 64

    # 1. An unsigned pickle, the model pointed at it.
    canary = tmp_path / "canary-unsigned"
    point_model_at(coll, "ident", plant(coll, canary_pickle(str(canary))))
    error = failed_job_error(coll.insert_one({"x": np.array([3.0, 4.0])}))
    assert "ArtifactIntegrityError" in error.error and "'models/ident' version 1" in str(error)
    assert "is not signed" in str(error)
    with pytest.raises(ArtifactIntegrityError, match="models/ident"):
        coll.apply_model("ident", [[1.0]])  # the client refuses it too
    assert not canary.exists()

    # 2. A forged signature (another key).
    canary = tmp_path / "canary-forged"
    ref = plant(coll, canary_pickle(str(canary)))
    point_model_at(coll, "ident", {**ref, "signature": {"name": "models/ident", "version": 1, "hmac": "0" * 64}})
    error = failed_job_error(coll.insert_one({"x": np.array([5.0, 6.0])}))
    assert "has a wrong signature" in str(error)
    assert not canary.exists()

    # 3. A signed reference copied from another model: refused as the wrong identity.
    coll.create_model("norm", testmodels.norm)
    norm_ref = coll.raw.database[f"{coll.name}._models"].find_one({"name": "norm"})["artifact"]
    point_model_at(coll, "ident", norm_ref)
    error = failed_job_error(coll.insert_one({"x": np.array([7.0, 8.0])}))
    assert "signed as 'models/norm' version 1" in str(error)

    # 4. A signed composite (attribute model) whose content was changed to reach another attribute.
    point_model_at(coll, "ident", row["artifact"])  # back to its own, signed artifact
    coll.create_model("towers", testmodels.Towers())
    coll.create_model("towers.text")
    assert coll.apply_model("towers.text", ["ab"]) == [2]
    models = coll.raw.database[f"{coll.name}._models"]
    models.update_one({"name": "towers.text"}, {"$set": {"artifact.attribute": "size", "version": 1}})
    with pytest.raises(ArtifactIntegrityError, match="was changed"):
        coll.apply_model("towers.text", ["ab"])
    assert coll.apply_model("ident", [[1.0, 1.0]])[0].tolist() == [1.0, 1.0]  # the signed one loads again


def test_changed_bytes_are_refused_by_workers_that_load_them(client, coll, tmp_path):
    """The bytes of a signed artifact replaced in GridFS (a newer file version under the same digest):
    a process that has not loaded the model yet reads them, and refuses them."""
    if client.mode != "processes":
        pytest.skip("in-process workers hold the object the client registered; they never read the new bytes")
    coll.create_model("norm", testmodels.norm)
    digest = coll.raw.database[f"{coll.name}._models"].find_one({"name": "norm"})["artifact"]["hash"]
    canary = tmp_path / "canary-bytes"
    gridfs.GridFS(coll.raw.database, collection=f"{coll.name}._artifacts").put(canary_pickle(str(canary)),
                                                                               filename=digest)
    coll.insert_one({"x": np.array([3.0, 4.0])})
    with pytest.raises(JobFailedError, match="were changed"):
        coll.create_watcher("norm", "x").wait(WAIT)
    assert not canary.exists()


def test_a_replaced_snapshot_is_refused_and_the_index_loads_from_the_documents(client, coll, tmp_path):
    X = np.random.default_rng(3).normal(size=(40, 4)).astype("float32")
    coll.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    coll.create_model("ident", testmodels.identity)
    coll.create_semantic_index("vectors", models=["ident"], keys=["x"]).wait(WAIT)
    indexes = coll._services.indexes
    master, row, target = indexes.master, indexes.get("vectors"), coll._services.scope.target
    master.snapshot(target, row)
    canary = tmp_path / "canary-snapshot"
    fs = gridfs.GridFS(coll.raw.database, collection=f"{coll.name}._artifacts")
    signed = coll.raw.database[f"{coll.name}._artifacts.files"].find_one({"filename": snapshot_name(row)})
    assert signed["signature"]["name"] == snapshot_name(row)
    # A newer version of the snapshot file, carrying the old signature: its bytes do not match it.
    fs.put(canary_pickle(str(canary)), filename=snapshot_name(row), signature=signed["signature"])
    master.drop(target, row)  # the next query loads the index again: from the snapshot if it could
    assert coll.find_one(like={"x": X[7]})["i"] == 7
    stats = [s for s in master.stats() if s["index"] == "vectors" and s["collection"] == f"{coll.database.name}.docs"]
    assert stats[0]["source"] == "database"
    assert not canary.exists()


def test_the_key_is_never_stored_nor_shown(client, coll):
    coll.create_model("ident", testmodels.identity)
    coll.create_watcher("ident", "x").wait(WAIT)
    coll.insert_one({"x": np.array([1.0])}).jobs.wait(WAIT)
    raw = coll.raw.database
    dumped = b"".join(pickle.dumps(list(raw[name].find({}))) for name in raw.list_collection_names())
    assert KEY.encode() not in dumped
    assert KEY not in repr(client.config) and KEY not in str(client.config.to_dict())
    assert KEY not in repr(coll._services.scope.target)
    assert client.config.security.artifact_key == KEY  # kept, for signing and for the workers
    assert coll._services.scope.target.config["security"]["artifact_key"] == KEY  # the workers receive it


def test_without_a_key_nothing_is_signed_or_checked(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None)
    coll = client[unique_name].docs
    coll.create_model("ident", testmodels.identity)
    assert "signature" not in coll.raw.database[f"{coll.name}._models"].find_one({"name": "ident"})["artifact"]
    assert coll.apply_model("ident", [[2.0]])[0].tolist() == [2.0]
    client.close()


def test_sign_artifacts_signs_a_database_written_without_a_key(server_uri, unique_name, monkeypatch, tmp_path):
    plain = superduperdb.connect(server_uri, cluster=None)
    coll = plain[unique_name].docs
    coll.create_model("ident", testmodels.identity)
    coll.create_model("towers", testmodels.Towers())
    coll.create_model("towers.text")
    coll.create_measure("neg_l1", testmodels.neg_l1)
    plain.close()
    keyed = superduperdb.connect(server_uri, cluster=None, config={"security.artifact_key": KEY})
    with pytest.raises(ArtifactIntegrityError, match="is not signed"):
        keyed[unique_name].docs.apply_model("ident", [[1.0]])

    runner = CliRunner()
    monkeypatch.setenv("SUPERDUPERDB_MONGODB__URI", server_uri)
    monkeypatch.setenv("SUPERDUPERDB_SECURITY__ARTIFACT_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    listed = runner.invoke(main, ["sign-artifacts", unique_name, "--dry-run", "--export", str(tmp_path / "x")])
    assert listed.exit_code == 1, listed.output  # some are not signed
    assert "unsigned" in listed.output and "models/ident" in listed.output and "models/towers.text" in listed.output
    assert "measures/neg_l1" in listed.output
    assert list((tmp_path / "x").glob("*.dill"))  # the bytes, for review; nothing loaded
    assert KEY not in listed.output
    refused = runner.invoke(main, ["sign-artifacts", unique_name], input="n\n")
    assert refused.exit_code != 0
    with pytest.raises(ArtifactIntegrityError):
        keyed[unique_name].docs.apply_model("ident", [[1.0]])
    signed = runner.invoke(main, ["sign-artifacts", unique_name, "--yes"])
    assert signed.exit_code == 0 and "signed " in signed.output, signed.output
    docs = keyed[unique_name].docs
    assert docs.apply_model("ident", [[1.0, 2.0]])[0].tolist() == [1.0, 2.0]
    assert docs.apply_model("towers.text", ["abc"]) == [3]
    again = runner.invoke(main, ["sign-artifacts", unique_name, "--dry-run"])
    assert again.exit_code == 0 and "unsigned" not in again.output.split("\n")[-2], again.output
    keyed.drop_database(unique_name)
    keyed.close()


def test_info_says_whether_artifacts_are_signed(monkeypatch, tmp_path, unique_name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPERDUPERDB_MONGODB__URI", f"mongomock://{unique_name}")
    monkeypatch.setenv("SUPERDUPERDB_CLUSTER__ADDRESS", "null")
    out = CliRunner().invoke(main, ["info"]).output
    assert "artifacts" in out and "UNSIGNED" in out
    monkeypatch.setenv("SUPERDUPERDB_SECURITY__ARTIFACT_KEY", KEY)
    out = CliRunner().invoke(main, ["info"]).output
    assert "UNSIGNED" not in out and "signed (security.artifact_key is set)" in out and KEY not in out
