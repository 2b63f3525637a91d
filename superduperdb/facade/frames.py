"""pandas and Dask DataFrames of a collection, and models applied in batch (mixed into ``Collection``).

How documents become rows is decided in :mod:`superduperdb.store.frames`;
this mixin adds the collection's entry points: :meth:`to_pandas`,
:meth:`to_dask`, :meth:`from_dask` (also ``insert_many(ddf)``) and the
batch form of ``apply_model`` (a job on the cluster).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import QueryError
from ..store import frames
from . import dataframe

logger = logging.getLogger(__name__)

DEFAULT_PARTITION_SIZE = 10_000


class DataFrameMixin:
    """pandas and Dask DataFrames of a collection (mixed into ``Collection``)."""

    def to_pandas(self, filter: Mapping | None = None, projection: Any = None, *, outputs: str = "columns",
                  output_names: str | Callable[[str, str], str] = frames.OUTPUT_COLUMN, bookkeeping: bool = False,
                  **find_kwargs: Any):
        """The documents matching ``filter`` as a :class:`pandas.DataFrame`, one row each.

        Parameters
        ----------
        filter, projection, **find_kwargs
            As :meth:`find` (``like=``, ``n=``, ``sort=``, ``limit=`` ...).
        outputs : {'columns', 'nested', 'drop'}
            Model outputs as their own columns named by ``output_names``
            (default), as the ``_outputs`` dict column, or left out.
        output_names : str or callable
            ``'{model}({key})'`` (default: ``minilm(text)``), another format
            string, or ``(model, key) -> str``.
        bookkeeping : bool
            Keep the library's bookkeeping fields (``_fold``); left out by default.

        Returns
        -------
        pandas.DataFrame
            Arrays and tensors are object columns of numpy arrays; ``like=``
            queries keep ``_score``.

        Examples
        --------
        >>> import superduperdb
        >>> docs = superduperdb.connect("mongomock://to-pandas", cluster=None).db.docs
        >>> _ = docs.insert_many([{"x": 1}, {"x": 2}])
        >>> docs.to_pandas({}, {"_id": 0})
           x
        0  1
        1  2
        """
        cursor = self.find(filter, projection, **find_kwargs)
        return cursor.to_pandas(outputs=outputs, output_names=output_names, bookkeeping=bookkeeping)

    def to_dask(self, filter: Mapping | None = None, projection: Any = None, *,
                partition_size: int = DEFAULT_PARTITION_SIZE, outputs: str = "columns",
                output_names: str | Callable[[str, str], str] = frames.OUTPUT_COLUMN,
                meta: Any = None, sample: int = 100):
        """A :class:`dask.dataframe.DataFrame` of the documents matching ``filter``.

        The documents are split by ``_id`` into partitions of ``partition_size``
        (their ``_id`` ranges are found now; the documents are read when the
        DataFrame is computed, each partition by one task, decoded as
        :meth:`to_pandas` decodes). Compute it on this client's cluster with
        ``ddf.compute(scheduler=client.cluster.client)`` (the workers read the
        partitions in parallel); without ``scheduler=`` Dask's own scheduler
        reads them in threads of this process.

        Parameters
        ----------
        filter, projection
            As :meth:`find`.
        partition_size : int
            Documents per partition.
        outputs, output_names
            As :meth:`to_pandas`.
        meta : pandas.DataFrame, optional
            The columns and dtypes (an empty DataFrame). Default: those of the
            first ``sample`` documents the query returns; fields that appear only later are left
            out (pass ``meta`` or a ``projection`` to choose the columns).
        sample : int
            How many documents the default ``meta`` looks at.

        Returns
        -------
        dask.dataframe.DataFrame

        Examples
        --------
        >>> ddf = docs.to_dask({"x": {"$gt": 0}}, partition_size=1000)    # doctest: +SKIP
        >>> ddf.x.mean().compute(scheduler=client.cluster.client)         # doctest: +SKIP
        """
        import dask
        import dask.dataframe as dd

        from ..store.dispatch import delayed
        from ..tasks.frames import read_partition

        frames.check_outputs_mode(outputs)
        frames.column_namer(output_names)
        query = self._query(filter)
        queries = frames.partition_queries(self._raw, query, partition_size)
        options = {"outputs": outputs, "output_names": output_names}
        if meta is None:
            first = (self._decode(d) for d in self._raw.find(query, projection).limit(sample))
            meta = frames.to_frame(first, models=self._model_names(), **options).iloc[:0]
        elif not frames.is_pandas(meta):
            raise QueryError(f"meta must be an empty pandas DataFrame, not a {type(meta).__name__}.", argument="meta")
        target = self._services.scope.target
        token = dask.base.tokenize(self.full_name, queries, projection, outputs, str(output_names), list(meta.columns))
        parts = [delayed(read_partition)(target, q, projection, options, meta,
                                         dask_key_name=f"superduperdb-read-{token}-{i}")
                 for i, q in enumerate(queries)]
        # Object columns hold arrays, ObjectIds, images: Dask must not turn them into strings.
        with dask.config.set({"dataframe.convert-string": False}):
            if not parts:
                return dd.from_pandas(meta, npartitions=1)
            return dd.from_delayed(parts, meta=meta, verify_meta=False)

    def from_dask(self, ddf: Any, *, refresh: bool = True):
        """Insert the rows of a Dask DataFrame, each partition by a worker; watchers' jobs follow.

        Rows become documents as in ``insert_many(pandas_df)``. The partitions
        are computed and inserted on the cluster (inline: in this process);
        a partition that fails raises its error after the jobs of those that
        were written are submitted.

        Returns
        -------
        InsertManyResult
            ``inserted_ids`` in partition order, ``.jobs`` the watchers' jobs.

        Examples
        --------
        >>> ddf = source.to_dask()                                  # doctest: +SKIP
        >>> target.from_dask(ddf[ddf.x > 0]).jobs.wait()            # doctest: +SKIP
        """
        from .. import results

        if not frames.is_dask(ddf):
            raise QueryError(f"from_dask takes a dask.dataframe.DataFrame, not a {type(ddf).__name__}; "
                             "use insert_many for pandas DataFrames and lists of dicts.", argument="ddf")
        ids, jobs = self._services.writes.from_dask(ddf, refresh)
        return results.InsertManyResult(ids, True, jobs)

    # -- models applied in batch ---------------------------------------------------------------
    def _apply_batch(self, name: str, key: str | None, filter: Mapping | None, write: bool, wait: bool,
                     timeout: float | None, progress: bool | None, registered_only: bool = False):
        """``apply_model(name, filter=..., key=..., write=...)``: an ``apply`` job (see ModelsMixin.apply_model)."""
        found = self._services.models.apply_batch(name, key, filter, write, wait, timeout, progress,
                                                  registered_only)
        if write:
            return found
        import pandas as pd

        ids, values = found
        return dataframe.series(values, pd.Index(ids, name="_id", dtype=object),
                                frames.column_namer(frames.OUTPUT_COLUMN)(name, key))
