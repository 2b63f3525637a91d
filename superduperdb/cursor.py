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
from itertools import islice
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

    def __init__(self, source: Any, transform: Callable[[dict], dict], description: str = "",
                 models: Callable[[], list[str]] | None = None, preview: Callable[[dict], dict] | None = None) -> None:
        self._source = source
        self._transform = transform
        self._preview = preview  # what _repr_html_ shows documents with (e.g. without downloading their URLs)
        self._description = description
        self._models = models
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
        while True:
            doc = self._transform(next(self._iterator))
            if doc is not SKIP:  # left out by decode_errors='skip'
                return doc

    next = __next__

    def __getitem__(self, index: int) -> dict:
        if isinstance(index, slice):
            raise TypeError("Slice a cursor with .skip(n).limit(m) instead.")
        if hasattr(self._source, "__getitem__"):
            doc = self._transform(self._source[index])
            if doc is SKIP:
                raise IndexError(f"the document at index {index} cannot be decoded (decode_errors='skip' leaves it out)")
            return doc
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
        return Cursor(source, self._transform, self._description, self._models, self._preview)

    def to_pandas(self, *, outputs: str = "columns", output_names: str | Callable[[str, str], str] = "{model}({key})",
                  bookkeeping: bool = False):
        """The remaining documents as a :class:`pandas.DataFrame`, one row each (consumes the cursor).

        Parameters
        ----------
        outputs : {'columns', 'nested', 'drop'}
            Model outputs as their own columns (default), as the ``_outputs``
            dict column, or left out.
        output_names : str or callable
            Names of output columns: a format string with ``{model}`` and
            ``{key}`` (default ``'{model}({key})'``, e.g. ``minilm(text)``) or a
            callable ``(model, key) -> str``.
        bookkeeping : bool
            Keep the library's bookkeeping fields (``_fold``, the training split
            given to documents once something trains on the collection); left
            out by default, as in the notebook table.

        Returns
        -------
        pandas.DataFrame
            Arrays and tensors are object columns of numpy arrays; ``like=``
            results keep their ``_score`` column.

        Examples
        --------
        >>> docs.find({}, {"_id": 0}).to_pandas()      # doctest: +SKIP
           x  length(text)
        0  1             5
        """
        from .store.frames import to_frame

        models = self._models() if self._models is not None else []
        return to_frame(self, models=models, outputs=outputs, output_names=output_names, bookkeeping=bookkeeping)

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        if hasattr(self._source, "close"):
            self._source.close()

    def __repr__(self) -> str:
        return f"<superduperdb.Cursor {self._description}>"

    def _repr_html_(self, rows: int = 10) -> str:
        """The first ``rows`` documents as a table (read from a clone: iterating this cursor is unaffected)."""
        from .facade.render import cursor_html

        caption = html.escape(repr(self))
        if not hasattr(self._source, "clone"):  # e.g. an aggregation: showing it would consume it
            return f"<code>{caption}</code>"
        clone = self.clone()
        if self._preview is not None:
            clone._transform = self._preview  # showing a cursor has no side effects (find(download=True))
        try:
            docs = list(islice(clone, rows + 1))
        finally:
            if hasattr(clone._source, "close"):
                clone._source.close()
        models = self._models() if self._models is not None else []
        return cursor_html(docs, rows=rows, caption=caption, models=models)


#: What a transform returns for a document that ``decode_errors='skip'`` leaves out.
SKIP = object()


def check_features(features: Any) -> dict[str, str] | None:
    """``features`` as a dict of field name to model name, or :class:`QueryError`."""
    if features is None:
        return None
    if not isinstance(features, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in features.items()):
        from .errors import QueryError

        raise QueryError(f"features must be a dict of field name to model name, such as {{'text': 'encoder'}}, "
                         f"not {features!r}.", argument="features")
    return dict(features)


def substitute_features(doc: dict, features: Mapping[str, str]) -> dict:
    """Replace ``doc[key]`` by ``model``'s stored output on ``key`` where present.

    Anything else at ``_outputs`` (a value another program wrote there) is ignored.
    """
    from .store.layout import MISSING, stored_output

    if not isinstance(doc, Mapping) or not isinstance(doc.get("_outputs"), Mapping):
        return doc
    for key, model in features.items():
        value = stored_output(doc, key, model)
        if value is not MISSING and value is not None:
            doc[key] = value
    return doc


class ListSource:
    """Documents already in memory (similarity results) behind pymongo's cursor modifiers.

    ``skip``, ``limit``, ``batch_size`` and ``sort`` validate their arguments as
    pymongo's cursor does and, as there, apply in the order sort, skip, limit
    whatever order they were called in. Without ``sort`` the documents keep
    their order (similarity, best first); with it, ties keep that order.
    """

    def __init__(self, documents: list[dict], *, skip: int = 0, limit: int = 0,
                 sort: list[tuple[str, int]] | None = None, plan: dict | None = None) -> None:
        self.documents = documents
        self.plan: dict = {} if plan is None else plan  # how the search answered: explain()
        self._skip = 0
        self._limit = 0
        self._sort: list[tuple[str, int]] = []
        self.skip(skip)
        self.limit(limit)
        if sort is not None:
            self.sort(sort)

    def skip(self, skip: int) -> ListSource:
        if not isinstance(skip, int):
            raise TypeError(f"skip must be an integer, not {type(skip)}")
        if skip < 0:
            raise ValueError("skip must be >= 0")
        self._skip = skip
        return self

    def limit(self, limit: int) -> ListSource:
        # As pymongo: 0 is no limit; a negative limit is one batch of abs(limit) documents.
        if not isinstance(limit, int):
            raise TypeError(f"limit must be an integer, not {type(limit)}")
        self._limit = abs(limit)
        return self

    def batch_size(self, batch_size: int) -> ListSource:
        if not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an integer, not {type(batch_size)}")
        if batch_size < 0:
            raise ValueError("batch_size must be >= 0")
        return self

    def sort(self, key_or_list: Any, direction: Any = None) -> ListSource:
        """Order by document fields, as pymongo's ``Cursor.sort`` (``'_score'`` is one too)."""
        self._sort = sort_spec(key_or_list, direction)
        return self

    def clone(self) -> ListSource:
        return ListSource(self.documents, skip=self._skip, limit=self._limit, sort=self._sort or None, plan=self.plan)

    def explain(self) -> dict:
        """How a ``find(like=...)`` was answered, as pymongo's ``Cursor.explain()`` returns the server's plan.

        ``index``, ``n``, ``filtered`` (ids the filter matched, None without a filter),
        ``shards``: per shard ``shard``, ``worker`` (its Dask address), ``epoch``,
        ``size``, ``plan`` (``'exact'`` or ``'graph'``), ``candidates`` (vectors scored),
        ``ms``, ``source`` (``'snapshot'`` or ``'database'``: what the shard loaded from) and
        ``as_of`` (``position``: the write position its catch-up started from, ``now``: the
        collection's position then, ``behind``: how many writes it caught up); ``partial``:
        whether a shard was left out (``allow_partial=True``): its entry says ``missing``, and
        ``loading`` (phase, vectors done, elapsed) when it was still loading the index.
        """
        import copy

        return copy.deepcopy(self.plan)

    def _ordered(self) -> list[dict]:
        docs = list(self.documents)
        for key, direction in reversed(self._sort):  # stable sorts, last key first
            docs.sort(key=lambda d, k=key, r=direction < 0: _sort_key(_field(d, k), r), reverse=direction < 0)
        docs = docs[self._skip:]
        return docs[: self._limit] if self._limit else docs

    def __iter__(self) -> Iterator[dict]:
        return iter(self._ordered())

    def __getitem__(self, index: int) -> dict:
        # As pymongo's cursor[index]: no negative indices; IndexError past the end.
        if not isinstance(index, int):
            raise TypeError(f"index {index!r} cannot be applied to Cursor instances")
        if index < 0:
            raise IndexError("Cursor instances do not support negative indices")
        docs = self._ordered()
        if index >= len(docs):
            raise IndexError("no such item for Cursor instance")
        return docs[index]


def sort_spec(key_or_list: Any, direction: Any = None) -> list[tuple[str, int]]:
    """``[(key, 1 or -1), ...]`` from the arguments of pymongo's ``Cursor.sort``, checked as pymongo does."""
    if direction is not None:
        if not isinstance(key_or_list, str):
            raise TypeError(f"Expected a string and a direction, not {type(key_or_list)}")
        items: list = [(key_or_list, direction)]
    elif isinstance(key_or_list, str):
        items = [(key_or_list, 1)]
    elif isinstance(key_or_list, Mapping):
        items = list(key_or_list.items())
    elif isinstance(key_or_list, (list, tuple)):
        items = [(item, 1) if isinstance(item, str) else item for item in key_or_list]
    else:
        raise TypeError(f"if no direction is specified, key_or_list must be an instance of list, not {type(key_or_list)}")
    if not items:
        raise ValueError("key_or_list must not be empty")
    spec = []
    for item in items:
        try:
            key, value = item
        except (TypeError, ValueError):
            raise TypeError(f"sort takes a key or (key, direction) pairs, not {item!r}") from None
        if not isinstance(key, str):
            raise TypeError(f"first item in each key pair must be an instance of str, not {type(key)}")
        if isinstance(value, bool) or value not in (1, -1):
            raise ValueError(f"the sort direction of {key!r} must be 1 (pymongo.ASCENDING) or -1 "
                             f"(pymongo.DESCENDING) with like=, not {value!r}")
        spec.append((key, int(value)))
    return spec


_MISSING = object()


def _field(doc: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``_MISSING`` if absent); arrays are searched element-wise."""
    value = doc
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list):
            if part.isdigit():
                value = value[int(part)] if int(part) < len(value) else _MISSING
            else:
                found = [v for v in (_field(e, part) for e in value) if v is not _MISSING]
                value = found if found else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def _bson_rank(value: Any) -> int:
    # MongoDB's comparison order of BSON types (null and missing sort together, first).
    import datetime

    from bson import Binary, ObjectId, Timestamp
    from bson.decimal128 import Decimal128
    from bson.regex import Regex

    if value is _MISSING or value is None:
        return 1
    if isinstance(value, bool):
        return 8
    if isinstance(value, (int, float, Decimal128)):
        return 2
    if isinstance(value, str):
        return 3
    if isinstance(value, Mapping):
        return 4
    if isinstance(value, list):
        return 5
    if isinstance(value, (bytes, Binary)):
        return 6
    if isinstance(value, ObjectId):
        return 7
    if isinstance(value, datetime.datetime):
        return 9
    if isinstance(value, Timestamp):
        return 10
    if isinstance(value, Regex):
        return 11
    return 12


def _sort_key(value: Any, descending: bool = False) -> tuple:
    """A key that orders values as MongoDB's sort does (an array sorts by its least element
    ascending, by its greatest descending; an empty array before null)."""
    if isinstance(value, list):
        if not value:
            return (0, 0)
        keys = [_sort_key(v, descending) for v in value]
        return max(keys) if descending else min(keys)
    rank = _bson_rank(value)
    if rank == 1:
        return (1, 0)
    if rank == 2:
        from bson.decimal128 import Decimal128

        return (2, value.to_decimal() if isinstance(value, Decimal128) else value)
    if rank == 4:
        return (4, tuple((k, _sort_key(v)) for k, v in value.items()))
    if rank == 12:
        return (12, repr(value))
    try:
        return (rank, value) if rank != 11 else (rank, value.pattern)
    except TypeError:  # pragma: no cover
        return (rank, repr(value))
