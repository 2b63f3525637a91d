"""Layered configuration, resolved when connecting (never at import).

Sources, each overriding the previous:

1. packaged defaults (``superduperdb/defaults.yaml``, which is also the schema),
2. ``~/.superduperdb/config.yaml``,
3. ``./superduperdb.yaml``,
4. ``./config.json`` in the original SuperDuperDB layout (``remote``,
   ``master{host,port}``, ``jobs{host,port}``, ``mongodb{host,port}``),
5. ``SUPERDUPERDB_<SECTION>__<KEY>`` environment variables (values parsed as
   YAML scalars, so ``true``, ``5``, ``null`` work),
6. keyword arguments given to :func:`superduperdb.connect` /
   :class:`superduperdb.SuperDuperClient`.

A key that the defaults do not define raises :class:`ConfigError` listing the
valid keys. A resolved :class:`Config` is a plain, picklable snapshot: it is
what workers receive to open their own database handles.

Examples
--------
>>> cfg = resolve_config({"mongodb": {"uri": "mongomock://demo"}}, home="/nonexistent", cwd="/nonexistent", environ={})
>>> cfg.mongodb.uri
'mongomock://demo'
>>> cfg.source("mongodb.uri")
'keyword arguments'
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, unknown_name

logger = logging.getLogger(__name__)

ENV_PREFIX = "SUPERDUPERDB_"
_WARNED: set[str] = set()
DEFAULTS_SOURCE = "packaged defaults"


def _load_defaults() -> dict:
    text = resources.files("superduperdb").joinpath("defaults.yaml").read_text()
    return yaml.safe_load(text)


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


class Section:
    """Attribute view of one config section (read-only)."""

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", values)

    def __getattr__(self, key: str) -> Any:
        values = object.__getattribute__(self, "_values")
        if key in values:
            return values[key]
        name = object.__getattribute__(self, "_name")
        raise AttributeError(unknown_name("config key", f"{name}.{key}", [f"{name}.{k}" for k in values]))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only; pass overrides to connect() instead.")

    def __getstate__(self):
        return (self._name, self._values)

    def __setstate__(self, state):
        object.__setattr__(self, "_name", state[0])
        object.__setattr__(self, "_values", state[1])

    def __repr__(self) -> str:
        return f"Section({self._name!r}, {self._values!r})"


class Config:
    """A resolved configuration snapshot.

    Values are read as attributes (``cfg.mongodb.uri``) or by dotted path
    (``cfg["mongodb.uri"]``); :meth:`source` says where each value came from.
    """

    def __init__(self, values: dict[str, Any], sources: dict[str, str]) -> None:
        self._values = dict(values)
        self._sources = dict(sources)

    def __getitem__(self, path: str) -> Any:
        if path not in self._values:
            raise ConfigError(
                unknown_name("config key", path, self._values),
                key=path,
                valid=sorted(self._values),
            )
        return self._values[path]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        values = self.__dict__["_values"]
        if name in values:
            return values[name]
        section = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(name + ".")}
        if not section:
            sections = sorted({k.split(".")[0] for k in values})
            raise AttributeError(unknown_name("config section", name, sections))
        return Section(name, section)

    def source(self, path: str) -> str:
        """Where the value at ``path`` (e.g. ``"mongodb.uri"``) came from."""
        self[path]
        return self._sources[path]

    def items(self) -> list[tuple[str, Any, str]]:
        """``(path, value, source)`` for every key, sorted by path."""
        return [(k, self._values[k], self._sources[k]) for k in sorted(self._values)]

    def to_dict(self) -> dict:
        """The values as a nested dict."""
        tree: dict = {}
        for path, value in self._values.items():
            node = tree
            *parents, leaf = path.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = copy.deepcopy(value)
        return tree

    def replace(self, overrides: Mapping, source: str = "overrides") -> Config:
        """A new config with ``overrides`` (nested or dotted keys) applied."""
        values, sources = dict(self._values), dict(self._sources)
        _apply(values, sources, overrides, source)
        return Config(values, sources)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and other._values == self._values

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._values.items() if self._sources[k] != DEFAULTS_SOURCE}
        return f"Config({changed!r})"


def _apply(values: dict, sources: dict, layer: Mapping, source: str) -> None:
    for path, value in _flatten_layer(layer).items():
        if path not in values:
            raise ConfigError(
                unknown_name("config key", path, values, where=f"in {source}"),
                key=path,
                valid=sorted(values),
                source=source,
            )
        values[path] = value
        sources[path] = source


def _flatten_layer(layer: Mapping) -> dict[str, Any]:
    # Accept both nested dicts and dotted keys ({"mongodb.uri": ...}).
    flat: dict[str, Any] = {}
    for key, value in layer.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
        else:
            flat[str(key)] = value
    return flat


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", path=str(path)) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a mapping of sections, not {type(data).__name__}.", path=str(path))
    return dict(data)


def _read_original_json(path: Path) -> dict:
    """Translate the original ``config.json`` layout into our sections."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}", path=str(path)) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a JSON object.", path=str(path))
    layer = dict(data)
    if layer.get("redis") and str(path) not in _WARNED:
        _WARNED.add(str(path))
        logger.warning("%s: the 'redis' section is ignored: Dask replaces rq and redis.", path)
    remote = layer.get("remote")
    jobs = layer.get("jobs") or {}
    if remote and jobs.get("host") and jobs.get("port"):
        layer.setdefault("cluster", {})
        layer["cluster"] = {**layer["cluster"], "address": f"tcp://{jobs['host']}:{jobs['port']}"}
    elif remote is False:
        layer["cluster"] = {**layer.get("cluster", {}), "address": None}
    return layer


def _env_layer(environ: Mapping[str, str]) -> dict:
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(ENV_PREFIX + "TEST_"):
            continue
        key = name[len(ENV_PREFIX):].lower().replace("__", ".")
        try:
            layer[key] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            layer[key] = raw
    return layer


def resolve_config(
    overrides: Mapping | None = None,
    *,
    home: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve the configuration from every source, in order.

    Parameters
    ----------
    overrides : mapping, optional
        Highest-priority values, nested (``{"mongodb": {"uri": ...}}``) or
        dotted (``{"mongodb.uri": ...}``).
    home, cwd : path, optional
        Where to look for ``.superduperdb/config.yaml`` and for
        ``superduperdb.yaml`` / ``config.json`` (defaults: the user's home and
        the working directory).
    environ : mapping, optional
        Environment variables (default ``os.environ``).

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        On an unknown key or an unreadable file.
    """
    defaults = _flatten(_load_defaults())
    values = dict(defaults)
    sources = {k: DEFAULTS_SOURCE for k in values}
    home = Path(home) if home is not None else Path.home()
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    for path, reader in (
        (home / ".superduperdb" / "config.yaml", _read_yaml),
        (cwd / "superduperdb.yaml", _read_yaml),
        (cwd / "config.json", _read_original_json),
    ):
        if path.is_file():
            _apply(values, sources, reader(path), str(path))
    _apply(values, sources, _env_layer(os.environ if environ is None else environ), "environment")
    if overrides:
        _apply(values, sources, overrides, "keyword arguments")
    _map_remote(values, sources)
    return Config(values, sources)


def _map_remote(values: dict, sources: dict) -> None:
    """The original layout from any layer: ``remote: true`` means the scheduler at
    ``jobs.host:jobs.port`` (unless ``cluster.address`` was set explicitly)."""
    if values["remote"] and values["jobs.host"] and values["jobs.port"] and sources["cluster.address"] == DEFAULTS_SOURCE:
        values["cluster.address"] = f"tcp://{values['jobs.host']}:{values['jobs.port']}"
        sources["cluster.address"] = f"remote + jobs.host/port ({sources['jobs.host']})"
