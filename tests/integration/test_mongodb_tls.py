"""TLS to MongoDB as pymongo does it, through the public API, with certificates made at test time.

The test server speaks plain TCP, so a TLS-terminating proxy that demands a client certificate
(``tests/tlsproxy.py``) stands in front of it: the only way to the data is TLS with a certificate
the CA signed. The options come from the config (``mongodb.tls*``) or the URI
(``tls=true&tlsCAFile=...``); worker processes, which open their own connections from each job's
config snapshot, reach the database the same way; and the key file's password is never shown.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np
import pytest
import testmodels
from certs import make_certs
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from tlsproxy import TlsProxy

import superduperdb
from superduperdb.cli import main
from superduperdb.errors import ConnectionFailure

pytestmark = pytest.mark.integration

WAIT = 120
KEY_PASSWORD = "PlantedKeyPa55"


@pytest.fixture(scope="module")
def tls(server_uri, tmp_path_factory):
    """``(proxy, files, combined_pem, encrypted_pem)``: a TLS proxy to the test server and the PEM files."""
    folder = tmp_path_factory.mktemp("mongo-tls")
    files = make_certs(folder)
    combined = folder / "client.pem"  # pymongo's tlsCertificateKeyFile: certificate and key in one file
    combined.write_text(Path(files.cert).read_text() + Path(files.key).read_text())
    key = serialization.load_pem_private_key(Path(files.key).read_bytes(), password=None)
    encrypted = folder / "client-encrypted.pem"
    encrypted.write_bytes(Path(files.cert).read_bytes() + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))
    parts = urlsplit(server_uri)
    with TlsProxy((parts.hostname, parts.port), files.server_context(require_client_cert=True)) as proxy:
        yield proxy, files, str(combined), str(encrypted)


def test_config_tls_options_reach_the_workers(tls, unique_name):
    proxy, files, combined, _ = tls
    config = {"mongodb.tls": True, "mongodb.tls_ca_file": files.ca, "mongodb.tls_certificate_key_file": combined,
              "cluster.n_workers": 1, "master.warm_up": False}
    before = proxy.handshakes
    client = superduperdb.connect(f"mongodb://127.0.0.1:{proxy.port}/", cluster="local", config=config)
    try:
        assert client.cluster.processes  # separate worker processes: they open their own connections
        coll = client[unique_name].docs
        coll.create_model("norm", testmodels.norm)
        coll.create_watcher("norm", "x").wait(WAIT)
        coll.insert_many([{"x": np.array([3.0, 4.0])}, {"x": np.array([6.0, 8.0])}]).jobs.wait(WAIT)
        assert sorted(d["_outputs"]["x"]["norm"] for d in coll.find({})) == [5.0, 10.0]
        assert proxy.handshakes > before
    finally:
        client.drop_database(unique_name)
        client.close()


def test_uri_tls_options_work_and_the_key_password_is_never_shown(tls, unique_name, monkeypatch, tmp_path):
    proxy, files, _, encrypted = tls
    uri = (f"mongodb://127.0.0.1:{proxy.port}/?tls=true&tlsCAFile={quote(files.ca)}"
           f"&tlsCertificateKeyFile={quote(encrypted)}&tlsCertificateKeyFilePassword={KEY_PASSWORD}")
    client = superduperdb.connect(uri, cluster=None)
    client[unique_name].docs.insert_one({"a": 1})
    assert client[unique_name].docs.find_one({})["a"] == 1
    assert KEY_PASSWORD not in repr(client) and KEY_PASSWORD not in client.uri
    client.drop_database(unique_name)
    client.close()
    # The same password in the config: used, and shown as ***.
    config = {"mongodb.tls_ca_file": files.ca, "mongodb.tls_certificate_key_file": encrypted,
              "mongodb.tls_certificate_key_file_password": KEY_PASSWORD}
    client = superduperdb.connect(f"mongodb://127.0.0.1:{proxy.port}/", cluster=None, config=config)
    assert client[unique_name].docs.count_documents({}) == 0
    assert KEY_PASSWORD not in repr(client.config) and KEY_PASSWORD not in str(client.config.to_dict())
    client.close()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPERDUPERDB_MONGODB__URI", f"mongodb://127.0.0.1:{proxy.port}/")
    monkeypatch.setenv("SUPERDUPERDB_MONGODB__TLS_CA_FILE", files.ca)
    monkeypatch.setenv("SUPERDUPERDB_MONGODB__TLS_CERTIFICATE_KEY_FILE", encrypted)
    monkeypatch.setenv("SUPERDUPERDB_MONGODB__TLS_CERTIFICATE_KEY_FILE_PASSWORD", KEY_PASSWORD)
    monkeypatch.setenv("SUPERDUPERDB_CLUSTER__ADDRESS", "null")
    for command in (["config"], ["info"]):
        out = CliRunner().invoke(main, command).output
        assert KEY_PASSWORD not in out, command
    (line,) = [line for line in out.splitlines() if "mongodb tls" in line]
    assert line.split()[-1] == "on", out


def test_without_the_client_certificate_or_tls_the_connection_is_refused(tls):
    proxy, files, _, _ = tls
    uri = f"mongodb://127.0.0.1:{proxy.port}/"
    for config in ({"mongodb.tls": True, "mongodb.tls_ca_file": files.ca}, {}):
        with pytest.raises(ConnectionFailure):
            superduperdb.connect(uri, cluster=None, config={"mongodb.timeout_ms": 1500, **config})


def test_a_missing_certificate_file_is_a_config_error(tls, tmp_path):
    proxy, _, _, _ = tls
    from superduperdb.errors import ConfigError

    with pytest.raises(ConfigError, match="mongodb.tls_ca_file"):
        superduperdb.connect(f"mongodb://127.0.0.1:{proxy.port}/", cluster=None,
                             config={"mongodb.tls_ca_file": str(tmp_path / "none.pem")})
