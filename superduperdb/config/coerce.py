"""Check and convert config values to the types of :mod:`superduperdb.config.sections`.

Every value is checked once, when a config is resolved. Values that only look
different are converted (``"5"`` or ``5.0`` for an integer, ``"yes"`` or ``1``
for a boolean, ``"0.5"`` for a number); anything else is refused with a
:class:`~superduperdb.errors.ConfigError` that names the key, where the value
came from, what was expected, the value, and the alternatives.

Examples
--------
>>> coerce("jobs.chunk_size", "100", "environment")
100
>>> coerce("jobs.chunk_size", "abc", "environment")
Traceback (most recent call last):
...
superduperdb.errors.ConfigError: Config key 'jobs.chunk_size' (set in environment) must be an integer, not 'abc' (str).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError
from .secrets import redact_value
from .sections import Field, schema

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, str):
        value = float(value.strip())
    if not isinstance(value, int | float) or math.isnan(value):
        raise ValueError
    return value  # an int is kept as written: 30 seconds stays 30


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    raise ValueError


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError


CONVERTERS: dict[type, tuple[Callable[[Any], Any], str]] = {
    int: (_int, "an integer"),
    float: (_float, "a number"),
    bool: (_bool, "true or false"),
    str: (_str, "a string"),
}


def expected(spec: Field) -> str:
    """What a value must be, in words (``"an integer or null"``)."""
    words = CONVERTERS[spec.type][1]
    if not spec.optional:
        return words
    return "true, false or null" if spec.type is bool else f"{words} or null"


def _alternatives(spec: Field) -> list[Any]:
    if spec.type is bool:
        return [True, False, None] if spec.optional else [True, False]
    return []


def _refuse(path: str, value: Any, source: str, spec: Field, must: str) -> ConfigError:
    kind = type(value).__name__
    value = redact_value(value, path)  # a secret, or a URI given where it does not belong, stays hidden
    valid = _alternatives(spec)
    listing = spec.metadata.get("valid") or ", ".join("null" if v is None else str(v).lower() for v in valid)
    given = "null" if value is None else f"{value!r} ({kind})"
    return ConfigError(
        f"Config key {path!r} (set in {source}) must be {must}, not {given}."
        + (f" Valid: {listing}." if listing else ""),
        key=path,
        expected=expected(spec),
        value=value,
        source=source,
        valid=valid,
    )


def coerce(path: str, value: Any, source: str, spec: Field | None = None) -> Any:
    """``value`` as the type of the key at ``path``.

    Parameters
    ----------
    path : str
        The dotted key (``"jobs.chunk_size"``).
    value : object
        The value as given (a YAML/JSON scalar, or a Python object).
    source : str
        Where it came from, for the error message.
    spec : Field, optional
        The key's type (default: from :func:`~superduperdb.config.sections.schema`).

    Returns
    -------
    object
        The converted value.

    Raises
    ------
    ConfigError
        The value is not of the key's type, or is out of its range.
    """
    spec = spec or schema()[path]
    if value is None and spec.optional:
        return None
    convert, _ = CONVERTERS[spec.type]
    try:
        out = None if value is None else convert(value)
    except (TypeError, ValueError, OverflowError):
        out = None
    if out is None:
        raise _refuse(path, value, source, spec, expected(spec))
    low, high = spec.metadata.get("min"), spec.metadata.get("max")
    if (low is not None and out < low) or (high is not None and out > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _refuse(path, value, source, spec, f"{CONVERTERS[spec.type][1]} {bounds}")
    return out


def coerce_values(values: Mapping[str, Any], sources: Mapping[str, str]) -> dict[str, Any]:
    """Every value of a flat ``{"section.key": value}`` mapping, converted (see :func:`coerce`)."""
    specs = schema()
    missing = set(values) ^ set(specs)
    if missing:
        raise RuntimeError(f"defaults.yaml and superduperdb.config.sections disagree on {sorted(missing)}")
    return {path: coerce(path, value, sources[path], specs[path]) for path, value in values.items()}
