"""Credentials never leave the config in clear (DESIGN: secrets).

A password is planted in the database URI (in its user info, and in a query option) and every
place that shows or stores a URI is scanned for it: reprs of the client, database, collection,
config and job Target; ``config.items()`` / ``to_dict()``; errors (message, args, attributes,
cause, pickle); log records at DEBUG; the output of ``superduperdb config``, ``info``,
``local-cluster`` and ``demo``; and every document of every collection after real jobs ran
(job records, including the index job's result from the master's stats, and metadata).

The test wire server has no authentication and refuses credentials, so the jobs run on the
embedded store, whose ``mongomock://<name>`` URI may carry user info like any other: the Target
travels with the planted password, and the master's stats, computed from that Target, are stored
as the index job's ``result``. Each scan is first shown able to fail: the planted string IS in
the real URI that the config and the Target hold.
"""

from __future__ import annotations

import logging
import pickle
import socket
import uuid
from typing import Any

import bson
import numpy as np
import pytest
import testmodels
from click.testing import CliRunner

import superduperdb
from superduperdb.config import redact, resolve_config
from superduperdb.errors import ConfigError, ConnectionFailure, InvalidURIError, SuperDuperError

pytestmark = pytest.mark.integration

SECRET = "PlantedS3cret"          # in the user info
OPTION_SECRET = "PlantedOptS3cret"  # in a query option
PLANTED = (SECRET, OPTION_SECRET)
WAIT = 120


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leaks(*texts: Any) -> list[str]:
    """The planted strings found in ``texts`` (each a str, bytes, or anything with a repr)."""
    found = []
    for text in texts:
        if isinstance(text, bytes):
            hay = text.decode("latin-1")
        elif isinstance(text, str):
            hay = text
        else:
            hay = repr(text)
        found += [f"{p!r} in {hay[:300]!r}" for p in PLANTED if p in hay]
    return found


def error_texts(err: BaseException) -> list[Any]:
    """Everything an error shows: message, repr, args, attributes and pickle, along its cause chain."""
    out: list[Any] = []
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        out += [str(err), repr(err), err.args, dict(vars(err))]
        if isinstance(err, SuperDuperError):
            out.append(pickle.dumps(err))
        err = err.__cause__ or err.__context__
    return out


def database_dump(raw_client: Any) -> list[bytes]:
    """Every document of every collection of every database, BSON-encoded (binary values included)."""
    out = []
    for name in raw_client.list_database_names():
        db = raw_client[name]
        for coll in db.list_collection_names():
            out += [bson.encode(doc) for doc in db[coll].find({})]
    return out


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def log_lines(caplog) -> list[str]:
    """Every log line (setup and call), formatted, and each record's raw arguments."""
    records = caplog.get_records("setup") + caplog.get_records("call")
    return [logging.Formatter("%(name)s %(message)s").format(r) for r in records] + [repr(r.args) for r in records]


# -- redact --------------------------------------------------------------------------------------


def test_the_scan_can_fail() -> None:
    """Guard: the helpers above do find a planted string where it is."""
    uri = f"mongodb://alice:{SECRET}@db/"
    assert leaks(uri) and leaks(uri.encode()) and leaks({"uri": uri}) and not leaks(redact(uri))
    assert leaks(*error_texts(ConnectionFailure(f"at {uri}", uri=uri)))
    assert leaks(*error_texts(ConnectionFailure("no uri in the message", uri=uri)))  # attributes are read


# -- the jobs, their stored records, the reprs ---------------------------------------------------


@pytest.fixture
def secret_client(debug_logs):
    uri = f"mongomock://alice:{SECRET}@secrets-{uuid.uuid4().hex[:8]}/?tlsCertificateKeyFilePassword={OPTION_SECRET}"
    client = superduperdb.connect(uri, cluster=None, config={"master.warm_up": False})
    yield client
    client.close()


def test_jobs_records_and_reprs_never_show_the_password(secret_client, debug_logs, unique_name) -> None:
    client = secret_client
    docs = client[unique_name].docs
    X = np.random.default_rng(3).normal(size=(30, 8)).astype("float32")
    docs.insert_many([{"x": x, "i": i} for i, x in enumerate(X)])
    docs.create_model("ident", testmodels.identity)
    docs.create_semantic_index("vectors", models=["ident"], keys=["x"]).wait(WAIT)
    docs.insert_one({"x": X[0] + 0.01, "i": 99}).jobs.wait(WAIT)  # an index refresh job
    assert [d["i"] for d in docs.find({}, like={"x": X[5]}, n=1)] == [5]
    docs.reconcile(wait=True, timeout=WAIT)

    scope = docs._services.scope
    target = scope.target
    # The scans can fail: the real URI, which the config and the Target hold, carries both secrets.
    assert all(p in client.config.mongodb.uri for p in PLANTED)
    assert all(p in client.config["mongodb.uri"] for p in PLANTED)
    assert all(p in target.uri for p in PLANTED) and leaks(target.config)
    assert leaks(client.config.to_dict(secrets=True))

    # The index jobs' results (the master's stats, stored in their records) name the URI, redacted.
    index_jobs = docs.list_jobs(kind="index")
    assert index_jobs and all(j["status"] == "success" for j in index_jobs), index_jobs
    uris = {j["result"]["uri"] for j in index_jobs if isinstance(j.get("result"), dict) and "uri" in j["result"]}
    assert uris == {redact(client.config.mongodb.uri)} and "alice:***@" in uris.pop()

    shown = [
        repr(client), str(client), client._repr_html_(), client.uri, vars(client),
        repr(client[unique_name]), str(client[unique_name]), vars(client[unique_name]),
        repr(docs), docs._repr_html_(),
        repr(client.config), str(client.config), client.config.items(), client.config.to_dict(),
        repr(client.config.settings), repr(client.config.mongodb),
        repr(target), str(target), repr(scope),
        repr(client.cluster), vars(client.cluster),
        docs.list_jobs(), [j.get("logs") for j in docs.list_jobs()],
    ]
    assert not leaks(*shown)
    assert "alice:***@" in repr(client) and "alice:***@" in repr(client[unique_name]) and "***" in repr(target)
    assert not leaks(*database_dump(client.raw)), "a stored document holds the password"
    lines = log_lines(debug_logs)
    assert not leaks(*lines)
    assert any("connected to mongomock://alice:***@" in line for line in lines)  # the debug line, redacted


# -- errors ---------------------------------------------------------------------------------------


def test_connection_failure_hides_the_password(debug_logs) -> None:
    uri = f"mongodb://alice:{SECRET}@127.0.0.1:{_closed_port()}/?authSource=admin&tlsCertificateKeyFilePassword={OPTION_SECRET}"
    with pytest.raises(ConnectionFailure) as info:
        superduperdb.connect(uri, cluster=None, config={"mongodb.timeout_ms": 200})
    err = info.value
    assert err.uri == redact(uri) and "alice:***@127.0.0.1" in str(err)
    assert not leaks(*error_texts(err), *log_lines(debug_logs))


def test_a_server_that_refuses_the_credentials_hides_them(server_uri, debug_logs) -> None:
    """The test server has no authentication: the credentials are refused, and not repeated."""
    uri = server_uri.replace("mongodb://", f"mongodb://alice:{SECRET}@", 1)
    assert SECRET in uri
    with pytest.raises(ConnectionFailure) as info:  # was a bare ValueError from pymongo's SCRAM parsing
        superduperdb.connect(uri, cluster=None, config={"mongodb.timeout_ms": 2000})
    assert "authentication" in str(info.value) and info.value.uri == redact(uri)
    assert not leaks(*error_texts(info.value), *log_lines(debug_logs))


def test_invalid_uri_and_config_errors_hide_the_password() -> None:
    uri = f"postgres://alice:{SECRET}@db.example.com/db?password={OPTION_SECRET}"
    with pytest.raises(InvalidURIError) as info:
        superduperdb.connect(uri, cluster=None)
    assert info.value.uri == redact(uri) and "alice:***@" in str(info.value)
    assert not leaks(*error_texts(info.value))

    with pytest.raises(ConfigError) as info:  # a URI given where a port belongs: refused, shown redacted
        superduperdb.connect("mongomock://x", cluster=None, config={"mongodb.port": f"mongodb://alice:{SECRET}@h/"})
    assert info.value.key == "mongodb.port" and "alice:***@h" in str(info.value)
    assert not leaks(*error_texts(info.value))


def test_config_shows_credentials_redacted_but_keeps_them() -> None:
    uri = f"mongodb+srv://alice:{SECRET}@cluster0.example.net/?tlsCertificateKeyFilePassword={OPTION_SECRET}"
    cfg = resolve_config({"mongodb.uri": uri, "mongodb.host": f"mongodb://bob:{SECRET}@h2"},
                         home="/nonexistent", cwd="/nonexistent", environ={})
    assert cfg.mongodb.uri == uri and cfg["mongodb.uri"] == uri and cfg.to_dict(secrets=True)["mongodb"]["uri"] == uri
    assert resolve_config(cfg.to_dict(secrets=True), home="/nonexistent", cwd="/nonexistent", environ={}) == cfg
    assert not leaks(repr(cfg), str(cfg), cfg.items(), cfg.to_dict(), repr(cfg.settings), repr(cfg.mongodb),
                     pickle.dumps(cfg.items()))
    assert dict((p, v) for p, v, _ in cfg.items())["mongodb.uri"] == redact(uri)
    assert cfg.to_dict()["mongodb"]["uri"] == "mongodb+srv://alice:***@cluster0.example.net/?tlsCertificateKeyFilePassword=***"


# -- the command line -----------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> dict:
    """A config whose URI carries both secrets and cannot be reached (jobs inline: nothing to reach)."""
    monkeypatch.chdir(tmp_path)
    uri = f"mongodb://alice:{SECRET}@127.0.0.1:{_closed_port()}/?authSource=admin&tlsCertificateKeyFilePassword={OPTION_SECRET}"
    return {"HOME": str(tmp_path), "SUPERDUPERDB_MONGODB__URI": uri, "SUPERDUPERDB_MONGODB__TIMEOUT_MS": "200",
            "SUPERDUPERDB_CLUSTER__ADDRESS": "null"}


@pytest.mark.parametrize("args", [["config"], ["config", "--json"], ["info"], ["info", "--json"],
                                  ["-vv", "info"]])
def test_cli_output_hides_the_password(cli_env, debug_logs, args) -> None:
    from superduperdb.cli import main

    assert SECRET in resolve_config(environ=cli_env).mongodb.uri  # the scan can fail
    result = CliRunner().invoke(main, args, env=cli_env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "alice:***@127.0.0.1" in result.output  # the URI is shown, redacted
    assert not leaks(result.output, *log_lines(debug_logs))


def test_local_cluster_output_hides_the_password(cli_env, monkeypatch) -> None:
    """``local-cluster`` prints how to connect: with the URI redacted (its processes are faked here)."""
    import superduperdb.cluster.local as local
    from superduperdb.cli import main

    class FakeCluster:
        address, dashboard_link, components = "tcp://127.0.0.1:1", None, []

        def __init__(self, spec, **kwargs) -> None:
            self.spec = spec

        def start(self, timeout) -> None:
            pass

        def run(self) -> int:
            return 0

        def stop(self) -> None:
            pass

    monkeypatch.setattr(local, "ProcessCluster", FakeCluster)
    result = CliRunner().invoke(main, ["local-cluster", "--dashboard-address", ""], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "alice:***@127.0.0.1" in result.output and not leaks(result.output)


def test_demo_output_hides_the_password(debug_logs, monkeypatch, unique_name) -> None:
    """``demo --uri`` echoes the database: redacted (a tiny text model stands in for MiniLM)."""
    import superduperdb.datasets as datasets
    import superduperdb.models.text as text
    from superduperdb.cli import main

    real = datasets.numpy_docstrings
    monkeypatch.setattr(datasets, "numpy_docstrings", lambda n=None: real(12))
    monkeypatch.setattr(text, "load_minilm", lambda device=None: testmodels.letter_counts)
    uri = f"mongomock://alice:{SECRET}@{unique_name}/?password={OPTION_SECRET}"
    result = CliRunner().invoke(main, ["demo", "--uri", uri, "--cluster", "inline"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"alice:***@{unique_name}" in result.output and not leaks(result.output, *log_lines(debug_logs))
    assert not leaks(*database_dump(superduperdb.connect(uri, cluster=None).raw))
