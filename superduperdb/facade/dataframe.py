"""DataFrames on the facade's side: models applied to DataFrames, and the partitions of ``to_dask``.

How documents become rows (and rows documents) is decided once, in
:mod:`superduperdb.store.frames`, which the workers use too; the partitions
themselves are read and inserted on the workers (:mod:`superduperdb.tasks.frames`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import MissingColumnError, QueryError
from ..store.frames import cell, is_dask, is_pandas, is_series

if TYPE_CHECKING:
    import pandas as pd


# -- models applied to DataFrames ---------------------------------------------------------------
def apply_inputs(inputs: Any, key: str | None) -> tuple[list, Any] | None:
    """``(values, index)`` when ``inputs`` is a DataFrame or Series (``key`` names the column), else None."""
    if is_pandas(inputs):
        if key is None:
            raise QueryError("apply_model on a DataFrame needs key= (the column to apply the model to), e.g. "
                             f"apply_model(name, df, key={_first(inputs.columns)!r}).", argument="key")
        if key not in inputs.columns:
            raise MissingColumnError(f"The DataFrame has no column {key!r}; its columns: {list(inputs.columns)}.",
                                     column=key, columns=[str(c) for c in inputs.columns])
        column = inputs[key]
        return [cell(v) for v in column.tolist()], inputs.index
    if is_series(inputs):
        return [cell(v) for v in inputs.tolist()], inputs.index
    if is_dask(inputs):
        raise QueryError("apply_model takes a pandas DataFrame or Series; for a Dask DataFrame use "
                         "ddf[key].map_partitions(...) or apply the model to the collection on the cluster: "
                         "apply_model(name, filter={...}, key=...).", argument="inputs")
    return None


def _first(columns: Any) -> Any:
    return next((c for c in columns if not str(c).startswith("_")), "x")


def series(values: list, index: Any, name: str) -> pd.Series:
    """A Series of model outputs (arrays kept whole, as objects)."""
    import pandas as pd

    out = pd.Series([None] * len(values), index=index, name=name, dtype=object)
    for i, v in enumerate(values):
        out.iat[i] = cell(v)
    return out.infer_objects()


# -- partitions of to_dask -------------------------------------------------------------------
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
