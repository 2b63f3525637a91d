"""The model server over real HTTP: a server in a thread and the ``superduperdb serve`` command in a process."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import testmodels
from waiting import poll

import superduperdb
from superduperdb.errors import ConfigError, ModelError, NotRegisteredError
from superduperdb.server import AuthenticationError, apply_model

USER, PASSWORD = "alice", "s3cret-pa55"
TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def served(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None)
    docs = client[unique_name].docs
    docs.create_model("ident", testmodels.identity)
    docs.create_model("norm", testmodels.norm)
    docs.create_model("fail", testmodels.fail)
    with superduperdb.serve(client, host="127.0.0.1", port=0, username=USER, password=PASSWORD, block=False) as server:
        yield server, unique_name
    client.close()


def body(db, model="ident", inputs=([1, 2], [3, 4])):
    return {"database": db, "collection": "docs", "model": model, "inputs": list(inputs)}


def test_apply_with_auth(served):
    server, db = served
    r = httpx.post(f"{server.url}/apply_model", json=body(db), auth=(USER, PASSWORD))
    assert r.status_code == 200
    assert r.json() == {"outputs": [[1.0, 2.0], [3.0, 4.0]]}
    r = httpx.post(f"{server.url}/apply_model", json={**body(db, "norm", [[3, 4]])}, auth=(USER, PASSWORD))
    assert r.json()["outputs"] == [5.0]
    r = httpx.post(f"{server.url}/apply_model", json={**body(db, inputs=[{"v": [1, 1]}]), "key": "v"},
                   auth=(USER, PASSWORD))
    assert r.json()["outputs"] == [[1.0, 1.0]]
    assert httpx.get(f"{server.url}/models/{db}/docs", auth=(USER, PASSWORD)).json() == {
        "models": ["fail", "ident", "norm"]}
    # The Python helper, the original's apply_model over HTTP.
    out = apply_model(server.url, db, "docs", "norm", [[6, 8]], username=USER, password=PASSWORD)
    assert out == [10.0]


def test_auth_refused(served):
    server, db = served
    for auth in (None, (USER, "wrong"), ("mallory", PASSWORD)):
        r = httpx.post(f"{server.url}/apply_model", json=body(db), auth=auth)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Basic")
        assert r.json()["error"] == "AuthenticationError"
    r = httpx.post(f"{server.url}/apply_model", json=body(db), headers={"Authorization": "Basic !!notbase64"})
    assert r.status_code == 401
    assert httpx.get(f"{server.url}/models/{db}/docs").status_code == 401
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    with pytest.raises(AuthenticationError):
        apply_model(server.url, db, "docs", "ident", [[1]], username=USER, password="nope")


def test_unknown_model_and_bad_input(served):
    server, db = served
    r = httpx.post(f"{server.url}/apply_model", json=body(db, "ghost"), auth=(USER, PASSWORD))
    assert r.status_code == 404
    assert r.json()["error"] == "NotRegisteredError" and "ghost" in r.json()["message"]
    with pytest.raises(NotRegisteredError, match="ghost"):
        apply_model(server.url, db, "docs", "ghost", [1], username=USER, password=PASSWORD)

    bad = [{"database": db}, [1, 2], {**body(db), "inputs": 5}, {**body(db), "model": ""}, {**body(db), "key": 3}]
    for b in bad:
        r = httpx.post(f"{server.url}/apply_model", json=b, auth=(USER, PASSWORD))
        assert r.status_code == 400, b
        assert r.json()["error"] == "BadRequest"
    r = httpx.post(f"{server.url}/apply_model", content=b"{not json", auth=(USER, PASSWORD))
    assert r.status_code == 400
    # The model's own refusal of an input: 422 with the exception type.
    r = httpx.post(f"{server.url}/apply_model", json=body(db, "fail", [1]), auth=(USER, PASSWORD))
    assert r.status_code == 422
    assert r.json()["error"] == "ValueError" and "cannot handle 1" in r.json()["message"]
    with pytest.raises(ModelError, match="422"):
        apply_model(server.url, db, "docs", "fail", [1], username=USER, password=PASSWORD)


def test_requests_never_register_models_or_reach_private_attributes(served):
    """A request names a registered model only: no attribute model 'ident.__init__' is made on the way."""
    server, db = served
    for name in ("ident.__call__", "ident.__init__", "norm._private"):
        r = httpx.post(f"{server.url}/apply_model", json=body(db, name, [[1]]), auth=(USER, PASSWORD))
        assert r.status_code == 404, name
    r = httpx.get(f"{server.url}/models/{db}/docs", auth=(USER, PASSWORD))
    assert r.json() == {"models": ["fail", "ident", "norm"]}  # nothing registered by the requests


def test_outputs_json_cannot_hold_are_a_500(served):
    server, db = served
    client = superduperdb.connect(f"mongomock://{db}", cluster=None)  # the served store (in-process)
    client[db].docs.create_model("log", math.log)
    r = httpx.post(f"{server.url}/apply_model", json=body(db, "log", [0.5]), auth=(USER, PASSWORD))
    assert r.status_code == 200
    client[db].docs.create_model("inf", float)
    r = httpx.post(f"{server.url}/apply_model", json=body(db, "inf", ["inf"]), auth=(USER, PASSWORD))
    assert r.status_code == 500 and r.json()["error"] == "OutputNotSerializable"


def test_half_configured_auth_is_refused(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None)
    with pytest.raises(ConfigError, match="both a username and a password"):
        superduperdb.serve(client, port=0, username=USER, block=False)
    client.close()
    # Each of the two may come from the config: the username given here, the password configured.
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None, config={"serve.password": PASSWORD})
    client[unique_name].docs.create_model("ident", testmodels.identity)
    with superduperdb.serve(client, host="127.0.0.1", port=0, username=USER, block=False) as server:
        r = httpx.post(f"{server.url}/apply_model", json=body(unique_name), auth=(USER, PASSWORD))
        assert r.status_code == 200
    client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_serves_models_of_a_database_beside_the_cluster(server_uri, unique_name, tmp_path):
    client = superduperdb.connect(server_uri, cluster=None)
    client[unique_name].docs.create_model("ident", testmodels.identity)
    port = _free_port()
    env = {**os.environ, "SUPERDUPERDB_SERVE__USERNAME": USER, "SUPERDUPERDB_SERVE__PASSWORD": PASSWORD,
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "superduperdb", "-vv", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), "--uri", server_uri], env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/health").status_code == 200
            except httpx.TransportError:
                return False

        poll(up, 60, "the model server to listen")
        r = httpx.post(f"{url}/apply_model", json={"database": unique_name, "collection": "docs", "model": "ident",
                                                    "inputs": [[0.5, 1.5]]}, auth=(USER, PASSWORD))
        assert r.status_code == 200 and np.allclose(r.json()["outputs"], [[0.5, 1.5]])
        assert httpx.post(f"{url}/apply_model", json={}, auth=(USER, "x")).status_code == 401
        assert f"model server on {url} " in log.read_text()  # the address, not a placeholder
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        client.drop_database(unique_name)
        client.close()
    assert "stopped." in log.read_text()
    assert PASSWORD not in log.read_text()  # not even at debug level


def _requests(text: str, endpoint: str, code: int) -> float:
    """``superduperdb_server_requests_total{endpoint, code}`` in a Prometheus text exposition (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "superduperdb_server_requests_total" and s.labels == {"endpoint": endpoint,
                                                                                 "code": str(code)}:
                return s.value
    return 0.0


def test_metrics_count_requests_by_endpoint_and_code(served):
    server, db = served
    scrape = lambda: httpx.get(f"{server.url}/metrics", auth=(USER, PASSWORD))  # noqa: E731
    assert httpx.get(f"{server.url}/metrics").status_code == 401  # the server's auth guards its metrics too
    before = scrape().text
    ok, missing, refused = (_requests(before, "/apply_model", c) for c in (200, 404, 401))
    assert httpx.post(f"{server.url}/apply_model", json=body(db), auth=(USER, PASSWORD)).status_code == 200
    assert httpx.post(f"{server.url}/apply_model", json=body(db), auth=(USER, PASSWORD)).status_code == 200
    assert httpx.post(f"{server.url}/apply_model", json=body(db, "nope"), auth=(USER, PASSWORD)).status_code == 404
    assert httpx.post(f"{server.url}/apply_model", json=body(db)).status_code == 401
    r = scrape()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert _requests(r.text, "/apply_model", 200) == ok + 2
    assert _requests(r.text, "/apply_model", 404) == missing + 1
    assert _requests(r.text, "/apply_model", 401) == refused + 1
    assert "superduperdb_server_request_duration_seconds_bucket" in r.text
    httpx.get(f"{server.url}/models/{db}/docs/extra/path", auth=(USER, PASSWORD))  # labels stay bounded
    assert f'endpoint="/models/{db}' not in scrape().text
