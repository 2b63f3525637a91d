"""DataFrames on the facade's side: models applied to DataFrames.

How documents become rows (and rows documents) is decided once, in
:mod:`superduperdb.store.frames`, which the workers use too; the partitions
themselves (:func:`~superduperdb.store.frames.partition_queries`) are read and inserted on the workers
(:mod:`superduperdb.tasks.frames`).
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
