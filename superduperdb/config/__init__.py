"""Layered, typed configuration, resolved when connecting (never at import).

Sources, each overriding the previous:

1. packaged defaults (``superduperdb/defaults.yaml``, which also lists every key),
2. ``~/.superduperdb/config.yaml``,
3. ``./superduperdb.yaml``,
4. ``./config.json`` in the original SuperDuperDB layout (``remote``,
   ``master{host,port}``, ``jobs{host,port}``, ``mongodb{host,port}``),
5. ``SUPERDUPERDB_<SECTION>__<KEY>`` environment variables (values parsed as
   YAML scalars, so ``true``, ``5``, ``null`` work),
6. keyword arguments given to :func:`superduperdb.connect` /
   :class:`superduperdb.SuperDuperClient`.

A key that the defaults do not define raises :class:`ConfigError` listing the
valid keys. Every value is then checked against its section's type
(:mod:`superduperdb.config.sections`) and converted once: a value of the wrong
type raises :class:`ConfigError` naming the key, where it was set, the type
expected and the value. A resolved :class:`Config` is a plain, picklable
snapshot: it is what workers receive to open their own database handles.

Credentials never leave the config in clear: ``cfg.mongodb.uri`` is the real
URI, but ``repr(cfg)``, ``cfg.items()`` and ``cfg.to_dict()`` show it through
:func:`~superduperdb.config.secrets.redact` (``mongodb://user:***@host/``);
only ``cfg.to_dict(secrets=True)``, the snapshot a job carries, keeps them.

Modules: :mod:`~superduperdb.config.sources` (reading each layer),
:mod:`~superduperdb.config.secrets` (:func:`redact`),
:mod:`~superduperdb.config.sections` (the typed sections),
:mod:`~superduperdb.config.coerce` (checking values),
:mod:`~superduperdb.config.resolve` (:class:`Config`, :func:`resolve_config`).

Examples
--------
>>> cfg = resolve_config({"mongodb": {"uri": "mongomock://demo"}}, home="/nonexistent", cwd="/nonexistent", environ={})
>>> cfg.mongodb.uri
'mongomock://demo'
>>> cfg.source("mongodb.uri")
'keyword arguments'
>>> resolve_config({"jobs.chunk_size": "100"}, home="/nonexistent", cwd="/nonexistent", environ={}).jobs.chunk_size
100

Floor: a leaf (with ``errors``, ``version``): the standard library and yaml only; imports no
other part of the package but ``errors``.
"""

from __future__ import annotations

from .resolve import DEFAULTS_SOURCE, Config, resolve_config
from .secrets import redact, redact_url
from .sections import (
    ClusterConfig,
    DataConfig,
    DownloadsConfig,
    JobsConfig,
    MasterConfig,
    MongoDBConfig,
    ReconcileConfig,
    RedisConfig,
    Settings,
    TypesConfig,
)
from .sources import ENV_PREFIX

__all__ = [
    "DEFAULTS_SOURCE",
    "ENV_PREFIX",
    "ClusterConfig",
    "Config",
    "DataConfig",
    "DownloadsConfig",
    "JobsConfig",
    "ReconcileConfig",
    "MasterConfig",
    "MongoDBConfig",
    "RedisConfig",
    "Settings",
    "TypesConfig",
    "redact",
    "redact_url",
    "resolve_config",
]
