"""The model server: registered models applied over HTTP, for clients that cannot load them.

Start it with ``superduperdb serve --host 0.0.0.0 --port 8181`` or from Python
with :func:`serve`; call it with :func:`apply_model` (or any HTTP client, see
:mod:`superduperdb.server.app` for the endpoints). It reads models from the
same MongoDB as the cluster (``mongodb.uri``) and applies them in its own
process; it needs no Dask cluster. HTTP basic auth is on when
``serve.username`` and ``serve.password`` are set (the password is never
logged or shown).

Needs the ``serve`` extra: ``pip install 'superduperdb[serve]'`` (Starlette and Uvicorn).

Floor: entry points (the top). May import anything; nothing in the package imports it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..errors import AuthenticationError, ConfigError

logger = logging.getLogger(__name__)

__all__ = ["ModelServer", "serve", "apply_model", "AuthenticationError"]


class ModelServer:
    """A running model server (from :func:`serve` with ``block=False``): ``url``, :meth:`stop`.

    Usable as a context manager, which stops it on exit.
    """

    def __init__(self, server: Any, thread: threading.Thread, client: Any, owns_client: bool) -> None:
        self._server, self._thread, self._client, self._owns_client = server, thread, client, owns_client

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def host(self) -> str:
        return self._server.config.host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (waits up to ``timeout`` seconds for requests in flight)."""
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ModelServer({self.url!r})"


def serve(client: Any = None, *, host: str | None = None, port: int | None = None, username: str | None = None,
          password: str | None = None, block: bool = True, timeout: float = 30.0) -> ModelServer | None:
    """Serve the models of ``client``'s database over HTTP.

    Parameters
    ----------
    client : SuperDuperClient or str, optional
        The client whose databases are served, or a URI to connect to
        (default: the config's ``mongodb``). A URI gets a client without a
        cluster: models are applied in the server's process.
    host, port : optional
        Where to listen (default: ``serve.host``, ``serve.port`` of the config;
        port 0 picks a free one).
    username, password : str, optional
        HTTP basic auth (default: ``serve.username``, ``serve.password``).
        Give both or neither.
    block : bool
        Serve until interrupted (True, the CLI) or start in a thread and return
        a :class:`ModelServer` (False).
    timeout : float
        With ``block=False``: seconds to wait for the server to listen.

    Examples
    --------
    >>> import superduperdb
    >>> client = superduperdb.connect("mongomock://serve-doc", cluster=None)
    >>> client.db.docs.create_model("double", lambda x: 2 * x)["name"]
    'double'
    >>> with superduperdb.serve(client, port=0, block=False) as server:   # doctest: +SKIP
    ...     apply_model(server.url, "db", "docs", "double", [1, 2])
    [2, 4]
    """
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(f"The model server needs the serve extra: pip install 'superduperdb[serve]' ({exc}).") from None
    from ..client import SuperDuperClient

    owns = not isinstance(client, SuperDuperClient)
    if owns:
        client = SuperDuperClient(client, cluster=None)
    cfg = client.config.serve
    host = cfg.host if host is None else host
    port = cfg.port if port is None else port
    username = cfg.username if username is None else username
    password = cfg.password if password is None else password
    if (username is None) != (password is None):
        raise ConfigError("Give the model server both a username and a password (serve.username, serve.password), "
                          "or neither.", key="serve.password")
    if username is None:
        logger.warning("model server on %s:%s without authentication: set serve.username and serve.password", host, port)

    def collection_of(database: str, collection: str) -> Any:
        return client[database][collection]

    app = create_app(collection_of, username=username, password=password)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    if block:
        try:
            server.run()
        finally:
            if owns:
                client.close()
        return None
    thread = threading.Thread(target=server.run, name="superduperdb-model-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ConfigError(f"The model server could not listen on {host}:{port} (see the log).", key="serve.port")
        time.sleep(0.01)
    handle = ModelServer(server, thread, client, owns)
    logger.info("model server listening on %s", handle.url)
    return handle


def apply_model(url: str, database: str, collection: str, model: str, inputs: list, *, key: str | None = None,
                username: str | None = None, password: str | None = None, timeout: float = 60.0) -> list:
    """Apply a model through a model server (the original's ``apply_model`` over HTTP).

    Outputs come back as JSON data (arrays as lists). Raises
    :class:`AuthenticationError` (401), :class:`~superduperdb.errors.NotRegisteredError`
    (404, unknown model), :class:`~superduperdb.errors.ModelError` (400/422,
    bad input or a model that failed on it).
    """
    import base64
    import json
    import urllib.error
    import urllib.request

    from ..errors import ModelError, NotRegisteredError

    body = {"database": database, "collection": collection, "model": model, "inputs": list(inputs)}
    if key is not None:
        body["key"] = key
    request = urllib.request.Request(f"{url.rstrip('/')}/apply_model", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    if username is not None or password is not None:
        token = base64.b64encode(f"{username or ''}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["outputs"]
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read())
        except ValueError:
            detail = {"error": "HTTPError", "message": str(exc)}
        message = f"{detail.get('error')}: {detail.get('message')}"
        if exc.code == 401:
            raise AuthenticationError(f"The model server at {url} refused the credentials.") from None
        if exc.code == 404:
            raise NotRegisteredError("model", model, hint=f"(model server: {detail.get('message')})") from None
        raise ModelError(f"The model server answered {exc.code}: {message}", status=exc.code) from None
