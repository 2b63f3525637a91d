"""The layers a config is resolved from: the packaged defaults, YAML files, the
original ``config.json`` layout, and ``SUPERDUPERDB_<SECTION>__<KEY>`` variables.

Each reader returns a plain mapping (nested or dotted keys); nothing here
knows the order of the layers (see :mod:`superduperdb.config.resolve`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

logger = logging.getLogger(__name__)

ENV_PREFIX = "SUPERDUPERDB_"
_WARNED: set[str] = set()


@cache
def _defaults_text() -> str:
    return resources.files("superduperdb").joinpath("defaults.yaml").read_text()


def load_defaults() -> dict[str, Any]:
    """The packaged defaults (``superduperdb/defaults.yaml``), flat: ``{"section.key": value}``."""
    return flatten(yaml.safe_load(_defaults_text()))


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def flatten_layer(layer: Mapping) -> dict[str, Any]:
    """A layer's values by dotted path; nested dicts and dotted keys (``{"mongodb.uri": ...}``) both work."""
    flat: dict[str, Any] = {}
    for key, value in layer.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            flat[str(key)] = value
    return flat


def read_yaml(path: Path) -> dict:
    """A YAML file of sections (``superduperdb.yaml``, ``~/.superduperdb/config.yaml``).

    Raises
    ------
    ConfigError
        The file is not valid YAML, or does not hold a mapping.
    """
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", path=str(path)) from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a mapping of sections, not {type(data).__name__}.", path=str(path))
    return dict(data)


def read_original_json(path: Path) -> dict:
    """Translate the original ``config.json`` layout into our sections.

    Raises
    ------
    ConfigError
        The file is not valid JSON, or does not hold an object.
    """
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


def env_layer(environ: Mapping[str, str], text_keys: Collection[str] = ()) -> dict[str, Any]:
    """``SUPERDUPERDB_<SECTION>__<KEY>`` variables as a layer.

    Values are parsed as YAML scalars (``true``, ``5``, ``null``), except that
    a key in ``text_keys`` (a string-valued key) keeps its text unless it
    parses as null: ``SUPERDUPERDB_MASTER__RESOURCE=123`` is ``"123"``.
    Variables starting with ``SUPERDUPERDB_TEST_`` are the test suite's, not keys.
    """
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(ENV_PREFIX + "TEST_"):
            continue
        key = name[len(ENV_PREFIX):].lower().replace("__", ".")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        layer[key] = raw if key in text_keys and value is not None and not isinstance(value, str) else value
    return layer
