"""Unit checks of the security pieces: signatures, the config's secrets, TLS command lines, server limits."""

from __future__ import annotations

import doctest

import pytest
from certs import make_certs

from superduperdb.cluster import security as cluster_security
from superduperdb.cluster.spec import ClusterSpec
from superduperdb.config import resolve_config
from superduperdb.errors import ArtifactIntegrityError, ConfigError
from superduperdb.server import app as server_app
from superduperdb.server import limits
from superduperdb.store import backends, inventory, signing


@pytest.mark.parametrize("module", [signing, inventory, limits, server_app, cluster_security, backends])
def test_doctests(module) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def cfg(**values):
    return resolve_config(values, home="/nonexistent", cwd="/nonexistent", environ={})


def test_a_signature_binds_bytes_key_and_identity() -> None:
    sig = signing.signature("key", b"data", collection="docs", name="models/m", version=2)
    signing.verify("key", b"data", sig, collection="docs", name="models/m", version=2)
    wrong = [("key", b"data!", "docs", "models/m", 2), ("other", b"data", "docs", "models/m", 2),
             ("key", b"data", "docs2", "models/m", 2), ("key", b"data", "docs", "models/n", 2),
             ("key", b"data", "docs", "models/m", 3)]
    for key, data, collection, name, version in wrong:
        with pytest.raises(ArtifactIntegrityError, match="wrong signature") as info:
            signing.verify(key, data, sig, collection=collection, name=name, version=version)
        assert info.value.name == name and isinstance(info.value, ValueError)
    with pytest.raises(ArtifactIntegrityError, match="is not signed"):
        signing.verify("key", b"data", None, collection="docs", name="models/m")
    with pytest.raises(ValueError):
        signing.signature("", b"data", collection="docs", name="x")


def test_the_artifact_key_is_a_secret_everywhere_the_config_shows() -> None:
    c = cfg(**{"security.artifact_key": "TopS3cretKey"})
    assert c.security.artifact_key == "TopS3cretKey"
    assert "TopS3cretKey" not in repr(c) and "TopS3cretKey" not in repr(c.security)
    assert "TopS3cretKey" not in str(c.items()) and "TopS3cretKey" not in str(c.to_dict())
    assert c.to_dict(secrets=True)["security"]["artifact_key"] == "TopS3cretKey"
    with pytest.raises(ConfigError) as info:
        cfg(**{"security.artifact_key": 123456789})
    assert "123456789" not in str(info.value) and "(int)" in str(info.value)


def test_tls_settings_make_tls_command_lines(tmp_path) -> None:
    files = make_certs(tmp_path)
    spec = ClusterSpec.from_config(cfg(**files.config(), **{"jobs.port": 9999}), dashboard_address=None)
    assert spec.address == "tls://127.0.0.1:9999"
    for command in (spec.scheduler_command(), spec.worker_command(master=True)):
        joined = " ".join(command)
        assert f"--tls-ca-file {files.ca} --tls-cert {files.cert} --tls-key {files.key}" in joined
        assert "--protocol tls" in joined
    assert spec.worker_command()[4] == "tls://127.0.0.1:9999"
    security = cluster_security.dask_security(cfg(**files.config()))
    assert security.require_encryption and security.tls_client_cert == files.cert
    assert ClusterSpec.from_config(cfg()).address.startswith("tcp://")


def test_half_set_tls_is_a_config_error(tmp_path) -> None:
    files = make_certs(tmp_path)
    with pytest.raises(ConfigError, match="security.tls_key_file is not set"):
        cluster_security.tls_files(cfg(**{"security.tls_ca_file": files.ca, "security.tls_cert_file": files.cert}))
    with pytest.raises(ConfigError, match="not a file"):
        cluster_security.tls_files(cfg(**{**files.config(), "security.tls_ca_file": str(tmp_path / "no.pem")}))


def test_the_login_limiter_forgets_and_stays_bounded() -> None:
    limiter = limits.LoginLimiter(max_failures=3, window=10.0, max_clients=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", now=0.0)
    assert len(limiter._failures) == 100
    for _ in range(3):
        limiter.failed("attacker", now=1.0)
    assert limiter.retry_after("attacker", now=2.0) == 9
    limiter.succeeded("attacker")
    assert limiter.retry_after("attacker", now=2.0) is None
