"""TLS between every part of the cluster (``security.tls_*``), with certificates made at test time.

* ``connect(cluster="local")`` with TLS settings: a local cluster of worker processes whose
  scheduler, workers and master talk ``tls://``; a watcher and a semantic index run end to end.
* A TLS scheduler refuses a plain-TCP client, a client without a certificate and a client whose
  certificate another CA signed (each a clear ``ClusterError``).
* ``superduperdb local-cluster`` (the very ``dask scheduler`` / ``dask worker`` command lines that
  ``superduperdb scheduler`` / ``worker`` and supervisord run) started with TLS settings, used by a
  separate client process (``tests/cluster/scenario.py``): model, watcher, index, insert, search.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import testmodels
from canary import canary_pickle, plant, point_model_at
from certs import make_certs
from click.testing import CliRunner
from waiting import poll

import superduperdb
from superduperdb.cli import main
from superduperdb.errors import ClusterError, ConfigError, JobFailedError

pytestmark = pytest.mark.integration

WAIT = 120
KEY = "tls-cluster-artifact-key"
TESTS = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def untrusted(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture(scope="module")
def tls_client(server_uri, certs):
    """A client whose local cluster of worker processes talks TLS."""
    client = superduperdb.connect(server_uri, cluster="local",
                                  config={"master.warm_up": False, "cluster.n_workers": 1, **certs.config()})
    yield client
    client.close()


def test_local_cluster_talks_tls_and_runs_jobs(tls_client, unique_name):
    dask = tls_client.cluster.client
    assert dask.scheduler.address.startswith("tls://")
    workers = dask.scheduler_info(n_workers=-1)["workers"]
    assert workers and all(address.startswith("tls://") for address in workers)
    coll = tls_client[unique_name].docs
    X = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    coll.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    coll.create_model("ident", testmodels.identity)
    coll.create_semantic_index("vectors", models=["ident"], keys=["x"]).wait(WAIT)
    coll.insert_one({"x": X[3] * 10, "i": 100}).jobs.wait(WAIT)
    assert coll.find_one(like={"x": X[5]})["i"] == 5
    assert coll.count_documents({"_outputs.x.ident": {"$exists": True}}) == 21
    tls_client.drop_database(unique_name)


def test_a_tls_scheduler_refuses_plain_untrusted_and_certificate_less_clients(tls_client, certs, untrusted):
    address = tls_client.cluster.client.scheduler.address  # tls://127.0.0.1:<port>
    plain = "tcp://" + address[len("tls://"):]
    cases = [
        ("plain TCP", plain, {}),
        ("no certificate", address, {}),
        ("another CA's certificate", address, untrusted.config()),
        ("a certificate the scheduler does not trust, with its CA", address,
         {**untrusted.config(), "security.tls_ca_file": certs.ca}),
    ]
    for what, target, config in cases:
        other = superduperdb.connect("mongomock://tls-refused", cluster=target,
                                     config={"cluster.timeout": 3, **config})
        with pytest.raises(ClusterError) as info:
            other.cluster.client  # noqa: B018 - connecting is what is tested
        assert "TLS" in str(info.value), (what, str(info.value))
        other.close()
    # The right certificate connects (over tls:// even when given a tcp:// address).
    ok = superduperdb.connect("mongomock://tls-ok", cluster=plain, config={"cluster.timeout": 30, **certs.config()})
    assert ok.cluster.client.scheduler_info()["address"] == address
    ok.close()


def test_half_configured_or_missing_tls_files_are_refused(tmp_path, certs):
    with pytest.raises(ConfigError, match="security.tls_key_file"):
        superduperdb.connect("mongomock://tls-half", cluster="local",
                             config={"security.tls_ca_file": certs.ca, "security.tls_cert_file": certs.cert})
    with pytest.raises(ConfigError, match="not a file"):
        superduperdb.connect("mongomock://tls-missing", cluster="local",
                             config={**certs.config(), "security.tls_key_file": str(tmp_path / "nope.pem")})


def test_scheduler_and_worker_commands_carry_the_tls_options(certs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in certs.env().items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    scheduler = runner.invoke(main, ["scheduler", "--port", "0", "--dry-run"]).output
    worker = runner.invoke(main, ["worker", "--master", "--dry-run"]).output
    for out in (scheduler, worker):
        assert f"--tls-ca-file {certs.ca}" in out and f"--tls-cert {certs.cert}" in out, out
        assert f"--tls-key {certs.key}" in out and "--protocol tls" in out, out
    assert "tls://127.0.0.1:8786" in worker
    info = runner.invoke(main, ["info"]).output
    assert "cluster tls" in info and f"on (CA {certs.ca})" in info


@pytest.mark.slow
def test_local_cluster_command_with_tls_runs_the_scenario(server_uri, unique_name, certs, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERDUPERDB_") or k.startswith("SUPERDUPERDB_TEST_")}
    env.update(certs.env(), SUPERDUPERDB_MASTER__WARM_UP="false", PYTHONUNBUFFERED="1",
               SUPERDUPERDB_SECURITY__ARTIFACT_KEY=KEY,
               PYTHONPATH=os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p))
    out = tmp_path / "local-cluster.out"
    with open(out, "wb") as stdout:
        launcher = subprocess.Popen([str(BIN / "superduperdb"), "local-cluster", "--n-workers", "1", "--port", "0",
                                     "--log-dir", str(tmp_path / "logs")], stdout=stdout, stderr=subprocess.STDOUT,
                                    env=env, cwd=tmp_path, start_new_session=True)
    try:
        def address():
            assert launcher.poll() is None, out.read_text()
            lines = [ln for ln in out.read_text().splitlines() if ln.startswith("scheduler: ")]
            return lines[0].split()[1] if lines else None

        addr = poll(address, 180, "local-cluster to print the scheduler address")
        assert addr.startswith("tls://"), out.read_text()
        done = subprocess.run([sys.executable, str(TESTS / "cluster" / "scenario.py"), "--db", unique_name,
                               "--uri", server_uri, "--cluster", addr], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        # The same scheduler, asked in plain TCP by a client without the settings: refused.
        plain = {k: v for k, v in env.items() if not k.startswith("SUPERDUPERDB_SECURITY__")}
        refused = subprocess.run([sys.executable, "-c", (
            "import sys\nimport superduperdb\nfrom superduperdb.errors import ClusterError\n"
            f"c = superduperdb.connect('mongomock://x', cluster={('tcp://' + addr[6:])!r}, "
            "config={'cluster.timeout': 3})\n"
            "try:\n    c.cluster.client\nexcept ClusterError as e:\n    print('refused:', e)\n"
            "    sys.exit(3)\n")], env=plain, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 3 and "refused:" in refused.stdout, refused.stdout + refused.stderr
        # On this cluster too, a planted artifact is refused by the workers and its canary never runs.
        client = superduperdb.connect(server_uri, cluster=addr, config={**certs.config(), "security.artifact_key": KEY})
        try:
            coll = client[unique_name].docs
            canary = tmp_path / "canary"
            point_model_at(coll, "shout", plant(coll, canary_pickle(str(canary))))
            with pytest.raises(JobFailedError, match="ArtifactIntegrityError"):
                coll.insert_one({"x": np.zeros(8, dtype="float32"), "text": "planted"}).jobs.wait(WAIT)
            assert not canary.exists()
        finally:
            client.close()
    finally:
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, 9)
            launcher.wait(10)
    assert launcher.returncode == 0 and "stopped." in out.read_text(), out.read_text()
