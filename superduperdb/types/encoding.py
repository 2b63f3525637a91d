"""Walk documents, replacing typed values by ``{'_content': {...}}`` and back.

Stored form of a typed value::

    {'_content': {'bytes': Binary(...), 'type': '<type name>'}}

A field that still waits for its download holds ``{'_content': {'url': ..., 'type': ...}}``
and is left as it is by :func:`decode`.
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import bson
from bson.binary import Binary

from ..errors import EncodingError

CONTENT = "_content"
#: MongoDB stores documents nested at most 100 levels deep.
MAX_DEPTH = 100

_NATIVE = (
    str, int, float, bool, type(None), bytes, Binary, bson.ObjectId, datetime.datetime,
    bson.Int64, bson.Decimal128, bson.Timestamp, bson.Regex, bson.Code, bson.MinKey,
    bson.MaxKey, bson.DBRef, re.Pattern, uuid.UUID, decimal.Decimal,
)


class Encoder:
    """Encodes values with the types a :class:`~superduperdb.types.TypeRegistry` offers.

    Parameters
    ----------
    type_for : callable
        ``value -> (name, type) or None``.
    fallback : (name, type) or None
        Used for values no type claims (the pickle type when
        ``types.pickle_fallback`` is on); otherwise such values are refused.
    """

    def __init__(self, type_for: Callable[[Any], tuple[str, Any] | None], fallback=None) -> None:
        self.type_for = type_for
        self.fallback = fallback
        self.used: set[str] = set()

    def encode(self, value: Any, path: str = "", _open: tuple = ()) -> Any:
        """``value`` with every typed value replaced by its stored form.

        ``_open`` holds the ids of the containers being encoded around ``value``:
        one seen again is a document that contains itself, refused with
        :class:`EncodingError`, as is nesting deeper than BSON allows.
        """
        if isinstance(value, (Mapping, list, tuple)):
            if id(value) in _open:
                raise EncodingError(
                    f"The document contains itself at {path or 'the top level'!r} (a reference cycle): "
                    "a stored document must be a tree. Copy the value instead of referencing its container.",
                    path=path, value_type=type(value).__qualname__)
            if len(_open) >= MAX_DEPTH:
                raise EncodingError(
                    f"The document nests deeper than {MAX_DEPTH} levels at {path!r}, more than MongoDB stores. "
                    "Flatten it, or store the deep part as a registered type.",
                    path=path, value_type=type(value).__qualname__)
            inner = (*_open, id(value))
            if isinstance(value, Mapping):
                return {k: self.encode(v, f"{path}.{k}" if path else str(k), inner) for k, v in value.items()}
            return [self.encode(v, f"{path}[{i}]", inner) for i, v in enumerate(value)]
        if isinstance(value, _NATIVE):
            return value
        found = self.type_for(value)
        if found is None and _numpy_scalar(value):
            return self.encode(_scalar(value), path)  # np.int64(3) -> 3, as BSON has no numpy scalars
        found = found or self.fallback
        if found is None:
            raise EncodingError(
                f"Cannot store the {type(value).__module__}.{type(value).__qualname__} at "
                f"{path or 'the top level'!r}: no registered type stores it. Register one with "
                "collection.create_type(name, obj) (obj has encode, decode and types), convert "
                "the value to a BSON type, or set types.pickle_fallback to pickle it.",
                path=path,
                value_type=type(value).__qualname__,
            )
        name, type_ = found
        try:
            data = type_.encode(value)
        except Exception as exc:
            raise EncodingError(
                f"Type {name!r} failed to encode the value at {path!r}: {exc}", path=path, value_type=type(value).__qualname__
            ) from exc
        self.used.add(name)
        return {CONTENT: {"bytes": Binary(data), "type": name}}


def _numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item")


def _scalar(value: Any) -> Any:
    """A numpy scalar as the Python value BSON stores (datetime64 as a datetime)."""
    if type(value).__name__ == "datetime64":
        return value.astype("datetime64[us]").item()
    return value.item()


def is_content(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(CONTENT), Mapping)


def decode(value: Any, decode_one: Callable[[str, bytes, str], Any], path: str = "") -> Any:
    """Return a copy of ``value`` with every stored typed value decoded.

    ``decode_one(type_name, data, path)`` decodes one value; ``path`` is its
    dotted field path (``"a.b.0"``), for error messages.
    """
    if isinstance(value, Mapping):
        if is_content(value):
            content = value[CONTENT]
            if "bytes" in content and "type" in content:
                return decode_one(content["type"], bytes(content["bytes"]), path)
            return dict(value)
        return {k: decode(v, decode_one, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v, decode_one, f"{path}.{i}" if path else str(i)) for i, v in enumerate(value)]
    return value


def has_content(value: Any) -> bool:
    """Whether ``value`` holds any stored typed value (fast path for decode)."""
    if isinstance(value, Mapping):
        return CONTENT in value or any(has_content(v) for v in value.values())
    if isinstance(value, list):
        return any(has_content(v) for v in value)
    return False
