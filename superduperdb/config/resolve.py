"""The resolved :class:`Config` and :func:`resolve_config`, which layers the sources."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, suggest, unknown_name
from .coerce import coerce_values
from .secrets import redact_value
from .sections import Settings, build, schema
from .sources import env_layer, flatten_layer, load_defaults, read_original_json, read_yaml

DEFAULTS_SOURCE = "packaged defaults"


class Config:
    """A resolved, typed configuration snapshot.

    Sections are frozen dataclasses (:mod:`superduperdb.config.sections`) whose
    values were checked and converted when the config was made, so
    ``cfg.jobs.chunk_size`` is an ``int`` and ``cfg.master.warm_up`` a ``bool``.
    Values are read as attributes (``cfg.mongodb.uri``) or by dotted path
    (``cfg["mongodb.uri"]``); :meth:`source` says where each value came from.

    Reading a value gives the real one (connecting needs the password in
    ``mongodb.uri``); everything that shows the config (``repr``,
    :meth:`items`, :meth:`to_dict`) shows it with credentials redacted
    (:func:`~superduperdb.config.secrets.redact`). Only ``to_dict(secrets=True)``,
    the snapshot a job's ``Target`` carries to the workers, holds them in clear.

    Parameters
    ----------
    values : dict
        Every key's value, by dotted path.
    sources : dict
        Where each value came from, by dotted path.

    Raises
    ------
    ConfigError
        A value is not of its key's type (see :mod:`superduperdb.config.coerce`).
    """

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
        self._values = coerce_values(values, sources)
        self._sources = dict(sources)
        self._settings: Settings = build(self._values)

    def __getitem__(self, path: str) -> Any:
        if path not in self._values:
            raise ConfigError(unknown_name("config key", path, self._values), key=path, valid=sorted(self._values))
        return self._values[path]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.__dict__["_settings"], name)

    @property
    def settings(self) -> Settings:
        """The typed tree: :class:`~superduperdb.config.sections.Settings`."""
        return self._settings

    def source(self, path: str) -> str:
        """Where the value at ``path`` (e.g. ``"mongodb.uri"``) came from."""
        self[path]
        return self._sources[path]

    def items(self) -> list[tuple[str, Any, str]]:
        """``(path, value, source)`` for every key, sorted by path, credentials redacted (for display)."""
        return [(k, redact_value(self._values[k], k), self._sources[k]) for k in sorted(self._values)]

    def to_dict(self, *, secrets: bool = False) -> dict:
        """The values as a nested dict.

        Parameters
        ----------
        secrets : bool, default False
            Keep credentials in clear. Only the job ``Target`` (the snapshot that
            workers resolve their config from) asks for them; by default the
            password in ``mongodb.uri`` (and any other URI) shows as ``***``, so
            the dict is safe to print, log or store.
        """
        tree: dict = {}
        for path, value in self._values.items():
            node = tree
            *parents, leaf = path.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = copy.deepcopy(value) if secrets else redact_value(copy.deepcopy(value), path)
        return tree

    def replace(self, overrides: Mapping, source: str = "overrides") -> Config:
        """A new config with ``overrides`` (nested or dotted keys) applied and checked."""
        values, sources = dict(self._values), dict(self._sources)
        _apply(values, sources, overrides, source)
        return Config(values, sources)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and other._values == self._values

    def __repr__(self) -> str:
        changed = {k: redact_value(v, k) for k, v in self._values.items() if self._sources[k] != DEFAULTS_SOURCE}
        return f"Config({changed!r})"


def unknown_key(path: str, value: Any, keys: Iterable[str], source: str) -> str:
    """The message for an unknown config key: short, and about the section it is in.

    Every valid key on one line is hard to read (there are ~40): a key in a known
    section lists that section's keys; a section given a value (``cluster: local``)
    says it is a section and names its main key; anything else lists the sections.

    >>> keys = ["cluster.address", "cluster.n_workers", "jobs.chunk_size"]
    >>> unknown_key("cluster", "local", keys, "overrides")
    "'cluster' in overrides is a section, not a key: give one of its keys, e.g. cluster.address: 'local'. Keys of cluster: address, n_workers."
    >>> unknown_key("cluster.adress", "local", keys, "overrides")
    "Unknown config key 'cluster.adress' in overrides. Did you mean 'cluster.address'? Keys of cluster: address, n_workers."
    """
    keys = list(keys)
    sections: dict[str, list[str]] = {}
    for key in keys:
        if "." in key:
            section, name = key.split(".", 1)
            sections.setdefault(section, []).append(name)
    if path in sections:
        main = sections[path][0]
        return (f"{path!r} in {source} is a section, not a key: give one of its keys, e.g. "
                f"{path}.{main}: {value!r}. Keys of {path}: {', '.join(sections[path])}.")
    section = path.split(".", 1)[0] if "." in path else None
    message = f"Unknown config key {path!r} in {source}.{suggest(path, keys)}"
    if section in sections:
        return message + f" Keys of {section}: {', '.join(sections[section])}."
    top = sorted(sections) + sorted(k for k in keys if "." not in k)
    return message + f" Sections and top-level keys: {', '.join(top)}; `superduperdb config` lists every key."


def _apply(values: dict, sources: dict, layer: Mapping, source: str) -> None:
    for path, value in flatten_layer(layer).items():
        if path not in values:
            raise ConfigError(
                unknown_key(path, value, values, source),
                key=path,
                valid=sorted(values),
                source=source,
            )
        values[path] = value
        sources[path] = source


def resolve_config(
    overrides: Mapping | None = None,
    *,
    home: str | os.PathLike | None = None,
    cwd: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve the configuration from every source, in order, and check every value's type.

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
        On an unknown key, a value of the wrong type, or an unreadable file.
    """
    values = load_defaults()
    sources = {k: DEFAULTS_SOURCE for k in values}
    home = Path(home) if home is not None else Path.home()
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    for path, reader in (
        (home / ".superduperdb" / "config.yaml", read_yaml),
        (cwd / "superduperdb.yaml", read_yaml),
        (cwd / "config.json", read_original_json),
    ):
        if path.is_file():
            _apply(values, sources, reader(path), str(path))
    text_keys = {path for path, spec in schema().items() if spec.type is str}
    _apply(values, sources, env_layer(os.environ if environ is None else environ, text_keys), "environment")
    if overrides:
        _apply(values, sources, overrides, "keyword arguments")
    values = coerce_values(values, sources)
    _map_remote(values, sources)
    return Config(values, sources)


def _map_remote(values: dict, sources: dict) -> None:
    """The original layout from any layer: ``remote: true`` means the scheduler at
    ``jobs.host:jobs.port`` (unless ``cluster.address`` was set explicitly)."""
    if values["remote"] and values["jobs.host"] and values["jobs.port"] and sources["cluster.address"] == DEFAULTS_SOURCE:
        values["cluster.address"] = f"tcp://{values['jobs.host']}:{values['jobs.port']}"
        sources["cluster.address"] = f"remote + jobs.host/port ({sources['jobs.host']})"
