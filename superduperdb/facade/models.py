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
        resources: Mapping[str, float] | None = None,
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
        resources : dict, optional
            Dask worker resources the model's jobs request, e.g. ``{'GPU': 1}``.
            Default: ``{'GPU': 1}`` when ``device`` is a CUDA device or the torch
            module's parameters are on one (its jobs then run on workers started
            with ``superduperdb worker --gpu``), else none.
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
                                  batch_size=batch_size, device=device, method=method, serializer=serializer,
                                  resources=resources)
        if key is not None:
            return self.create_watcher(name, key, filter=filter, features=features, active=active)
        return row

    def list_models(self, **filter: Any) -> list[str]:
        return self._metadata.names("models", filter)

    def delete_model(self, name: str, force: bool = False) -> None:
        """Delete a model; refused while watchers or indexes use it, unless ``force``
        (which also deletes its watchers and their outputs)."""
        self._services.models.delete(name, force=force)

    def apply_model(self, name: str, inputs: list, *, key: str | None = None) -> list:
        """Apply a registered model ad hoc (in this process) to inputs, or to documents' ``key``."""
        return self._services.models.apply(name, inputs, key=key)

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
