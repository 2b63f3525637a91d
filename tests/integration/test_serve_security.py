"""The hardened model server, over real HTTP(S) sockets.

HTTPS with a certificate made at test time; basic auth over plain HTTP refused off loopback;
a burst of wrong passwords slowed (429 + Retry-After) and logged; a body above the limit refused
from its Content-Length without reading it, a chunked one stopped at the limit, a slow one
timed out; every error JSON with its status (including what used to be plain-text 500s);
security headers; a stalled database does not freeze the server and an outage is a 503; distinct
names do not accumulate open collections; ``key`` with inputs that are not documents is refused.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
import testmodels
from certs import make_certs
from tcpproxy import TcpProxy
from waiting import poll

import superduperdb
from superduperdb.errors import ConfigError, NotRegisteredError
from superduperdb.server import AuthenticationError, apply_model

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "s3cret-pa55"
AUTH = (USER, PASSWORD)
LIMITS = {"serve.max_body_bytes": 4096, "serve.body_timeout": 1.0, "serve.max_failed_logins": 5,
          "serve.failed_login_window": 60.0}


@pytest.fixture
def served(unique_name):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None, config=LIMITS)
    docs = client[unique_name].docs
    docs.create_model("ident", testmodels.identity)
    docs.create_model("norm", testmodels.norm)
    with superduperdb.serve(client, host="127.0.0.1", port=0, username=USER, password=PASSWORD, block=False) as server:
        yield server, unique_name
    client.close()


def body(db, model="ident", inputs=([1, 2],), collection="docs"):
    return {"database": db, "collection": collection, "model": model, "inputs": list(inputs)}


def raw_request(port: int, head: bytes, payload: bytes = b"", wait: float = 10.0) -> tuple[bytes, float]:
    """Send ``head`` and ``payload`` over a plain socket; return what the server answered and how long it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        started = time.monotonic()
        sock.sendall(head + payload)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
        return answer, time.monotonic() - started


def test_https_with_a_certificate(unique_name, tmp_path):
    files = make_certs(tmp_path)
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None)
    client[unique_name].docs.create_model("norm", testmodels.norm)
    with superduperdb.serve(client, host="127.0.0.1", port=0, username=USER, password=PASSWORD,
                            ssl_certfile=files.cert, ssl_keyfile=files.key, block=False) as server:
        assert server.url.startswith("https://127.0.0.1:")
        r = httpx.post(f"{server.url}/apply_model", json=body(unique_name, "norm", [[3, 4]]), auth=AUTH,
                       verify=ssl.create_default_context(cafile=files.ca))
        assert r.status_code == 200 and r.json() == {"outputs": [5.0]}
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert apply_model(server.url, unique_name, "docs", "norm", [[6, 8]], username=USER, password=PASSWORD,
                           cafile=files.ca) == [10.0]
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            httpx.get(f"{server.url}/health")
        answer, _ = raw_request(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", wait=5)
        assert b'"status"' not in answer  # plain HTTP gets no answer from the HTTPS port
    client.close()


def test_basic_auth_over_plain_http_is_refused_off_loopback(unique_name, tmp_path):
    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None)
    with pytest.raises(ConfigError, match="in clear"):
        superduperdb.serve(client, host="0.0.0.0", port=0, username=USER, password=PASSWORD, block=False)
    with pytest.raises(ConfigError, match="both a certificate and its key"):
        superduperdb.serve(client, host="127.0.0.1", port=0, ssl_certfile=str(tmp_path / "c.pem"), block=False)
    with superduperdb.serve(client, host="0.0.0.0", port=0, username=USER, password=PASSWORD, insecure=True,
                            block=False) as server:  # told so
        assert httpx.get(f"http://127.0.0.1:{server.port}/health").status_code == 200
    client.close()


def test_a_burst_of_wrong_passwords_is_slowed_and_logged(served, caplog):
    server, db = served
    caplog.set_level(logging.WARNING, logger="superduperdb.server")
    statuses = []
    with httpx.Client() as http:
        for i in range(12):
            r = http.post(f"{server.url}/apply_model", json=body(db), auth=(USER, f"guess-{i}"))
            statuses.append(r.status_code)
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}, statuses
        assert 1 <= int(r.headers["retry-after"]) <= 60 and r.json()["error"] == "TooManyFailedLogins"
        # Even the right password waits now: guessing gains nothing.
        assert http.post(f"{server.url}/apply_model", json=body(db), auth=AUTH).status_code == 429
    failures = [rec for rec in caplog.records if "wrong credentials from 127.0.0.1" in rec.getMessage()]
    assert len(failures) == 5 and PASSWORD not in caplog.text and "guess-" not in caplog.text
    with pytest.raises(AuthenticationError, match="Too many"):
        apply_model(server.url, db, "docs", "ident", [[1]], username=USER, password=PASSWORD)


def test_an_oversized_body_is_refused_without_reading_it(served):
    server, db = served
    auth = "Basic YWxpY2U6czNjcmV0LXBhNTU="  # alice:s3cret-pa55
    head = (f"POST /apply_model HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 * 2**20}\r\n\r\n").encode()
    answer, took = raw_request(server.port, head, b'{"inputs": [')  # announces 50 MB, sends 12 bytes
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"PayloadTooLarge" in answer and b"serve.max_body_bytes" in answer and took < 5
    # Without a Content-Length (chunked), the body is read only up to the limit.
    sent = 0

    def chunks():
        nonlocal sent
        for _ in range(1600):  # 100 MiB, if it were all read
            sent += 65536
            yield b"x" * 65536

    r = httpx.post(f"{server.url}/apply_model", content=chunks(), auth=AUTH)
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"
    assert sent < 50 * 2**20  # the server stopped reading and closed: the client could not send it all


def test_a_body_that_does_not_arrive_times_out(served):
    server, db = served
    auth = "Basic YWxpY2U6czNjcmV0LXBhNTU="
    head = (f"POST /apply_model HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n").encode()
    answer, took = raw_request(server.port, head, b'{"inputs": [', wait=20)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"serve.body_timeout" in answer and took < 15  # answered, and the connection closed


def test_every_error_is_json_with_its_status(served):
    server, db = served
    url = server.url
    cases = [
        (httpx.post(f"{url}/apply_model", json=body(db), headers={"Authorization": "Basic été".encode()}), 401),
        (httpx.post(f"{url}/apply_model", content=b"[" * 2000 + b"]" * 2000, auth=AUTH), 400),
        (httpx.post(f"{url}/apply_model", json=body("a.b"), auth=AUTH), 400),
        (httpx.post(f"{url}/apply_model", json=body("a b"), auth=AUTH), 400),
        (httpx.post(f"{url}/apply_model", json=body(db, collection="$cmd"), auth=AUTH), 400),
        (httpx.get(f"{url}/models/a.b/docs", auth=AUTH), 400),
        (httpx.get(f"{url}/models/a b/docs", auth=AUTH), 400),
        (httpx.get(f"{url}/models/{db}/$cmd", auth=AUTH), 400),
        (httpx.post(f"{url}/apply_model", json={**body(db, inputs=[[1, 2]]), "key": "x"}, auth=AUTH), 400),
        (httpx.get(f"{url}/nowhere", auth=AUTH), 404),
        (httpx.get(f"{url}/apply_model", auth=AUTH), 405),
        (httpx.delete(f"{url}/health"), 405),
        (httpx.post(f"{url}/apply_model", json=body(db, "ghost"), auth=AUTH), 404),
    ]
    for r, status in cases:
        assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text[:200])
        assert r.headers["content-type"] == "application/json", r.text[:200]
        assert set(r.json()) >= {"error", "message"}, r.text
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "documents" in cases[8][0].json()["message"]  # key with inputs that are not documents
    assert cases[-1][0].json()["available"] == ["ident", "norm"]
    with pytest.raises(NotRegisteredError) as info:
        apply_model(server.url, db, "docs", "ghost", [1], username=USER, password=PASSWORD)
    assert "Registered models: ident, norm" in str(info.value) and "none" not in str(info.value)


def test_distinct_names_do_not_accumulate_open_collections(served):
    server, db = served
    with httpx.Client(auth=AUTH) as http:
        for i in range(60):
            assert http.post(f"{server.url}/apply_model", json=body(f"db{i}", collection=f"c{i}")).status_code == 404
            assert http.get(f"{server.url}/models/db{i}/c{i}").json() == {"models": []}
        assert server.open_collections == 0  # nothing opened for names without a registered model
        assert http.post(f"{server.url}/apply_model", json=body(db)).status_code == 200
    assert server.open_collections == 1


def test_a_stalled_database_does_not_freeze_the_server_and_an_outage_is_a_503(server_uri, unique_name):
    parts = urlsplit(server_uri)
    with TcpProxy((parts.hostname, parts.port)) as proxy:
        client = superduperdb.connect(f"mongodb://127.0.0.1:{proxy.port}/", cluster=None,
                                      config={"mongodb.timeout_ms": 1500})
        client[unique_name].docs.create_model("norm", testmodels.norm)
        try:
            with superduperdb.serve(client, host="127.0.0.1", port=0, block=False) as server:
                url = server.url
                assert httpx.get(f"{url}/models/{unique_name}/docs").json() == {"models": ["norm"]}
                proxy.hold()  # the database stalls: requests to it wait
                stalled: dict = {}
                thread = threading.Thread(target=lambda: stalled.setdefault(
                    "r", httpx.get(f"{url}/models/{unique_name}/docs", timeout=60)))
                thread.start()
                poll(lambda: proxy.held > 0, 30, "the request to reach the stalled database")
                started = time.monotonic()
                assert httpx.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
                assert time.monotonic() - started < 2 and thread.is_alive()
                proxy.release()
                thread.join(60)
                assert stalled["r"].status_code == 200
                proxy.cut()  # the database goes away
                for r in (httpx.get(f"{url}/models/{unique_name}/docs", timeout=30),
                          httpx.post(f"{url}/apply_model", json=body(unique_name, "norm", [[3, 4]]), timeout=30)):
                    assert r.status_code == 503, r.text
                    assert r.json()["error"] == "DatabaseUnavailable" and r.headers["retry-after"]
                proxy.restore()
                r = httpx.post(f"{url}/apply_model", json=body(unique_name, "norm", [[3, 4]]), timeout=30)
                assert r.status_code == 200 and r.json()["outputs"] == [5.0]
        finally:
            proxy.restore()
            proxy.release()
            client.drop_database(unique_name)
            client.close()
