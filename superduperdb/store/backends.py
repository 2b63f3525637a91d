"""Open the raw database client behind a URI.

``mongodb://`` and ``mongodb+srv://`` open a :class:`pymongo.MongoClient`;
``mongomock://<name>`` returns the in-process embedded store
(:class:`~superduperdb.store.embedded.EmbeddedClient`) registered under that
name, shared by every handle in this process (and so by a local cluster whose
workers are threads of this process), kept in memory only;
``file:///path/to/folder`` returns the embedded store kept in that folder
(:mod:`superduperdb.store.embedded.folder`), likewise shared by every handle in
this process, and opened by one process at a time.

TLS to MongoDB is pymongo's: ``tls=true``, ``tlsCAFile``,
``tlsCertificateKeyFile`` ... in the URI, or the config's ``mongodb.tls``,
``mongodb.tls_ca_file``, ``mongodb.tls_certificate_key_file`` and
``mongodb.tls_certificate_key_file_password`` (:func:`tls_options`), which
become the same pymongo options. Both travel unchanged to workers (the URI and
the config snapshot each job carries), and are shown redacted.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pymongo
import pymongo.errors

from ..config import Config, redact
from ..errors import ConfigError, ConnectionFailure, InvalidURIError

logger = logging.getLogger(__name__)

DEFAULT_URI = "mongomock://default"
SCHEMES = ("mongodb", "mongodb+srv", "mongomock", "file")
# The schemes whose store lives in this process (workers elsewhere cannot see it).
IN_PROCESS = ("mongomock", "file")
IN_MEMORY = "in memory: gone when this process exits"

_MOCKS: dict[str, Any] = {}
_MOCKS_LOCK = threading.Lock()
_FOLDERS: dict[str, Any] = {}  # resolved folder path -> EmbeddedClient over it
_FOLDER_USERS: dict[str, int] = {}  # clients (SuperDuperClient) holding each folder open


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


def looks_like_path(host: str) -> bool:
    """Whether ``connect(host)`` names a folder (``./data``, ``/abs``, ``~/x``, an existing folder), not a host."""
    return (host.startswith(("/", "./", "../", "~", ".\\", "..\\")) or host in (".", "..")
            or os.sep in host or Path(host).is_dir())


def folder_uri(path: str | os.PathLike) -> str:
    """The ``file://`` URI of a folder store (absolute).

    >>> folder_uri("/tmp/my data")
    'file:///tmp/my%20data'
    """
    return "file://" + quote(str(Path(path).expanduser().resolve()))


def folder_of(uri: str) -> Path:
    """The folder a ``file://`` URI names (``file:///abs``, ``file://./rel`` or ``file://rel``), absolute."""
    parts = urlsplit(uri)
    path = unquote(parts.path)
    if parts.netloc and parts.netloc != "localhost":  # file://./data, file://data: relative
        path = unquote(parts.netloc) + path
    if not path:
        raise InvalidURIError(f"{uri!r} names no folder: use file:///absolute/path or superduperdb.connect('./folder').",
                              uri=uri, valid=list(SCHEMES))
    return Path(path).expanduser().resolve()


def storage_of(uri: str) -> str:
    """Where a URI's data lives, in words (for reprs and ``superduperdb info``)."""
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    if scheme == "mongomock":
        return IN_MEMORY
    if scheme == "file":
        return f"folder {str(folder_of(uri))!r}: kept on disk"
    return "MongoDB server"


def in_process_uri(uri: str) -> bool:
    """Whether the store behind ``uri`` lives in this process (``mongomock://``, ``file://``)."""
    return "://" in uri and urlsplit(uri).scheme in IN_PROCESS


def folder_client(path: Path, cfg: Config | None = None) -> Any:
    """The process-wide embedded store kept in folder ``path`` (opened, and locked, on first use)."""
    import mongomock.gridfs

    from .embedded import EmbeddedClient
    from .embedded.folder import Folder

    key = str(path)
    with _MOCKS_LOCK:
        client = _FOLDERS.get(key)
        if client is None or client.folder.closed:
            mongomock.gridfs.enable_gridfs_integration()
            interval = cfg.mongodb.flush_interval if cfg is not None else 1.0
            client = _FOLDERS[key] = EmbeddedClient(folder=Folder(path, flush_interval=interval))
            if len(_FOLDERS) == 1:
                atexit.register(close_folders)
        return client


def hold_folder(uri: str) -> None:
    """A client keeps the folder of ``uri`` open until :func:`release_folder`."""
    key = str(folder_of(uri))
    with _MOCKS_LOCK:
        _FOLDER_USERS[key] = _FOLDER_USERS.get(key, 0) + 1


def release_folder(uri: str) -> None:
    """A client is done with the folder of ``uri``: the last one closes it (synced, unlocked)."""
    key = str(folder_of(uri))
    with _MOCKS_LOCK:
        left = _FOLDER_USERS[key] = max(0, _FOLDER_USERS.get(key, 0) - 1)
        client = _FOLDERS.pop(key, None) if left == 0 else None
    if client is not None:
        client.close()


def close_folders() -> None:
    """Sync and release every folder this process opened (at interpreter exit)."""
    with _MOCKS_LOCK:
        clients = list(_FOLDERS.values())
        _FOLDERS.clear()
    for client in clients:
        try:
            client.close()
        except OSError as exc:  # pragma: no cover - a failing disk at exit
            logger.error("could not close the store folder %s: %s", client.folder.path, exc)


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
            "mongodb://host:port/, mongodb+srv://..., file:///path/to/folder (or connect('./folder')) for "
            "the embedded store kept in a folder, or mongomock://<name> for the embedded store in memory.",
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
    if scheme == "file":
        return folder_client(folder_of(uri), cfg)
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
    if isinstance(client, pymongo.MongoClient):  # (its attribute ``folder`` is a database of that name)
        nodes = client.topology_description.server_descriptions() or {}
        hosts = ",".join(f"{h}:{p}" for h, p in nodes) or "localhost:27017"
        return f"mongodb://{hosts}/"
    if getattr(client, "folder", None) is not None:
        uri = folder_uri(client.folder.path)
        with _MOCKS_LOCK:
            _FOLDERS.setdefault(str(client.folder.path), client)
        return uri
    if _is_mongomock_client(client):
        return register_mongomock(client)
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
