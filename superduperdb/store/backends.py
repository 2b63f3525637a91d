"""Open the raw database client behind a URI.

``mongodb://`` and ``mongodb+srv://`` open a :class:`pymongo.MongoClient`;
``mongomock://<name>`` returns the in-process embedded store
(:class:`~superduperdb.store.embedded.EmbeddedClient`) registered under that
name, shared by every handle in this process (and so by a local cluster whose
workers are threads of this process).

TLS to MongoDB is pymongo's: ``tls=true``, ``tlsCAFile``,
``tlsCertificateKeyFile`` ... in the URI, or the config's ``mongodb.tls``,
``mongodb.tls_ca_file``, ``mongodb.tls_certificate_key_file`` and
``mongodb.tls_certificate_key_file_password`` (:func:`tls_options`), which
become the same pymongo options. Both travel unchanged to workers (the URI and
the config snapshot each job carries), and are shown redacted.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pymongo
import pymongo.errors

from ..config import Config, redact
from ..errors import ConfigError, ConnectionFailure, InvalidURIError

logger = logging.getLogger(__name__)

DEFAULT_URI = "mongomock://default"
SCHEMES = ("mongodb", "mongodb+srv", "mongomock")

_MOCKS: dict[str, Any] = {}
_MOCKS_LOCK = threading.Lock()


def mongomock_client(name: str):
    """The process-wide embedded store registered as ``mongomock://<name>``."""
    import mongomock.gridfs

    from .embedded import EmbeddedClient

    with _MOCKS_LOCK:
        if name not in _MOCKS:
            mongomock.gridfs.enable_gridfs_integration()
            _MOCKS[name] = EmbeddedClient()
        return _MOCKS[name]


def register_mongomock(client: Any) -> str:
    """Register an existing mongomock (or embedded) client; return the URI that finds it."""
    with _MOCKS_LOCK:
        for name, known in _MOCKS.items():
            if known is client:
                return f"mongomock://{name}"
        name = f"client-{id(client):x}"
        _MOCKS[name] = client
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()
    return f"mongomock://{name}"


def uri_from_config(cfg: Config) -> str:
    """The URI the config points at (``mongodb.uri``, else host/port, else the default)."""
    if cfg.mongodb.uri:
        return cfg.mongodb.uri
    if cfg.mongodb.host or cfg.mongodb.port:
        host = cfg.mongodb.host or "localhost"
        if "://" in host:
            return host
        if cfg.mongodb.port is None and ":" in host.rsplit("]", 1)[-1]:
            return f"mongodb://{host}/"  # "host:port", as pymongo.MongoClient accepts
        port = cfg.mongodb.port or 27017
        return f"mongodb://{host}:{port}/"
    return DEFAULT_URI


#: config key -> pymongo option
TLS_OPTIONS = {"tls": "tls", "tls_ca_file": "tlsCAFile", "tls_certificate_key_file": "tlsCertificateKeyFile",
               "tls_certificate_key_file_password": "tlsCertificateKeyFilePassword"}
_TLS_IMPLIED = ("tlscafile", "tlscertificatekeyfile", "tlscertificatekeyfilepassword", "tlscrlfile")


def tls_options(uri: str, cfg: Config) -> dict[str, Any]:
    """The pymongo keyword arguments of the config's ``mongodb.tls*`` keys (those that are set).

    Raises
    ------
    ConfigError
        A certificate file the config names does not exist.
    """
    options = {}
    for key, option in TLS_OPTIONS.items():
        value = getattr(cfg.mongodb, key)
        if value is None:
            continue
        if key in ("tls_ca_file", "tls_certificate_key_file") and not os.path.isfile(value):
            raise ConfigError(f"Config key 'mongodb.{key}' names {value!r}, which is not a file. Give the path of "
                              "a PEM file readable by this process (and by every worker).", key=f"mongodb.{key}")
        options[option] = value
    return options


def uses_tls(uri: str, cfg: Config) -> bool:
    """Whether pymongo connects to ``uri`` over TLS with this config (``mongodb+srv://`` does by default).

    >>> from superduperdb.config import resolve_config
    >>> cfg = resolve_config(home="/nonexistent", cwd="/nonexistent", environ={})
    >>> uses_tls("mongodb://h/?tls=true", cfg), uses_tls("mongodb://h/?tlsCAFile=/ca.pem", cfg), uses_tls("mongodb://h/", cfg)
    (True, True, False)
    """
    if cfg.mongodb.tls is not None:
        return cfg.mongodb.tls
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(uri).query)} if "://" in uri else {}
    for option in ("tls", "ssl"):
        if option in query:
            return query[option].lower() == "true"
    if any(query.get(o) for o in _TLS_IMPLIED) or any(getattr(cfg.mongodb, k) for k in list(TLS_OPTIONS)[1:]):
        return True
    return uri.startswith("mongodb+srv://")


def scheme_of(uri: str) -> str:
    """The validated scheme of ``uri``."""
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    if scheme not in SCHEMES:
        raise InvalidURIError(
            f"Cannot connect to {redact(uri)!r}: unknown URI scheme {scheme or '(none)'!r}. Use "
            "mongodb://host:port/, mongodb+srv://..., or mongomock://<name> for the in-process store.",
            uri=redact(uri),
            valid=list(SCHEMES),
        )
    return scheme


def open_client(uri: str, cfg: Config, **pymongo_kwargs: Any) -> Any:
    """Open (and check) the raw client for ``uri``.

    Raises
    ------
    InvalidURIError
        The scheme is not one of :data:`SCHEMES`.
    ConnectionFailure
        The server did not answer within ``mongodb.timeout_ms``.

    Both errors show the URI redacted (message and ``.uri``): the password stays in the config.
    """
    scheme = scheme_of(uri)
    if scheme == "mongomock":
        name = urlsplit(uri).netloc or urlsplit(uri).path.lstrip("/") or "default"
        return mongomock_client(name)
    timeout = cfg.mongodb.timeout_ms
    kwargs = {"serverSelectionTimeoutMS": timeout, "connectTimeoutMS": timeout, **tls_options(uri, cfg),
              **pymongo_kwargs}
    client = pymongo.MongoClient(uri, **kwargs)
    try:
        client.admin.command("ping")
    except (pymongo.errors.PyMongoError, ValueError, TypeError, KeyError) as exc:
        # pymongo raises bare ValueError/KeyError when a server answers authentication in a
        # shape it does not expect (a server without authentication): a failure to connect too.
        client.close()
        auth = not isinstance(exc, pymongo.errors.PyMongoError) or isinstance(exc, pymongo.errors.OperationFailure)
        if auth:
            message = (f"MongoDB at {redact(uri)!r} did not accept the connection's authentication "
                       f"({exc.__class__.__name__}). Check the user name, password and authSource; a server "
                       "without authentication refuses credentials: leave them out of the URI.")
        else:
            message = (f"Could not reach MongoDB at {redact(uri)!r} within {timeout} ms ({exc.__class__.__name__}). "
                       "Check that the server runs and the address is right, or raise mongodb.timeout_ms.")
        raise ConnectionFailure(message, uri=redact(uri), timeout_ms=timeout) from exc
    return client


def uri_of_client(client: Any) -> str:
    """The URI that reopens an existing pymongo or mongomock client."""
    if _is_mongomock_client(client):
        return register_mongomock(client)
    if isinstance(client, pymongo.MongoClient):
        nodes = client.topology_description.server_descriptions() or {}
        hosts = ",".join(f"{h}:{p}" for h, p in nodes) or "localhost:27017"
        return f"mongodb://{hosts}/"
    raise InvalidURIError(
        f"Cannot wrap a {type(client).__name__}: pass a URI, a pymongo.MongoClient or a mongomock.MongoClient.",
        uri=None,
    )


def in_process(raw: Any) -> bool:
    """Whether ``raw`` (a collection) lives in this process: the embedded store, or mongomock's own."""
    try:
        import mongomock
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(raw, mongomock.Collection)


def _is_mongomock_client(client: Any) -> bool:
    try:
        import mongomock
    except ImportError:  # pragma: no cover - a dependency
        return False
    return isinstance(client, mongomock.MongoClient)
