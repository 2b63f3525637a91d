"""Types, models, watchers and jobs of a collection (mixed into ``Collection``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..store import records


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
        object: Any = None,
        *,
        preprocess: Any = None,
        postprocess: Any = None,
        preprocessor: str | None = None,
        forward: str | None = None,
        postprocessor: str | None = None,
        type: str | None = None,
        batch_size: int = 32,
        device: Any = None,
        method: str | None = None,
        method_kwargs: dict | None = None,
        serializer: str | None = None,
        key: str | None = None,
        filter: Mapping | None = None,
        features: Mapping[str, str] | None = None,
        active: bool = True,
        max_chunk_size: int | None = None,
        process_docs: bool = True,
        loader_kwargs: Mapping[str, Any] | None = None,
        semantic_index: bool | str = False,
        measure: str | None = None,
        neighbourhoods: Any = (),
        resources: Mapping[str, float] | None = None,
        on_error: str = "record",
    ):
        """Register a model: a ``torch.nn.Module``, a scikit-learn estimator or a callable.

        Parameters
        ----------
        name : str
            The model's name; outputs go to ``_outputs.<key>.<name>``.
            ``'parent.attr'`` (no ``object``) registers an attribute of the
            registered model ``parent``: a sub-module (e.g. the text tower of
            a two-tower model) or a method, resolved on the parent's stored
            object (see :mod:`superduperdb.models.composite`). Its outputs go
            to ``_outputs.<key>.parent/attr``. Watchers, indexes and
            :meth:`apply_model` also accept such a name without this call.
        object : Any
            The model. Stored as a versioned artifact in GridFS.
        preprocess, postprocess : callable, optional
            Applied per item before batching / after splitting the batch (a
            torch module's own ``preprocess``/``postprocess`` methods are used
            by default).
        preprocessor, forward, postprocessor : str, optional
            Names of registered parts (:meth:`create_preprocessor`,
            :meth:`create_forward`, :meth:`create_postprocessor`): the model is
            assembled from them when loaded, so one stored part serves
            several models. ``forward`` replaces ``object``.
        type : str, optional
            The type that encodes the outputs (default: chosen per value).
        batch_size, device, method, method_kwargs
            See :class:`superduperdb.models.base.Model`.
        resources : dict, optional
            Dask worker resources the model's jobs request, e.g. ``{'GPU': 1}``.
            Default: ``{'GPU': 1}`` when ``device`` is a CUDA device or the torch
            module's parameters are on one (its jobs then run on workers started
            with ``superduperdb worker --gpu``), else none.
        key : str, optional
            Shortcut: also :meth:`create_watcher` on ``key`` (with ``filter``,
            ``features``, ``active``), which starts a backfill job.
        max_chunk_size : int, optional
            With ``key``: documents per chunk of the watcher's jobs (default
            ``jobs.chunk_size``), as the original's ``max_chunk_size``.
        process_docs : bool
            With ``key``: ``False`` submits no backfill now (the reconciler's
            sweep still computes the existing documents' outputs later).
        loader_kwargs : dict, optional
            The original's DataLoader options: ``batch_size`` sets the batch
            size; ``num_workers`` and other DataLoader options are ignored with
            a warning (Dask workers give the parallelism).
        semantic_index : bool or str
            With ``key``: also index the outputs (:meth:`create_semantic_index`),
            in an index named after the model (``True``) or this name.
        measure : str, optional
            The index's measure (default ``'cosine'``; a custom one from :meth:`create_measure`).
        neighbourhoods : list, optional
            Neighbourhoods over the index: names (``n=10``), ``(name, n)`` pairs
            or ``{'name': ..., 'n': ...}`` dicts.
        on_error : {'record', 'raise'}
            With ``key``: what the watcher's jobs do with a document the model
            raises on. ``'record'`` (default): the batch is split until the
            failing documents are found, every other document gets its output,
            and each failure is recorded (:meth:`list_errors`) and not tried
            again until its input or the model's version changes; the job
            succeeds with ``failed`` in its result (it fails only when every
            document it tried failed). ``'raise'``: the first error fails the
            job, as a plain loop would.

        Returns
        -------
        dict
            The model's metadata row; with ``key``, a :class:`JobGroup`: the
            backfill, then the index load and neighbourhoods if asked for.

        Examples
        --------
        >>> docs.create_model("length", len, key="text")   # doctest: +SKIP
        >>> docs.create_model("clip", two_tower)            # doctest: +SKIP
        >>> docs.apply_model("clip.text", ["a query"])       # doctest: +SKIP
        >>> docs.create_preprocessor("tokenize", tokenize)  # doctest: +SKIP
        >>> docs.create_forward("encoder", encoder)         # doctest: +SKIP
        >>> docs.create_model("enc", preprocessor="tokenize", forward="encoder")   # doctest: +SKIP
        """
        return self._services.registrations.create_model(
            name, object, preprocess=preprocess, postprocess=postprocess, preprocessor=preprocessor, forward=forward,
            postprocessor=postprocessor, type=type, batch_size=batch_size, device=device, method=method,
            method_kwargs=method_kwargs, serializer=serializer, key=key, filter=filter, features=features,
            active=active, max_chunk_size=max_chunk_size, process_docs=process_docs, loader_kwargs=loader_kwargs,
            semantic_index=semantic_index, measure=measure, neighbourhoods=neighbourhoods, resources=resources,
            on_error=on_error)

    # -- parts of models --------------------------------------------------------------
    def create_preprocessor(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a preprocessor: a callable applied to each input before batching.

        Models assembled with ``create_model(..., preprocessor=name)`` share it
        (stored once, loaded once per process).

        Examples
        --------
        >>> docs.create_preprocessor("lower", str.lower)   # doctest: +SKIP
        """
        return self._services.models.create_part("preprocessors", name, object, serializer)

    def create_forward(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a forward part: a torch module, estimator or callable (``create_model(..., forward=name)``).

        Examples
        --------
        >>> docs.create_forward("encoder", torch.nn.Linear(16, 8))   # doctest: +SKIP
        """
        return self._services.models.create_part("forwards", name, object, serializer)

    def create_postprocessor(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a postprocessor: a callable applied to each output after the batch is split.

        Examples
        --------
        >>> docs.create_postprocessor("argmax", lambda y: int(y.argmax()))   # doctest: +SKIP
        """
        return self._services.models.create_part("postprocessors", name, object, serializer)

    def list_preprocessors(self) -> list[str]:
        return self._metadata.names("preprocessors")

    def list_forwards(self) -> list[str]:
        return self._metadata.names("forwards")

    def list_postprocessors(self) -> list[str]:
        return self._metadata.names("postprocessors")

    def delete_preprocessor(self, name: str, force: bool = False) -> None:
        """Delete a preprocessor; refused (:class:`InUseError`) while a model is assembled from it,
        unless ``force`` (which deletes those models, with their watchers and outputs)."""
        self._services.models.delete_part("preprocessors", name, force)

    def delete_forward(self, name: str, force: bool = False) -> None:
        """Delete a forward part; refused (:class:`InUseError`) while a model is assembled from it,
        unless ``force`` (which deletes those models, with their watchers and outputs)."""
        self._services.models.delete_part("forwards", name, force)

    def delete_postprocessor(self, name: str, force: bool = False) -> None:
        """Delete a postprocessor; refused (:class:`InUseError`) while a model is assembled from it,
        unless ``force`` (which deletes those models, with their watchers and outputs)."""
        self._services.models.delete_part("postprocessors", name, force)

    def list_models(self, **filter: Any) -> list[str]:
        return self._metadata.names("models", filter)

    def delete_model(self, name: str, force: bool = False) -> None:
        """Delete a model; refused while watchers or indexes use it, unless ``force``
        (which also deletes its watchers and their outputs)."""
        self._services.models.delete(name, force=force)

    def apply_model(self, name: str, inputs: Any = None, *, key: str | None = None, filter: Mapping | None = None,
                    write: bool = False, wait: bool = True, timeout: float | None = None,
                    progress: bool | None = None, registered_only: bool = False) -> Any:
        """Apply a registered model: ad hoc to inputs here, or in batch to the collection on the cluster.

        Parameters
        ----------
        name : str
            The model (an attribute model ``'parent.attr'`` of a registered model too).
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
        registered_only : bool
            Apply only a model registered as ``name``: an attribute model
            ``'parent.attr'`` that is not registered yet raises
            :class:`NotRegisteredError` instead of being registered on first
            use (the model server applies models this way).

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
        from ..store import frames
        from . import dataframe

        if inputs is None:
            return self._apply_batch(name, key, filter, write, wait, timeout, progress, registered_only)
        if filter is not None or write:
            raise QueryError("filter= and write= apply the model to the collection's documents on the cluster: "
                             "pass them without inputs, e.g. apply_model(name, filter={...}, key='x').",
                             argument="inputs")
        found = dataframe.apply_inputs(inputs, key)
        if found is None:
            return self._services.models.apply(name, inputs, key=key, registered_only=registered_only)
        values, index = found
        column = key if key is not None else getattr(inputs, "name", None)
        outputs = self._services.models.apply(name, values, registered_only=registered_only)
        label = frames.column_namer(frames.OUTPUT_COLUMN)(name, column) if column is not None else name
        return dataframe.series(outputs, index, label)

    def refresh_model(self, name: str):
        """Recompute every output of a model now (its active watchers'), even those that are current.

        Use it when what the model computes changed without a new version (it
        reads a file or a service that changed, it is random ...). Outputs
        downstream are recomputed where their input changed, and the indexes
        and neighbourhoods over them follow. The old outputs stay readable
        until the new ones are written.

        Returns
        -------
        JobGroup

        Examples
        --------
        >>> docs.refresh_model("length").wait()   # doctest: +SKIP
        """
        from ..services.maintenance import refresh_model

        return refresh_model(self._services, name)

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
        on_error: str = "record",
    ):
        """Keep ``_outputs.<key>.<model>`` computed for every matching document.

        Starts a backfill job over the documents already there (returned as a
        :class:`JobGroup`); from then on every insert, update and replace that
        touches ``key`` submits jobs. ``features={'x': 'other'}`` feeds the
        stored output of ``other`` on ``x`` instead of the raw field, and makes
        this watcher's jobs wait for ``other``'s. Cycles are refused.
        ``on_error``: see :meth:`create_model` (``'record'`` sets bad documents
        aside, :meth:`list_errors`; ``'raise'`` fails the job on the first one).
        """
        return self._services.watchers.create(model, key, filter=filter, features=features, active=active,
                                              on_error=on_error)

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

    def list_errors(self, model: str | None = None, *, key: str | None = None) -> list[dict]:
        """The documents a model could not be applied to, newest first (of ``model`` / ``key`` if given).

        One dict per watcher and document: ``document`` (its ``_id``),
        ``watcher``, ``model``, ``key``, ``version`` (the model version that
        failed), ``error`` (the exception's type), ``message``, ``traceback``
        (an excerpt of the worker's), ``job_id`` (None when the reconciler
        found it) and ``at``. A listed document is not tried again until its
        input or the model's version changes; once it succeeds, it leaves the list.

        Examples
        --------
        >>> docs.create_model("length", len, key="text").wait()   # doctest: +SKIP
        >>> docs.insert_many([{"text": "ok"}, {"text": 5}]).jobs.wait()   # doctest: +SKIP
        >>> [(e["document"], e["error"]) for e in docs.list_errors("length")]   # doctest: +SKIP
        [(ObjectId('...'), 'TypeError')]
        >>> pandas.DataFrame(docs.list_errors())   # doctest: +SKIP
        """
        from ..store import failures

        return failures.listing(self._metadata.table("errors"), model, key)

    def clear_errors(self, model: str | None = None) -> int:
        """Forget the recorded failures (of ``model``, if given) so that the reconciler tries those
        documents again, e.g. after fixing the data another way; return how many were removed."""
        from ..store import digests, failures

        removed = failures.remove(self._metadata.table("errors"), None if model is None else {"model": model})
        if removed:
            digests.forget_last_pass(self._metadata)  # their documents did not change: the digests cannot tell
        return removed

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
        ids = None if ids is None else list(ids)
        job = self._services.jobs.submit("reconcile", {"ids": ids}, record=records.scope(ids))
        if wait:
            job.wait(timeout)
        return job

    def watch_job(self, job_id: str, timeout: float | None = None) -> None:
        """Stream a job's logs to the ``superduperdb.jobs`` logger until it finishes."""
        from ..jobs.watch import watch

        watch(self.get_job(job_id), timeout)

    # -- metadata -------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A setting of this collection (its ``_meta``, as in the original), or ``default``."""
        return self._metadata.get_setting(key, default)

    def set_meta(self, key: str, value: Any) -> None:
        """Set a setting of this collection, e.g. the download settings of the original API.

        ``n_download_workers`` (URLs fetched at once), ``download_timeout``
        (seconds per URL) and ``headers`` (HTTP headers) apply to the download
        jobs and ``find(..., download=True)``; ``None`` restores the default
        (``downloads.n_workers`` / ``downloads.timeout`` of the config, no headers).

        Examples
        --------
        >>> docs.set_meta("n_download_workers", 4)                     # doctest: +SKIP
        >>> docs.set_meta("headers", {"User-Agent": "superduperdb"})   # doctest: +SKIP
        """
        self._metadata.set_setting(key, self._services.downloads.check(key, value))
