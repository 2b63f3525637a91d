"""Shared fixtures.

* ``mongo_uri`` / ``server_uri``: a MongoDB-wire server reachable over TCP:
  ``SUPERDUPERDB_TEST_MONGODB_URI`` if set (a real MongoDB), else a CongoDB
  started once per session (see tests/congodb_server.py).
* ``backend``: parametrised over the embedded mongomock store and the server.
* ``unique_name``: a fresh database / collection name per test.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# Workers and master processes started by tests inherit these (superduperdb/index/env.py says why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "superduperdb" / "numba"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def server_uri():
    """URI of a MongoDB-wire server over TCP (a real MongoDB if configured, else CongoDB)."""
    uri = os.environ.get("SUPERDUPERDB_TEST_MONGODB_URI")
    if uri:
        yield uri
        return
    from congodb_server import CongoDB

    with CongoDB() as server:
        yield server.uri


@pytest.fixture
def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["mongomock", "server"])
def backend(request, unique_name):
    """``(uri, database name)`` on each stand-in: the embedded store and the TCP server."""
    if request.param == "mongomock":
        return f"mongomock://{unique_name}", unique_name
    return request.getfixturevalue("server_uri"), unique_name


@pytest.fixture
def inline_client(unique_name):
    """A client on a private mongomock store, running jobs inline."""
    import superduperdb

    client = superduperdb.connect(f"mongomock://{unique_name}", cluster=None)
    yield client
    client.close()


@pytest.fixture
def docs(inline_client, unique_name):
    return inline_client[unique_name].docs


@pytest.fixture(scope="module", params=["inline", "threads", "processes"])
def mode_client(request):
    """A client in each cluster mode (module-scoped: clusters start once per module).

    * ``inline``: no cluster, jobs run in the calling process (embedded mongomock);
    * ``threads``: the embedded default, a LocalCluster whose workers are threads;
    * ``processes``: a LocalCluster with worker processes, against the TCP server.

    ``client.mode`` says which.
    """
    import superduperdb

    name = f"m{uuid.uuid4().hex[:8]}"
    # A short position lag: a snapshot right after a load records a safe write position at once.
    config = {"master.warm_up": False, "master.position_lag": 2.0}
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
    """A fresh collection, dropped afterwards, on the module's ``client`` fixture (a
    :func:`mode_client` unless the module defines ``client`` itself)."""
    yield client[unique_name].docs
    client.drop_database(unique_name)


@pytest.fixture(scope="module")
def client(mode_client):
    """The module's client: :func:`mode_client` (each cluster mode) unless the module overrides it."""
    return mode_client
