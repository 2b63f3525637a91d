"""Types, models, watchers and jobs of a collection (mixed into ``Collection``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ModelsMixin:
    """Types, models, watchers and jobs of a collection (mixed into ``Collection``)."""

    # -- types ----------------------------------------------------------------------
    def create_type(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a type: an object with ``encode(x) -> bytes``, ``decode(bytes)`` and ``types``.

        Values of the classes in ``object.types`` are stored as
        ``{'_content': {'bytes': ..., 'type': name}}`` and decoded on read.

        Examples
        --------
        >>> class Point:
        ...     def __init__(self, x, y): self.x, self.y = x, y
        >>> class PointType:
        ...     types = (Point,)
        ...     def encode(self, p): return f"{p.x},{p.y}".encode()
        ...     def decode(self, b): return Point(*map(float, b.decode().split(",")))
        >>> docs.create_type("point", PointType())   # doctest: +SKIP
        """
        return self._types.create(name, object, serializer)

    def list_types(self) -> list[str]:
        """Names of the built-in and registered types."""
        return self._types.names()

    def delete_type(self, name: str, force: bool = False) -> None:
        """Delete a registered type; refused while documents or models use it, unless ``force``."""
        users = [f"model {m['name']!r}" for m in self._metadata.list("models", {"type": name})]
        self._types.delete(name, force=force, users=users)

    @property
    def types(self) -> Mapping[str, Any]:
        """``{name: type object}``, loaded lazily."""
        from .views import LazyMapping

        return LazyMapping(self._types.names, self._types.get)

    # -- models -------------------------------------------------------------------
    def create_model(
        self,
        name: str,
        object: Any,
        *,
        preprocess: Any = None,
        postprocess: Any = None,
        type: str | None = None,
        batch_size: int = 32,
        device: Any = None,
        method: str | None = None,
        serializer: str | None = None,
        key: str | None = None,
        filter: Mapping | None = None,
        features: Mapping[str, str] | None = None,
        active: bool = True,
    ):
        """Register a model: a ``torch.nn.Module``, a scikit-learn estimator or a callable.

        Parameters
        ----------
        name : str
            The model's name; outputs go to ``_outputs.<key>.<name>``.
        object : Any
            The model. Stored as a versioned artifact in GridFS.
        preprocess, postprocess : callable, optional
            Applied per item before batching / after splitting the batch (a
            torch module's own ``preprocess``/``postprocess`` methods are used
            by default).
        type : str, optional
            The type that encodes the outputs (default: chosen per value).
        batch_size, device, method
            See :class:`superduperdb.models.base.Model`.
        key : str, optional
            Shortcut: also :meth:`create_watcher` on ``key`` (with ``filter``,
            ``features``, ``active``), which starts a backfill job.

        Returns
        -------
        dict
            The model's metadata row; with ``key``, the backfill's :class:`JobGroup`.

        Examples
        --------
        >>> docs.create_model("length", len, key="text")   # doctest: +SKIP
        """
        row = self._services.models.create(name, object, preprocess=preprocess, postprocess=postprocess, type=type,
                                  batch_size=batch_size, device=device, method=method, serializer=serializer)
        if key is not None:
            return self.create_watcher(name, key, filter=filter, features=features, active=active)
        return row

    def list_models(self, **filter: Any) -> list[str]:
        return self._metadata.names("models", filter)

    def delete_model(self, name: str, force: bool = False) -> None:
        """Delete a model; refused while watchers or indexes use it, unless ``force``
        (which also deletes its watchers and their outputs)."""
        self._services.models.delete(name, force=force)

    def apply_model(self, name: str, inputs: Any = None, *, key: str | None = None, filter: Mapping | None = None,
                    write: bool = False, wait: bool = True, timeout: float | None = None,
                    progress: bool | None = None) -> Any:
        """Apply a registered model: ad hoc to inputs here, or in batch to the collection on the cluster.

        Parameters
        ----------
        name : str
            The model.
        inputs : list, pandas.DataFrame or pandas.Series, optional
            Ad hoc, in this process: a list of inputs (or of documents, with
            ``key``) gives a list of outputs; a DataFrame (``key`` names the
            column) or a Series gives a Series of outputs aligned to its index.
            Omitted: apply the model to the documents matching ``filter``, as a
            job on the cluster.
        key : str, optional
            The column of a DataFrame, the field of documents; required for
            DataFrames and for the batch form.
        filter : dict, optional
            The batch form: which documents (default: all).
        write : bool
            The batch form: ``False`` returns the outputs as a Series indexed
            by ``_id``; ``True`` stores them at ``_outputs.<key>.<name>`` (no
            watcher is created; later writes do not update them) and returns
            the job.
        wait, timeout, progress
            The batch form: wait for the job (``write=False`` always waits),
            how long, and whether to show a progress bar (as :meth:`Job.wait`).

        Returns
        -------
        list, pandas.Series or Job

        Raises
        ------
        QueryError
            A DataFrame without ``key``, the batch form without ``key``, or
            ``filter``/``write`` together with ``inputs``.
        MissingColumnError
            The DataFrame has no column ``key``.

        Examples
        --------
        >>> docs.apply_model("length", ["a", "abc"])                            # doctest: +SKIP
        [1, 3]
        >>> docs.apply_model("length", df, key="text")                          # doctest: +SKIP
        >>> docs.apply_model("length", filter={"lang": "en"}, key="text")       # doctest: +SKIP
        >>> docs.apply_model("length", key="text", write=True).result()         # doctest: +SKIP
        """
        from ..errors import QueryError
        from . import dataframe

        if inputs is None:
            return self._apply_batch(name, key, filter, write, wait, timeout, progress)
        if filter is not None or write:
            raise QueryError("filter= and write= apply the model to the collection's documents on the cluster: "
                             "pass them without inputs, e.g. apply_model(name, filter={...}, key='x').",
                             argument="inputs")
        found = dataframe.apply_inputs(inputs, key)
        if found is None:
            return self._services.models.apply(name, inputs, key=key)
        values, index = found
        column = key if key is not None else getattr(inputs, "name", None)
        outputs = self._services.models.apply(name, values)
        label = dataframe.column_namer(dataframe.OUTPUT_COLUMN)(name, column) if column is not None else name
        return dataframe.series(outputs, index, label)

    @property
    def models(self) -> Mapping[str, Any]:
        """``{name: the user's model object}``, loaded lazily."""
        from .views import LazyMapping

        return LazyMapping(lambda: self.list_models(), lambda n: self._services.models.load(n).object)

    # -- watchers -------------------------------------------------------------------
    def create_watcher(
        self,
        model: str,
        key: str,
        *,
        filter: Mapping | None = None,
        features: Mapping[str, str] | None = None,
        active: bool = True,
    ):
        """Keep ``_outputs.<key>.<model>`` computed for every matching document.

        Starts a backfill job over the documents already there (returned as a
        :class:`JobGroup`); from then on every insert, update and replace that
        touches ``key`` submits jobs. ``features={'x': 'other'}`` feeds the
        stored output of ``other`` on ``x`` instead of the raw field, and makes
        this watcher's jobs wait for ``other``'s. Cycles are refused.
        """
        return self._services.watchers.create(model, key, filter=filter, features=features, active=active)

    def list_watchers(self, **filter: Any) -> list[str]:
        return self._metadata.names("watchers", filter)

    def delete_watcher(self, name: str, force: bool = False) -> None:
        """Delete a watcher; ``force=True`` also removes its outputs (refused otherwise while there are any)."""
        self._services.watchers.delete(name, force=force)

    # -- jobs -----------------------------------------------------------------------
    def get_job(self, job_id: str):
        """The :class:`Job` with this id."""
        job = self._services.jobs.job(job_id)
        job.record()
        return job

    def list_jobs(self, status: str | None = None, **filter: Any) -> list[dict]:
        """Job records, newest first (``status='failed'`` ...)."""
        if status is not None:
            filter["status"] = status
        return list(self._services.jobs.table.find(filter, {"logs": 0}).sort("created_at", -1))

    def reconcile(self, *, wait: bool = False, timeout: float | None = None, ids: list | None = None):
        """Check outputs, indexes and neighbourhoods against the documents now, and repair them.

        Every write through this collection submits its jobs at once; this pass
        catches everything else: documents written by other programs or with
        ``refresh=False``, jobs lost with a worker or the database, outputs
        computed by an older model version. The master also runs it every
        ``reconcile.interval`` seconds for each watched collection.

        Parameters
        ----------
        wait : bool
            Wait for the pass to finish (raises as :meth:`Job.wait` does).
        timeout : float, optional
            With ``wait``: how long, in seconds (default ``jobs.wait_timeout``).
        ids : list, optional
            Check only these documents (default: all).

        Returns
        -------
        Job
            Its ``result()`` reports what was repaired, by kind: ``outputs_computed``,
            ``outputs_removed``, ``index_upserted``, ``index_removed``,
            ``neighbour_lists``, ``jobs_lost``, ``remaining`` (left for the next
            pass), ``documents_checked``.

        Examples
        --------
        >>> docs.reconcile(wait=True).result()["outputs_computed"]   # doctest: +SKIP
        100
        """
        job = self._services.jobs.submit("reconcile", {"ids": None if ids is None else list(ids)},
                                         record={"ids": None if ids is None else list(ids)})
        if wait:
            job.wait(timeout)
        return job

    def watch_job(self, job_id: str, timeout: float | None = None) -> None:
        """Stream a job's logs to the ``superduperdb.jobs`` logger until it finishes."""
        from ..jobs.watch import watch

        watch(self.get_job(job_id), timeout)

    # -- metadata -------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        return self._metadata.get_setting(key, default)

    def set_meta(self, key: str, value: Any) -> None:
        self._metadata.set_setting(key, value)
