"""Connecting: :class:`SuperDuperClient`, :class:`Database` and :func:`connect`.

``SuperDuperClient`` mirrors :class:`pymongo.MongoClient`: ``client.my_db`` or
``client['my_db']`` is a :class:`Database`, whose ``db.my_coll`` or
``db['my_coll']`` is a :class:`~superduperdb.collection.Collection`. Every
other pymongo client or database method passes through.
"""

from __future__ import annotations

import atexit
import html
import logging
import threading
import weakref
from typing import Any

from .config import Config, redact, resolve_config
from .errors import ConfigError
from .store.backends import (
    folder_uri,
    hold_folder,
    looks_like_path,
    open_client,
    release_folder,
    scheme_of,
    storage_of,
    uri_from_config,
    uri_of_client,
)

logger = logging.getLogger(__name__)


class _Unset:
    def __repr__(self) -> str:
        return "<from config>"


UNSET: Any = _Unset()

# Clients not closed yet: at interpreter exit each finishes its jobs and closes (see _close_at_exit).
_OPEN: weakref.WeakSet = weakref.WeakSet()
_HOOKED = [False]


def _close_at_exit() -> None:
    for client in list(_OPEN):
        try:
            client._exit()
        except Exception as exc:  # noqa: BLE001 - never let one client's failure keep the others open
            logger.warning("closing %r at exit failed: %s: %s", client, type(exc).__name__, exc)


def _hook_exit() -> None:
    """Run :func:`_close_at_exit` before the interpreter stops its thread pools.

    ``concurrent.futures`` refuses new work once ``threading`` starts shutting down
    (before ``atexit`` handlers run): a job still running then fails with "cannot
    schedule new futures after shutdown". ``threading._register_atexit`` runs first.
    """
    if _HOOKED[0]:
        return
    _HOOKED[0] = True
    import concurrent.futures.thread  # noqa: F401 - registers its own hook first, so that ours runs before it

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise AttributeError
        register(_close_at_exit)
    except (AttributeError, RuntimeError):  # pragma: no cover - other Pythons, or already shutting down
        atexit.register(_close_at_exit)


class Database:
    """A database whose collections are superduperdb :class:`Collection` objects."""

    def __init__(self, client: SuperDuperClient, name: str) -> None:
        self.client = client
        self.name = name
        self._raw = client._raw[name]
        self._collections: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str):
        from .collection import Collection

        with self._lock:
            if name not in self._collections:
                self._collections[name] = Collection(self, name)
            return self._collections[name]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        raw = self.__dict__["_raw"]
        if callable(getattr(type(raw), name, None)):
            return getattr(raw, name)
        return self[name]

    def get_collection(self, name: str, **kwargs: Any):
        return self[name]

    def _forget(self, name: str) -> None:
        with self._lock:
            self._collections.pop(name, None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Database) and other.client is self.client and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self.client), self.name))

    def __repr__(self) -> str:
        return f"Database({self.client.uri!r}, {self.name!r})"


class SuperDuperClient:
    """A pymongo-like client to MongoDB (or the in-process stand-in) and a Dask cluster.

    Parameters
    ----------
    host : str or client, optional
        A URI (``mongodb://host:port/``, ``mongodb+srv://...``,
        ``file:///path/to/folder``, ``mongomock://<name>``), a folder path
        (``"./my-data"``, ``"/abs/path"``, ``"~/data"`` or an existing folder:
        the embedded store kept in that folder, see below), a host name, or an
        existing pymongo / mongomock client to wrap. Default: from the config,
        else the embedded ``mongomock://default``, which is in memory only.
    port : int, optional
        With a host name.
    cluster : str or None, optional
        ``None`` runs jobs inline; ``"local"`` starts a Dask LocalCluster owned
        by this client; ``"tcp://host:8786"`` uses an existing scheduler.
        Default: the config's ``cluster.address``.
    config : dict, optional
        Config overrides, nested or dotted (``{"jobs.chunk_size": 100}``).
    **pymongo_kwargs
        Passed to :class:`pymongo.MongoClient`.

    Notes
    -----
    The embedded store has two forms. ``mongomock://<name>`` keeps everything
    in this process's memory: it is gone when the process exits (``repr``
    says so). A folder (``connect("./my-data")``) keeps documents, metadata,
    job records, model artifacts and index snapshots on disk: a restarted
    kernel or another program opening the folder later sees everything. One
    process opens a folder at a time (a second gets
    :class:`~superduperdb.errors.StoreLockedError`); a killed process loses
    nothing it acknowledged, a power cut at most ``mongodb.flush_interval``
    seconds of writes. Several processes at once need a MongoDB server.

    Examples
    --------
    >>> from superduperdb import SuperDuperClient
    >>> client = SuperDuperClient("mongomock://example", cluster=None)
    >>> docs = client.my_db.documents
    >>> docs.insert_one({"text": "hello"}).acknowledged
    True
    >>> client.close()
    """

    def __init__(
        self,
        host: Any = None,
        port: int | None = None,
        *,
        cluster: Any = UNSET,
        config: dict | None = None,
        **pymongo_kwargs: Any,
    ) -> None:
        overrides: dict[str, Any] = dict(config or {})
        wrapped = None
        if host is not None and not isinstance(host, str):
            wrapped = host
            overrides["mongodb.uri"] = uri_of_client(host)
        elif host is not None:
            if "://" in host:
                overrides["mongodb.uri"] = host
            elif looks_like_path(host):
                overrides["mongodb.uri"] = folder_uri(host)
            else:
                overrides["mongodb.host"] = host
                if port is not None:
                    overrides["mongodb.port"] = port
        elif port is not None:
            overrides["mongodb.port"] = port  # as pymongo: localhost:<port>
        if cluster is not UNSET:
            overrides["cluster.address"] = cluster
        self.config: Config = resolve_config(overrides)
        uri = uri_from_config(self.config)  # the real URI: kept only in the config (see `uri`)
        scheme_of(uri)
        self._validate_cluster(self.config.cluster.address)
        if self.config.cluster.address is not None:
            from .cluster.security import tls_files

            tls_files(self.config)  # a half-set TLS config, or a missing file: ConfigError now
        self._raw = wrapped if wrapped is not None else open_client(uri, self.config, **pymongo_kwargs)
        self._owns_raw = wrapped is None and not uri.startswith(("mongomock://", "file://"))
        # A folder this client opened is held (and released on close); a client passed in stays the caller's.
        self._folder_uri = uri if uri.startswith("file://") and wrapped is None else None
        if self._folder_uri is not None:
            hold_folder(uri)  # the last client to close releases the folder
        self._databases: dict[str, Database] = {}
        self._cluster = None
        self._lock = threading.Lock()
        _OPEN.add(self)
        _hook_exit()
        logger.debug("connected to %s (cluster %s)", self.uri, redact(self.config.cluster.address))

    @staticmethod
    def _validate_cluster(address: Any) -> None:
        if address is None or address == "local":
            return
        if not isinstance(address, str) or "://" not in address:
            raise ConfigError(
                f"cluster must be None (inline), 'local', or a scheduler address such as "
                f"'tcp://host:8786', not {redact(address)!r}.",
                key="cluster.address",
                valid=[None, "local", "tcp://host:port"],
            )

    # -- databases ------------------------------------------------------------------
    def __getitem__(self, name: str) -> Database:
        with self._lock:
            if name not in self._databases:
                self._databases[name] = Database(self, name)
            return self._databases[name]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raw = self.__dict__.get("_raw")
        if raw is not None and callable(getattr(type(raw), name, None)):
            return getattr(raw, name)
        return self[name]

    def get_database(self, name: str, **kwargs: Any) -> Database:
        return self[name]

    @property
    def uri(self) -> str:
        """The database URI, password redacted (``mongodb://user:***@host/``).

        Credentials stay in the config: ``client.config.mongodb.uri`` is the real URI.
        """
        return redact(uri_from_config(self.config))

    @property
    def storage(self) -> str:
        """Where the data lives, in words: ``"in memory: gone when this process exits"`` (``mongomock://``),
        ``"folder '/path': kept on disk"`` (``file://``), or ``"MongoDB server"``."""
        return storage_of(uri_from_config(self.config))

    @property
    def raw(self) -> Any:
        """The underlying pymongo / mongomock client."""
        return self._raw

    # -- the cluster ------------------------------------------------------------------
    @property
    def cluster(self):
        """The :class:`~superduperdb.cluster.connection.Cluster` that runs jobs (started lazily)."""
        with self._lock:
            if self._cluster is None:
                from .cluster.connection import Cluster

                self._cluster = Cluster(self.config, self.uri)
            return self._cluster

    def _exit(self) -> None:
        """At interpreter exit: give the local cluster's jobs up to ``jobs.exit_timeout`` seconds, then
        close quietly (a script that ends without ``close()`` prints only its own output)."""
        from .cluster.connection import quiet_distributed

        cluster = self._cluster
        if cluster is not None and not cluster.inline:
            timeout = self.config.jobs.exit_timeout
            left = cluster.drain(timeout)
            if left:
                logger.warning("%d job(s) did not finish within jobs.exit_timeout (%g s) and were stopped with the "
                               "cluster; the reconciler redoes their work next time (call result.jobs.wait() or "
                               "client.close() to wait for them)", left, timeout)
        with quiet_distributed(restore=False):  # the process ends: nothing of Dask's is worth showing now
            self.close()

    def close(self) -> None:
        """Close the cluster this client started and the database connection."""
        _OPEN.discard(self)
        with self._lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()
        if self._owns_raw:
            self._raw.close()
        folder, self._folder_uri = self._folder_uri, None
        if folder is not None:
            release_folder(folder)

    def __enter__(self) -> SuperDuperClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        storage = self.storage
        note = "" if storage == "MongoDB server" else f", storage={storage!r}"
        return f"SuperDuperClient({self.uri!r}, cluster={redact(self.config.cluster.address)!r}{note})"

    def _repr_html_(self) -> str:
        return (f"<b>SuperDuperClient</b> <code>{html.escape(self.uri)}</code> ({html.escape(self.storage)}) "
                f"cluster <code>{html.escape(str(redact(self.config.cluster.address)))}</code>")


def connect(uri: str | None = None, *, cluster: Any = UNSET, **kwargs: Any) -> SuperDuperClient:
    """Connect to MongoDB (or the in-process stand-in) and a Dask cluster.

    Parameters
    ----------
    uri : str, optional
        ``mongodb://...``, ``mongodb+srv://...``, a folder (``"./my-data"`` or
        ``file:///path``: the embedded store, kept on disk there) or
        ``mongomock://<name>`` (the embedded store in memory only).
        Default: from the config, else ``mongomock://default``.
    cluster : str or None, optional
        See :class:`SuperDuperClient`.
    **kwargs
        Passed to :class:`SuperDuperClient`.

    Examples
    --------
    >>> import superduperdb
    >>> client = superduperdb.connect("mongomock://connect-example", cluster=None)
    >>> client.shop.products.count_documents({})
    0
    """
    return SuperDuperClient(uri, cluster=cluster, **kwargs)
