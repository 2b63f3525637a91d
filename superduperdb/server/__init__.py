"""The model server: registered models applied over HTTP, for clients that cannot load them.

Start it with ``superduperdb serve --host 0.0.0.0 --port 8181`` or from Python
with :func:`serve`; call it with :func:`apply_model` (or any HTTP client, see
:mod:`superduperdb.server.app` for the endpoints). It reads models from the
same MongoDB as the cluster (``mongodb.uri``) and applies them in its own
process; it needs no Dask cluster. HTTP basic auth is on when
``serve.username`` and ``serve.password`` are set (the password is never
logged or shown); HTTPS when ``serve.ssl_certfile`` and ``serve.ssl_keyfile``
are. Basic auth over plain HTTP on an address other than loopback is refused
unless ``serve.insecure`` (``--insecure``). Its limits (request size, body
timeout, failed logins per address) are in :mod:`superduperdb.server.limits`.

Needs the ``serve`` extra: ``pip install -e '.[serve]'`` in the clone (Starlette and Uvicorn).

Floor: entry points (the top). May import anything; nothing in the package imports it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from typing import Any

from ..errors import AuthenticationError, ConfigError, NotRegisteredError

logger = logging.getLogger(__name__)

__all__ = ["ModelServer", "serve", "apply_model", "AuthenticationError"]


class ModelServer:
    """A running model server (from :func:`serve` with ``block=False``): ``url``, :meth:`stop`.

    Usable as a context manager, which stops it on exit.
    """

    def __init__(self, server: Any, thread: threading.Thread, client: Any, owns_client: bool,
                 catalog: Catalog | None = None) -> None:
        self._server, self._thread, self._client, self._owns_client = server, thread, client, owns_client
        self._catalog = catalog

    @property
    def open_collections(self) -> int:
        """How many collections the server holds open (at most ``OPEN_COLLECTIONS``, the most recently used)."""
        return len(self._catalog.collections) if self._catalog is not None else 0

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def host(self) -> str:
        return self._server.config.host

    @property
    def https(self) -> bool:
        """Whether it serves HTTPS."""
        return self._server.config.ssl_certfile is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.https else 'http'}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether it still serves (False once stopped, or if it failed)."""
        return self._thread.is_alive()

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


class Catalog:
    """What the application asks of the database: model names, and applying a registered model.

    A name that is not registered is answered from the metadata alone; a collection is
    opened (and kept, among the :data:`~superduperdb.server.app.OPEN_COLLECTIONS` most
    recently used) only for a registered model.
    """

    def __init__(self, client: Any) -> None:
        from .app import Collections

        self.client = client
        self.collections = Collections(self._open)

    def _open(self, database: str, collection: str) -> Any:
        from ..client import Database
        from ..collection import Collection

        return Collection(Database(self.client, database), collection)  # not the client's own, unbounded, caches

    def _metadata(self, database: str, collection: str) -> Any:
        from ..store.metadata import MetadataStore

        return MetadataStore(self.client.raw[database], collection)

    def models(self, database: str, collection: str) -> list[str]:
        return self._metadata(database, collection).names("models")

    def apply(self, database: str, collection: str, model: str, inputs: list, key: str | None) -> Any:
        metadata = self._metadata(database, collection)
        # Only registered models: a request never registers one (not even an attribute model
        # 'parent.attr', which apply_model in a client would register on first use).
        if not metadata.exists("models", model):
            raise NotRegisteredError("model", model, metadata.names("models"),
                                     hint="The server applies registered models only: register it (an attribute "
                                          "model 'parent.attr' too) from a client first.")
        # registered_only: also if the model was deleted since the check above.
        return self.collections.get(database, collection).apply_model(model, inputs, key=key, registered_only=True)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(client: Any = None, *, host: str | None = None, port: int | None = None, username: str | None = None,
          password: str | None = None, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
          insecure: bool | None = None, block: bool = True, timeout: float = 30.0) -> ModelServer | None:
    """Serve the models of ``client``'s database over HTTP (or HTTPS).

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
    ssl_certfile, ssl_keyfile : str, optional
        Serve HTTPS with this PEM certificate (chain) and private key (default:
        ``serve.ssl_certfile``, ``serve.ssl_keyfile``). Give both or neither.
    insecure : bool, optional
        Allow basic auth over plain HTTP on an address other than loopback
        (default: ``serve.insecure``, false): the password would cross the
        network in clear, so this is refused unless asked for.
    block : bool
        Serve until interrupted (True) or start in a thread and return a
        :class:`ModelServer` (False).
    timeout : float
        With ``block=False``: seconds to wait for the server to listen.

    Raises
    ------
    ConfigError
        Half-configured auth or HTTPS, a certificate file that does not exist, basic
        auth over plain HTTP on a non-loopback address without ``insecure``, or a port
        that cannot be listened on.

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
        raise ConfigError(f"The model server needs the serve extra: pip install -e '.[serve]' in the clone of superduperdb ({exc}).") from None
    from ..client import SuperDuperClient

    owns = not isinstance(client, SuperDuperClient)
    if owns:
        client = SuperDuperClient(client, cluster=None)
    try:
        cfg = client.config.serve
        host = cfg.host if host is None else host
        port = cfg.port if port is None else port
        username = cfg.username if username is None else username
        password = cfg.password if password is None else password
        certfile = cfg.ssl_certfile if ssl_certfile is None else ssl_certfile
        keyfile = cfg.ssl_keyfile if ssl_keyfile is None else ssl_keyfile
        insecure = cfg.insecure if insecure is None else insecure
        _check(host, username, password, certfile, keyfile, insecure)
        catalog = Catalog(client)
        app = create_app(catalog, username=username, password=password, max_body_bytes=cfg.max_body_bytes,
                         body_timeout=cfg.body_timeout, max_failed_logins=cfg.max_failed_logins,
                         failed_login_window=cfg.failed_login_window, https=certfile is not None)
    except BaseException:
        if owns:
            client.close()
        raise
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                           ssl_certfile=certfile, ssl_keyfile=keyfile, server_header=False,
                                           timeout_keep_alive=5))
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
            if owns:
                client.close()
            raise ConfigError(f"The model server could not listen on {host}:{port} (see the log).", key="serve.port")
        time.sleep(0.01)
    handle = ModelServer(server, thread, client, owns, catalog)
    logger.info("model server listening on %s", handle.url)
    return handle


def _check(host: str, username: str | None, password: str | None, certfile: str | None, keyfile: str | None,
           insecure: bool) -> None:
    if (username is None) != (password is None):
        raise ConfigError("Give the model server both a username and a password (serve.username, serve.password), "
                          "or neither.", key="serve.password")
    if (certfile is None) != (keyfile is None):
        raise ConfigError("Give the model server both a certificate and its key (serve.ssl_certfile, "
                          "serve.ssl_keyfile; --ssl-certfile, --ssl-keyfile), or neither.", key="serve.ssl_keyfile")
    for key, path in (("serve.ssl_certfile", certfile), ("serve.ssl_keyfile", keyfile)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{key} names {path!r}, which is not a file: give a PEM file.", key=key)
    if username is not None and certfile is None and not _loopback(host) and not insecure:
        raise ConfigError(
            f"Refusing to serve HTTP basic auth over plain HTTP on {host!r}: the password would cross the network "
            "in clear. Give a certificate (serve.ssl_certfile and serve.ssl_keyfile, or --ssl-certfile and "
            "--ssl-keyfile), listen on 127.0.0.1 behind a TLS proxy, or pass --insecure (serve.insecure) if "
            "something else encrypts the traffic.", key="serve.insecure")
    if username is None:
        logger.warning("model server on %s without authentication: set serve.username and serve.password", host)
    elif certfile is None and not _loopback(host):
        logger.warning("model server on %s: basic auth over plain HTTP (insecure)", host)


def apply_model(url: str, database: str, collection: str, model: str, inputs: list, *, key: str | None = None,
                username: str | None = None, password: str | None = None, timeout: float = 60.0,
                cafile: str | None = None) -> list:
    """Apply a model through a model server (the original's ``apply_model`` over HTTP or HTTPS).

    Outputs come back as JSON data (arrays as lists). ``cafile``: the CA certificate (PEM)
    that signed an HTTPS server's certificate, when it is not one the system trusts. Raises
    :class:`AuthenticationError` (401, and 429 after too many wrong credentials),
    :class:`~superduperdb.errors.NotRegisteredError` (404, unknown model),
    :class:`~superduperdb.errors.ModelError` (400/413/422, bad input or a model that
    failed on it; 503, the server's database is away: ``status`` says which).
    """
    import base64
    import json
    import ssl
    import urllib.error
    import urllib.request

    from ..errors import ModelError

    body = {"database": database, "collection": collection, "model": model, "inputs": list(inputs)}
    if key is not None:
        body["key"] = key
    request = urllib.request.Request(f"{url.rstrip('/')}/apply_model", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    if username is not None or password is not None:
        token = base64.b64encode(f"{username or ''}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=cafile) if cafile is not None else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read())["outputs"]
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read())
        except ValueError:
            detail = {"error": "HTTPError", "message": str(exc)}
        message = f"{detail.get('error')}: {detail.get('message')}"
        if exc.code in (401, 429):
            raise AuthenticationError(f"The model server at {url} refused the credentials"
                                      + (f": {detail.get('message')}" if exc.code == 429 else "."),
                                      status=exc.code) from None
        if exc.code == 404 and detail.get("error") == "NotRegisteredError":
            raise NotRegisteredError("model", model, detail.get("available") or (),
                                     hint=f"(collection {database}.{collection} on the model server at {url})"
                                     ) from None
        raise ModelError(f"The model server answered {exc.code}: {message}", status=exc.code) from None
