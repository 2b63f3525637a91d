"""Typed config sections: one frozen dataclass per section of ``defaults.yaml``.

``defaults.yaml`` holds the keys and their default values; the annotations
here say what each value must be (``int | None``: an integer or null). Field
metadata adds a range (``min``, ``max``) or the valid alternatives (``valid``)
that a :class:`~superduperdb.errors.ConfigError` names when a value is refused.
:func:`schema` is the whole tree as ``{"section.key": Field}``.

Examples
--------
>>> schema()["jobs.chunk_size"].type
<class 'int'>
>>> schema()["cluster.processes"].optional
True
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, NamedTuple

from ..errors import unknown_name
from .secrets import redact_value

READ_ONLY = "Config is read-only; pass overrides to connect() instead."
PORT = {"min": 0, "max": 65535}


class _Node:
    """Base of the section classes: read-only, with did-you-mean for unknown keys."""

    _path: ClassVar[str] = ""

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        if not self._path:
            raise AttributeError(unknown_name("config section", key, names))
        raise AttributeError(unknown_name("config key", f"{self._path}.{key}", [f"{self._path}.{n}" for n in names]))

    def __repr__(self) -> str:
        """Every field, with credentials redacted (``MongoDBConfig(uri='mongodb://u:***@h/', ...)``)."""
        fields = ", ".join(f"{f.name}={redact_value(getattr(self, f.name), f.name)!r}"
                           for f in dataclasses.fields(self))  # type: ignore[arg-type]
        return f"{type(self).__name__}({fields})"


def _read_only(self: Any, *args: Any) -> None:
    raise dataclasses.FrozenInstanceError(READ_ONLY)


def _section(path: str):
    def wrap(cls: type) -> type:
        cls = dataclass(frozen=True, repr=False)(cls)  # _Node.__repr__ redacts credentials
        cls._path = path
        cls.__setattr__ = _read_only  # type: ignore[method-assign]
        cls.__delattr__ = _read_only  # type: ignore[method-assign]
        return cls
    return wrap


@_section("mongodb")
class MongoDBConfig(_Node):
    """``mongodb``: where the database is and how long to wait for it."""

    uri: str | None
    host: str | None
    port: int | None = field(metadata=PORT)
    timeout_ms: int = field(metadata={"min": 0})
    flush_interval: float = field(metadata={"min": 0})
    tls: bool | None
    tls_ca_file: str | None
    tls_certificate_key_file: str | None
    tls_certificate_key_file_password: str | None


@_section("cluster")
class ClusterConfig(_Node):
    """``cluster``: where jobs run (inline, a local Dask cluster, or a scheduler)."""

    address: str | None = field(metadata={"valid": "null (inline), 'local', or a scheduler address such as "
                                                   "'tcp://host:8786'"})
    n_workers: int = field(metadata={"min": 0})
    threads_per_worker: int = field(metadata={"min": 1})
    processes: bool | None
    timeout: float = field(metadata={"min": 0})
    job_resource: str | None


@_section("jobs")
class JobsConfig(_Node):
    """``jobs``: the scheduler of the original layout, chunking and waiting."""

    host: str | None
    port: int | None = field(metadata=PORT)
    chunk_size: int = field(metadata={"min": 1})
    wait_timeout: float | None = field(metadata={"min": 0})
    retries: int = field(metadata={"min": 0})
    retry_delay: float = field(metadata={"min": 0})
    exit_timeout: float = field(metadata={"min": 0})


@_section("reconcile")
class ReconcileConfig(_Node):
    """``reconcile``: the periodic sweep that keeps derived state in step with the data."""

    interval: float = field(metadata={"min": 0})
    batch_size: int = field(metadata={"min": 1})
    lost_after: float = field(metadata={"min": 0})
    defer: float = field(metadata={"min": 0})
    max_defer: float = field(metadata={"min": 0})


@_section("master")
class MasterConfig(_Node):
    """``master``: the vector-search actor and its index options."""

    host: str | None
    port: int | None = field(metadata=PORT)
    resource: str
    exact_threshold: int = field(metadata={"min": 0})
    exact_cost: int = field(metadata={"min": 0})
    epsilon: float = field(metadata={"min": 0})
    warm_up: bool
    warm_up_at: float = field(metadata={"min": 0, "max": 1})
    snapshot_interval: float = field(metadata={"min": 0})
    snapshot_changes: int = field(metadata={"min": 1})
    shards: int = field(metadata={"min": 1, "max": 64})
    shard_wait: float = field(metadata={"min": 0})
    lease_ttl: float = field(metadata={"min": 1})
    build_process: bool
    snapshot_dir: str | None
    position_lag: float = field(metadata={"min": 0})


@_section("metrics")
class MetricsConfig(_Node):
    """``metrics``: Prometheus metrics, the dashboard page and ``superduperdb status`` (docs/operations.md)."""

    enabled: bool
    interval: float = field(metadata={"min": 0.1})


@_section("types")
class TypesConfig(_Node):
    """``types``: how values without a registered type are stored."""

    pickle_fallback: bool


@_section("data")
class DataConfig(_Node):
    """``data``: the ``_fold`` given to inserted documents."""

    valid_probability: float = field(metadata={"min": 0, "max": 1})
    assign_folds: bool


@_section("downloads")
class DownloadsConfig(_Node):
    """``downloads``: defaults of the per-collection download settings (``n_download_workers``, ``download_timeout``)."""

    n_workers: int = field(metadata={"min": 1})
    timeout: float = field(metadata={"min": 0})


@_section("redis")
class RedisConfig(_Node):
    """``redis``: accepted from the original layout and ignored."""

    host: str | None
    port: int | None = field(metadata=PORT)


@_section("serve")
class ServeConfig(_Node):
    """``serve``: the model server (``superduperdb serve``): HTTP basic auth, HTTPS and its limits."""

    host: str
    port: int = field(metadata=PORT)
    username: str | None
    password: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    insecure: bool
    max_body_bytes: int = field(metadata={"min": 1})
    body_timeout: float = field(metadata={"min": 0})
    max_failed_logins: int = field(metadata={"min": 1})
    failed_login_window: float = field(metadata={"min": 0})


@_section("security")
class SecurityConfig(_Node):
    """``security``: signed artifacts (an HMAC key) and TLS between the cluster's processes."""

    artifact_key: str | None
    tls_ca_file: str | None
    tls_cert_file: str | None
    tls_key_file: str | None


@_section("")
class Settings(_Node):
    """Every section, and the top-level keys (``remote``)."""

    mongodb: MongoDBConfig
    cluster: ClusterConfig
    jobs: JobsConfig
    reconcile: ReconcileConfig
    master: MasterConfig
    metrics: MetricsConfig
    types: TypesConfig
    data: DataConfig
    downloads: DownloadsConfig
    remote: bool
    redis: RedisConfig
    serve: ServeConfig
    security: SecurityConfig


class Field(NamedTuple):
    """What the value at one dotted path must be."""

    type: type
    optional: bool
    metadata: dict


def _field(annotation: Any, metadata: Any) -> Field:
    args = typing.get_args(annotation)
    base = [a for a in args if a is not type(None)] if args else [annotation]
    if len(base) != 1:
        raise TypeError(f"config fields are one type or one type | None, not {annotation!r}")
    return Field(base[0], type(None) in args, dict(metadata))


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, _Node)


@cache
def schema() -> dict[str, Field]:
    """``{"section.key": Field}`` for every key (top-level keys have no dot)."""
    out: dict[str, Field] = {}
    for top in dataclasses.fields(Settings):
        annotation = typing.get_type_hints(Settings)[top.name]
        if not _is_section(annotation):
            out[top.name] = _field(annotation, top.metadata)
            continue
        hints = typing.get_type_hints(annotation)
        for f in dataclasses.fields(annotation):
            out[f"{top.name}.{f.name}"] = _field(hints[f.name], f.metadata)
    return out


def build(values: dict[str, Any]) -> Settings:
    """The typed tree of flat, already checked ``values`` (``{"section.key": value}``)."""
    hints = typing.get_type_hints(Settings)
    parts: dict[str, Any] = {}
    for top in dataclasses.fields(Settings):
        annotation = hints[top.name]
        if _is_section(annotation):
            keys = [f.name for f in dataclasses.fields(annotation)]
            parts[top.name] = annotation(**{k: values[f"{top.name}.{k}"] for k in keys})
        else:
            parts[top.name] = values[top.name]
    return Settings(**parts)
