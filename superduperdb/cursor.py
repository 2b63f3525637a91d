"""A lazy cursor that decodes typed values as documents stream out.

:class:`Cursor` wraps pymongo's (or mongomock's) cursor: ``sort``, ``skip``,
``limit``, ``batch_size`` ... are passed through and return the same cursor,
so chaining works as in pymongo. Documents are decoded on the way out; with
``features={'x': 'model'}`` the stored output of ``model`` on ``x`` replaces
the raw field; similarity results carry ``_score``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator, Mapping
from typing import Any

_CHAINING = (
    "sort", "skip", "limit", "batch_size", "hint", "max_time_ms", "comment", "collation",
    "where", "allow_disk_use", "max", "min", "max_scan", "add_option", "remove_option",
)
_PASSTHROUGH = ("alive", "close", "distinct", "explain", "retrieved", "address", "cursor_id", "collection")


class Cursor:
    """Iterate over decoded documents.

    Parameters
    ----------
    source : pymongo.cursor.Cursor or iterable
        The raw documents.
    transform : callable
        ``raw document -> document`` (decoding, features, scores).
    description : str
        Shown by ``repr``.
    """

    def __init__(self, source: Any, transform: Callable[[dict], dict], description: str = "") -> None:
        self._source = source
        self._transform = transform
        self._description = description
        self._iterator: Iterator | None = None

    # -- pymongo's chaining modifiers -------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        source = self.__dict__.get("_source")
        if name in _CHAINING and hasattr(source, name):

            def modifier(*args: Any, **kwargs: Any) -> Cursor:
                if self._iterator is not None:
                    from pymongo.errors import InvalidOperation

                    raise InvalidOperation("cannot set options after executing query")
                result = getattr(source, name)(*args, **kwargs)
                if result is not source and result is not None:
                    self._source = result
                return self

            return modifier
        if name in _PASSTHROUGH and hasattr(source, name):
            return getattr(source, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- iteration ----------------------------------------------------------------
    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> dict:
        if self._iterator is None:
            self._iterator = iter(self._source)
        return self._transform(next(self._iterator))

    next = __next__

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, slice):
            raise TypeError("Slice a cursor with .skip(n).limit(m) instead.")
        if hasattr(self._source, "__getitem__"):
            return self._transform(self._source[index])
        raise TypeError("This cursor cannot be indexed.")

    def to_list(self, length: int | None = None) -> list[dict]:
        """All remaining documents (at most ``length``), like pymongo's ``Cursor.to_list``."""
        out = []
        for doc in self:
            out.append(doc)
            if length is not None and len(out) >= length:
                break
        return out

    def rewind(self) -> Cursor:
        if hasattr(self._source, "rewind"):
            self._source.rewind()
        self._iterator = None
        return self

    def clone(self) -> Cursor:
        source = self._source.clone() if hasattr(self._source, "clone") else self._source
        return Cursor(source, self._transform, self._description)

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        if hasattr(self._source, "close"):
            self._source.close()

    def __repr__(self) -> str:
        return f"<superduperdb.Cursor {self._description}>"

    def _repr_html_(self) -> str:
        return f"<code>{html.escape(repr(self))}</code>"


def substitute_features(doc: dict, features: Mapping[str, str]) -> dict:
    """Replace ``doc[key]`` by ``doc['_outputs'][key][model]`` where present."""
    outputs = doc.get("_outputs") or {}
    for key, model in features.items():
        value = (outputs.get(key) or {}).get(model)
        if value is not None:
            doc[key] = value
    return doc


class ListSource:
    """Documents already in memory (similarity results), with ``skip``/``limit``."""

    def __init__(self, documents: list[dict]) -> None:
        self.documents = documents
        self._skip = 0
        self._limit = 0

    def skip(self, n: int) -> ListSource:
        self._skip = int(n)
        return self

    def limit(self, n: int) -> ListSource:
        self._limit = abs(int(n))
        return self

    def batch_size(self, n: int) -> ListSource:
        return self

    def __iter__(self) -> Iterator[dict]:
        docs = self.documents[self._skip:]
        return iter(docs[: self._limit] if self._limit else docs)

    def __getitem__(self, index: int) -> dict:
        return list(self)[index]
