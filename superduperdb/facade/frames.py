"""pandas and Dask DataFrames of a collection, and models applied in batch (mixed into ``Collection``).

How documents become rows is decided in :mod:`superduperdb.facade.dataframe`;
this mixin adds the collection's entry points: :meth:`to_pandas`,
:meth:`to_dask`, :meth:`from_dask` (also ``insert_many(ddf)``) and the
batch form of ``apply_model`` (a job on the cluster).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import QueryError
from ..jobs.handles import JobGroup
from . import dataframe

logger = logging.getLogger(__name__)

DEFAULT_PARTITION_SIZE = 10_000


class DataFrameMixin:
    """pandas and Dask DataFrames of a collection (mixed into ``Collection``)."""

    def to_pandas(self, filter: Mapping | None = None, projection: Any = None, *, outputs: str = "columns",
                  output_names: str | Callable[[str, str], str] = dataframe.OUTPUT_COLUMN, **find_kwargs: Any):
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
        return cursor.to_pandas(outputs=outputs, output_names=output_names)

    def to_dask(self, filter: Mapping | None = None, projection: Any = None, *,
                partition_size: int = DEFAULT_PARTITION_SIZE, outputs: str = "columns",
                output_names: str | Callable[[str, str], str] = dataframe.OUTPUT_COLUMN,
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

        dataframe.check_outputs_mode(outputs)
        dataframe.column_namer(output_names)
        query = self._query(filter)
        queries = dataframe.partition_queries(self._raw, query, partition_size)
        options = {"outputs": outputs, "output_names": output_names}
        if meta is None:
            first = (self._decode(d) for d in self._raw.find(query, projection).limit(sample))
            meta = dataframe.to_frame(first, models=self._model_names(), **options).iloc[:0]
        elif not dataframe.is_pandas(meta):
            raise QueryError(f"meta must be an empty pandas DataFrame, not a {type(meta).__name__}.", argument="meta")
        target = self._services.scope.target
        token = dask.base.tokenize(self.full_name, queries, projection, outputs, str(output_names), list(meta.columns))
        parts = [dask.delayed(dataframe.read_partition, pure=False)(
                     target, q, projection, options, meta, dask_key_name=f"superduperdb-read-{token}-{i}")
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
        import dask

        from .. import results

        if not dataframe.is_dask(ddf):
            raise QueryError(f"from_dask takes a dask.dataframe.DataFrame, not a {type(ddf).__name__}; "
                             "use insert_many for pandas DataFrames and lists of dicts.", argument="ddf")
        self._services.writes._first_write()
        target = self._services.scope.target
        tasks = [dask.delayed(dataframe.insert_partition, pure=False)(target, part) for part in ddf.to_delayed()]
        done, error = self._run_tasks(tasks)
        ids = [i for r in done for i in r["ids"]]
        jobs = None
        if refresh and ids:
            jobs = self._services.jobs.submit_watchers(ids, download=any(r["urls"] for r in done))
        if error is not None:
            raise error
        return results.InsertManyResult(ids, True, jobs)

    def _run_tasks(self, tasks: list) -> tuple[list, BaseException | None]:
        """Results of delayed tasks on the cluster (inline: here, one after the other), and the first error."""
        import dask

        cluster = self._services.scope.cluster
        done, error = [], None
        if cluster.inline:
            for task in tasks:
                try:
                    done.append(dask.compute(task, scheduler="sync")[0])
                except Exception as exc:  # noqa: BLE001 - raised after the others ran
                    error = error or exc
            return done, error
        timeout = self._services.scope.config.jobs.wait_timeout
        for future in cluster.client.compute(tasks):
            try:
                done.append(future.result(timeout=timeout))
            except Exception as exc:  # noqa: BLE001 - raised after the others ran
                error = error or exc
        return done, error

    # -- models applied in batch ---------------------------------------------------------------
    def _apply_partitions(self, query: dict, chunk_size: int) -> list[dict]:
        """``query`` split into ``_id`` ranges, one per worker, each at least ``chunk_size`` documents
        (as ``to_dask`` reads): the partitions of a batch ``apply_model``, run at once on several workers."""
        cluster = self._services.scope.cluster
        if cluster.inline:
            return [query]
        workers = len(cluster.workers())
        total = self._raw.count_documents(query)
        parts = max(1, min(workers, -(-total // max(chunk_size, 1))))
        if parts == 1:
            return [query]
        return dataframe.partition_queries(self._raw, query, -(-total // parts))

    def _apply_batch(self, name: str, key: str | None, filter: Mapping | None, write: bool, wait: bool,
                     timeout: float | None, progress: bool | None):
        """``apply_model(name, filter=..., key=..., write=...)``: an ``apply`` job (see ModelsMixin.apply_model)."""
        if key is None:
            raise QueryError("apply_model on the collection needs key= (the field to apply the model to), e.g. "
                             f"apply_model({name!r}, filter={{}}, key='text').", argument="key")
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise QueryError(f"key must be a field name such as 'text', not {key!r}.", argument="key")
        model_row = self._services.models.ensure(name)  # NotRegisteredError here, not on a worker ('parent.attr' registered)
        query = self._query(filter)
        jobs = self._services.jobs
        chunk_size = self._services.scope.config.jobs.chunk_size
        queries = self._apply_partitions(query, chunk_size)
        group = JobGroup([jobs.submit("apply", {"model": name, "key": key, "filter": q, "write": bool(write),
                                                "chunk_size": chunk_size},
                                      record={"model": name, "field": key, "write": bool(write), "partition": k,
                                              "partitions": len(queries)},
                                      resources=model_row.get("resources"))  # a model on a GPU: a GPU worker
                          for k, q in enumerate(queries)])
        job = group[0] if len(group) == 1 else group
        if write:
            if wait:
                job.wait(timeout, progress=progress)
            return job
        table = self._database._raw[f"{self.name}._applied"]
        from bson import ObjectId

        job_ids = [ObjectId(j.id) for j in group]
        try:
            job.wait(timeout, progress=progress)
            parts = sorted(table.find({"job": {"$in": job_ids}}),
                           key=lambda p: (job_ids.index(p["job"]), p["n"], p["part"]))
        except BaseException:
            for j in group:
                if not j.done():
                    j.cancel()
            raise
        finally:
            table.delete_many({"job": {"$in": job_ids}})
        ids = [i for p in parts for i in p["ids"]]
        values = [v for p in parts for v in self._types.decode(p["outputs"])]
        import pandas as pd

        return dataframe.series(values, pd.Index(ids, name="_id", dtype=object),
                                dataframe.column_namer(dataframe.OUTPUT_COLUMN)(name, key))
