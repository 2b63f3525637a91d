"""Documents as DataFrame rows, and DataFrame rows as documents: shared by both sides.

The one place that decides how documents become rows (used by
``Cursor.to_pandas``, ``Collection.to_pandas`` and the partitions of
``Collection.to_dask``, which :func:`superduperdb.tasks.frames.read_partition`
reads on the workers):

* one row per document, each top-level field a column (nested documents stay
  dicts); ``_score`` of ``like=`` queries is a column like any other;
* model outputs (``_outputs.<key>.<model>``) become their own columns, named
  ``<model>(<key>)`` by default (``outputs='columns'``); ``outputs='nested'``
  keeps the ``_outputs`` dict column, ``outputs='drop'`` leaves them out;
* arrays and tensors are object columns holding numpy arrays (a tensor is
  converted with ``.detach().cpu().numpy()``).

And back: :func:`frame_documents` turns a DataFrame into documents for
``insert_many`` and the workers of ``from_dask`` (a missing cell,
NaN/None/NaT, is a missing field; numpy scalars become Python numbers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import QueryError
from .layout import FINGERPRINTS, FOLD, OUTPUTS, model_field

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

OUTPUT_COLUMN = "{model}({key})"
OUTPUT_MODES = ("columns", "nested", "drop")


def is_pandas(value: Any) -> bool:
    """Whether ``value`` is a pandas DataFrame (without importing pandas)."""
    return type(value).__module__.startswith("pandas") and type(value).__name__ == "DataFrame"


def is_series(value: Any) -> bool:
    return type(value).__module__.startswith("pandas") and type(value).__name__ == "Series"


def is_dask(value: Any) -> bool:
    """Whether ``value`` is a Dask DataFrame."""
    return type(value).__module__.startswith("dask") and type(value).__name__ == "DataFrame"


def column_namer(naming: str | Callable[[str, str], str] = OUTPUT_COLUMN) -> Callable[[str, str], str]:
    """``(model, key) -> column name`` from a format string (``{model}``, ``{key}``) or a callable."""
    if callable(naming):
        return naming
    if isinstance(naming, str) and "{model}" in naming:
        return lambda model, key: naming.format(model=model, key=key)
    raise QueryError(f"output_names must be a format string with {{model}} (and {{key}}), such as "
                     f"{OUTPUT_COLUMN!r}, or a callable (model, key) -> str, not {naming!r}.",
                     argument="output_names")


def check_outputs_mode(outputs: str) -> str:
    if outputs not in OUTPUT_MODES:
        raise QueryError(f"outputs must be one of {', '.join(map(repr, OUTPUT_MODES))}, not {outputs!r}.",
                         argument="outputs")
    return outputs


def cell(value: Any) -> Any:
    """A value as a DataFrame cell: tensors become numpy arrays, the rest is unchanged."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def flatten_outputs(outputs: Mapping, models: Iterable[str]) -> Iterable[tuple[str, str, Any]]:
    """``(key, model, output)`` for every output in a document's ``_outputs``.

    A key may be a dotted path (``_outputs.a.b.model``); a level is an output
    when its name is a registered model's as stored (``parent/attr`` for the
    attribute model ``parent.attr``), else at depth two (outputs of a model
    deleted since).
    """
    fields = {model_field(m): m for m in models}  # an attribute model 'clip.text' is stored as 'clip/text'

    def walk(node: Mapping, prefix: tuple) -> Iterable[tuple[str, str, Any]]:
        for name, value in node.items():
            if prefix and (name in fields or not isinstance(value, Mapping)):
                yield ".".join(prefix), fields.get(name, name), value
            elif isinstance(value, Mapping):
                yield from walk(value, (*prefix, name))

    return walk(outputs, ())


# The library's bookkeeping in a document: left out of DataFrames and notebook tables unless asked.
BOOKKEEPING = (FINGERPRINTS, FOLD)


def row(doc: Mapping, models: Iterable[str], outputs: str, name: Callable[[str, str], str],
        bookkeeping: bool = False) -> dict:
    """One decoded document as a DataFrame row (see the module's docstring); ``bookkeeping``
    keeps the ``_fold`` a document got for training (fingerprints are never shown)."""
    out: dict = {}
    nested = None
    for field, value in doc.items():
        if field == OUTPUTS:
            nested = value
        elif field != FINGERPRINTS and (bookkeeping or field not in BOOKKEEPING):
            out[field] = cell(value)
    if nested is not None and outputs == "nested":
        out[OUTPUTS] = nested
    elif nested is not None and outputs == "columns" and isinstance(nested, Mapping):
        for key, model, value in flatten_outputs(nested, models):
            column = name(model, key)
            if column in doc and column != OUTPUTS:
                raise QueryError(f"The output column {column!r} ({model} on {key}) is also a field of the documents: "
                                 "choose other names with output_names= (a format string or a callable).",
                                 argument="output_names")
            out[column] = cell(value)
    return out


def to_frame(docs: Iterable[Mapping], *, models: Iterable[str] = (), outputs: str = "columns",
             output_names: str | Callable[[str, str], str] = OUTPUT_COLUMN,
             columns: list[str] | None = None, bookkeeping: bool = False) -> pd.DataFrame:
    """A DataFrame of decoded documents, one row each.

    Parameters
    ----------
    docs : iterable of dict
        Decoded documents (as a :class:`~superduperdb.cursor.Cursor` yields them).
    models : iterable of str
        The registered model names (to find outputs under dotted keys).
    outputs : {'columns', 'nested', 'drop'}
        Outputs as their own columns, as the ``_outputs`` dict column, or left out.
    output_names : str or callable
        The name of an output column: a format string with ``{model}`` and
        ``{key}`` (default ``'{model}({key})'``) or ``(model, key) -> str``.
    columns : list of str, optional
        Columns of an empty result (the columns the caller expects).
    bookkeeping : bool
        Keep the ``_fold`` column (the library's training split); default: left out.

    Examples
    --------
    >>> import numpy as np
    >>> df = to_frame([{"_id": 1, "x": np.zeros(2), "_outputs": {"x": {"norm": 0.0}}}], models=["norm"])
    >>> list(df.columns)
    ['_id', 'x', 'norm(x)']
    """
    import pandas as pd

    check_outputs_mode(outputs)
    namer = column_namer(output_names)
    models = list(models)
    rows = [row(d, models, outputs, namer, bookkeeping) for d in docs]
    if not rows:
        return pd.DataFrame(columns=list(columns or []))
    return pd.DataFrame.from_records(rows, columns=_columns(rows))


def _columns(rows: list[dict]) -> list[str]:
    """Every field of the rows, in order of first appearance (``_id`` first)."""
    seen: dict[str, None] = {"_id": None} if any("_id" in r for r in rows) else {}
    for r in rows:
        for k in r:
            if k not in seen:
                seen[k] = None
    return list(seen)


# -- documents from DataFrames ---------------------------------------------------------------
def missing(value: Any) -> bool:
    """Whether a cell is pandas' "no value" (NaN, None, NaT, pd.NA); arrays never are."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if type(value).__name__ in ("NaTType", "NAType"):
        return True
    if type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        try:
            return bool(value != value)  # numpy NaN / NaT scalars
        except (TypeError, ValueError):
            return False
    return False


def plain(value: Any) -> Any:
    """A cell as a BSON-friendly value: numpy scalars become Python scalars, Timestamps datetimes."""
    module = type(value).__module__
    if module == "numpy" and getattr(value, "ndim", 1) == 0 and hasattr(value, "item"):
        import numpy as np

        if isinstance(value, np.datetime64):
            return value.astype("datetime64[us]").item()
        return value.item()
    if module.startswith("pandas") and hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    return value


def frame_documents(df: pd.DataFrame, argument: str = "documents") -> list[dict]:
    """Documents from a DataFrame's rows: a missing cell is a missing field.

    Column names must be strings; the index is not stored (``df.reset_index()``
    keeps it as a column).

    Examples
    --------
    >>> import pandas as pd
    >>> frame_documents(pd.DataFrame({"a": [1, 2], "b": ["x", None]}))
    [{'a': 1, 'b': 'x'}, {'a': 2}]
    """
    bad = [c for c in df.columns if not isinstance(c, str)]
    if bad:
        raise QueryError(f"{argument}: DataFrame columns must be strings (field names), not {bad[:3]!r}; "
                         "rename them, e.g. df.columns = df.columns.map(str).", argument=argument)
    if df.columns.has_duplicates:
        dup = sorted(set(df.columns[df.columns.duplicated()]))
        raise QueryError(f"{argument}: the DataFrame has duplicate columns {dup!r}.", argument=argument)
    names = list(df.columns)
    return [{k: plain(v) for k, v in zip(names, values) if not missing(v)}
            for values in df.itertuples(index=False, name=None)]


# -- partitions -------------------------------------------------------------------------------
def decode_raw(types: Any, doc: dict) -> dict:
    """A raw document decoded as the Collection's reads decode it (fingerprints left out)."""
    doc = types.decode(doc)
    doc.pop(FINGERPRINTS, None)
    return doc


def conform(frame: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with exactly ``meta``'s columns, cast to its dtypes where the values allow."""
    extra = [c for c in frame.columns if c not in meta.columns]
    if extra:
        logger.debug("to_dask: fields %s are not in the DataFrame's columns (pass meta= to keep them)", extra)
    frame = frame.reindex(columns=meta.columns)
    for column, dtype in meta.dtypes.items():
        if frame[column].dtype != dtype:
            try:
                frame[column] = frame[column].astype(dtype)
            except (TypeError, ValueError):
                pass
    return frame


# -- _id ranges: the partitions of to_dask and of a batch apply_model -------------------------------------------------------------------
def partition_queries(raw: Any, query: dict, partition_size: int) -> list[dict]:
    """Queries that split the documents matching ``query`` into ``_id`` ranges of ``partition_size``.

    Each partition is an inclusive ``_id`` range (``$gte``/``$lte``, which MongoDB
    answers from its ``_id`` index); a partition whose ids are of several BSON
    types (ranges compare within one type) is an ``$or`` of one range per type
    (documents and arrays as ``_id``: their list).
    """
    if not isinstance(partition_size, int) or isinstance(partition_size, bool) or partition_size < 1:
        raise QueryError(f"partition_size must be a positive integer, not {partition_size!r}.",
                         argument="partition_size")
    # Sorted here: a server sorts by _id from its index, but the embedded store would sort whole documents.
    ids = sorted((d["_id"] for d in raw.find(query, {"_id": 1})), key=_id_key)
    queries = []
    for start in range(0, len(ids), partition_size):
        chunk = ids[start:start + partition_size]
        runs: list[list] = []
        for value in chunk:
            if runs and _id_key(runs[-1][-1])[0] == _id_key(value)[0]:
                runs[-1].append(value)
            else:
                runs.append([value])
        ranges = [{"_id": {"$gte": run[0], "$lte": run[-1]}} if _id_key(run[0])[0] < 20 else {"_id": {"$in": run}}
                  for run in runs]  # documents or arrays as _id (rare): listed, as their order is MongoDB's own
        queries.append(_and(query, ranges[0] if len(ranges) == 1 else {"$or": ranges}))
    return queries


def _id_key(value: Any) -> tuple:
    """``(type bracket, value)``: orders ``_id`` values of one bracket as MongoDB does, brackets apart."""
    import datetime

    from bson import ObjectId
    from bson.decimal128 import Decimal128
    from bson.int64 import Int64

    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, (int, float, Int64)):
        return (2, value)
    if isinstance(value, Decimal128):
        return (2, value.to_decimal())
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, ObjectId):
        return (7, value)
    if isinstance(value, datetime.datetime):
        return (9, value)
    if isinstance(value, (bytes, bytearray)):
        return (6, bytes(value))
    return (20, type(value).__name__, repr(value))  # documents, arrays ...: one bracket per type


def _and(query: dict, extra: dict) -> dict:
    return {"$and": [query, extra]} if query else extra
