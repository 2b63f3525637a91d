"""Training: metrics, losses, splitters, validation sets, imputations, versions (mixed into ``Collection``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TrainingMixin:
    """Training: metrics, losses, splitters, validation sets, imputations, versions (mixed into ``Collection``)."""

    # -- training -------------------------------------------------------------------
    def create_metric(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a validation metric ``object(predictions, targets) -> float``.

        Built-ins need no registration: ``accuracy``, ``f1``, ``mse``,
        ``recall@k`` (any ``k``) and ``mrr``. For a semantic index,
        ``predictions[i]`` is the ranked list of validation rows retrieved for
        query ``i`` and ``targets[i]`` the row of its match.

        Examples
        --------
        >>> def within_one(predictions, targets):
        ...     return sum(abs(p - t) <= 1 for p, t in zip(predictions, targets)) / len(targets)
        >>> docs.create_metric("within_one", within_one)   # doctest: +SKIP
        """
        return self._services.training.create_callable("metrics", name, object, serializer)

    def list_metrics(self) -> list[str]:
        """Built-in and registered metric names."""
        return self._services.training.list_callables("metrics")

    def delete_metric(self, name: str, force: bool = False) -> None:
        """Delete a registered metric (refused while an imputation uses it, unless ``force``)."""
        self._services.training.delete_callable("metrics", name, force)

    def create_loss(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register a torch loss ``object(outputs, targets) -> scalar tensor``.

        Built-ins: ``cross_entropy``, ``mse`` and ``contrastive`` (InfoNCE,
        for semantic indexes: ``object(query_vectors, target_vectors)``).

        Examples
        --------
        >>> import torch
        >>> docs.create_loss("l1", torch.nn.L1Loss())   # doctest: +SKIP
        """
        return self._services.training.create_callable("losses", name, object, serializer)

    def list_losses(self) -> list[str]:
        """Built-in and registered loss names."""
        return self._services.training.list_callables("losses")

    def delete_loss(self, name: str, force: bool = False) -> None:
        """Delete a registered loss (refused while an imputation uses it, unless ``force``)."""
        self._services.training.delete_callable("losses", name, force)

    def create_splitter(self, name: str, object: Any, *, serializer: str | None = None) -> dict:
        """Register ``object(document) -> (query_document, target_document)`` for self-supervised
        semantic-index training (see :meth:`train_semantic_index`).

        Examples
        --------
        >>> def halves(doc):
        ...     words = doc["text"].split()
        ...     return {"text": " ".join(words[::2])}, {"text": " ".join(words[1::2])}
        >>> docs.create_splitter("halves", halves)   # doctest: +SKIP
        """
        return self._services.training.create_callable("splitters", name, object, serializer)

    def list_splitters(self) -> list[str]:
        return self._services.training.list_callables("splitters")

    def delete_splitter(self, name: str, force: bool = False) -> None:
        self._services.training.delete_callable("splitters", name, force)

    # -- mappings, as the original's coll.metrics / coll.losses / coll.splitters ---------------------
    @property
    def metrics(self) -> Mapping[str, Any]:
        """``{name: metric callable}``: built-in and registered metrics, loaded lazily.

        Examples
        --------
        >>> docs.metrics["accuracy"]([1, 0], [1, 1])   # doctest: +SKIP
        0.5
        """
        return self._callables("metrics")

    @property
    def losses(self) -> Mapping[str, Any]:
        """``{name: loss callable}``: built-in and registered losses, loaded lazily."""
        return self._callables("losses")

    @property
    def splitters(self) -> Mapping[str, Any]:
        """``{name: splitter callable}``: registered splitters, loaded lazily."""
        return self._callables("splitters")

    def _callables(self, kind: str) -> Mapping[str, Any]:
        from .views import LazyMapping

        training = self._services.training
        return LazyMapping(lambda: training.list_callables(kind), lambda n: training.load_callable(kind, n))

    def create_validation_set(self, name: str, filter: Mapping | None = None, *, sample_size: int | None = None,
                              fold: str | None = "valid", seed: int | None = 0) -> dict:
        """Freeze a sample of documents as a validation set, so metrics stay comparable across versions.

        Parameters
        ----------
        name : str
        filter : dict, optional
            Which documents (a MongoDB query).
        sample_size : int, optional
            At most this many, sampled at random (default: all that match).
        fold : str or None
            Only documents of this ``_fold`` (default ``'valid'``: documents
            without a ``_fold`` get one now, ``'train'`` or ``'valid'``, see
            ``data.valid_probability``); None samples from all.
        seed : int, optional

        Returns
        -------
        dict
            The validation set's row (``size``: how many documents were copied).

        Examples
        --------
        >>> docs.create_validation_set("digits_valid", sample_size=200)["size"]   # doctest: +SKIP
        200
        """
        return self._services.training.create_validation_set(name, filter, sample_size=sample_size, fold=fold, seed=seed)

    def list_validation_sets(self) -> list[str]:
        return self._metadata.names("validation_sets")

    def get_validation_set(self, name: str) -> list[dict]:
        """The frozen documents of a validation set, decoded."""
        return self._services.training.validation_set(name)

    def delete_validation_set(self, name: str, force: bool = False) -> None:
        """Delete a validation set and its frozen documents (refused while an imputation uses it, unless ``force``)."""
        self._services.training.delete_validation_set(name, force)

    def create_imputation(self, name: str, model: str, key: str, target: str | Mapping[str, str], *,
                          filter: Mapping | None = None, features: Mapping[str, str] | None = None,
                          loss: str | None = None, metrics: list[str] = (), validation_sets: list[str] = (),
                          watch: bool = True, fit_kwargs: dict | None = None, **trainer: Any):
        """Train ``model`` on the cluster to predict ``target`` from ``key`` (supervised learning).

        A scikit-learn estimator is fitted on every matching training document;
        a torch module is trained with ``loss`` on batches streamed from MongoDB.
        Documents of the ``valid`` fold and of the validation sets are left out
        of training. The trained model becomes a new version of ``model``
        (with its validation metrics); its outputs are then recomputed and its
        semantic indexes switched to it (see :meth:`list_model_versions`).

        Parameters
        ----------
        name : str
            The imputation's name (train it again with :meth:`train_imputation`).
        model : str
            A registered scikit-learn estimator or torch module.
        key : str
            The input field (``'_base'``: the whole document).
        target : str or dict
            A field (``'label'``), or another model's stored output
            (``{'label': 'encoder'}`` reads ``_outputs.label.encoder``).
        filter : dict, optional
            Which documents to train (and watch) on.
        features : dict, optional
            ``{'x': 'other'}``: read the stored output of ``other`` instead of ``x``.
        loss : str, optional
            torch only: a built-in or registered loss (default ``cross_entropy``
            for integer targets, else ``mse``).
        metrics : list of str
            Computed on each validation set (``'<set>/<metric>'``).
        validation_sets : list of str
            Frozen validation sets; none: the live ``valid`` fold.
        watch : bool
            Create a watcher ``<model>/<key>`` (active once trained) if there is none.
        fit_kwargs : dict, optional
            scikit-learn only: extra arguments of ``fit``.
        **trainer
            torch only: ``batch_size``, ``lr``, ``optimizer``, ``n_epochs``,
            ``n_iterations``, ``validation_interval``, ``no_improve_then_stop``,
            ``watch``, ``seed``, ``chunk_size`` ... (:class:`~superduperdb.training.TrainSettings`).

        Returns
        -------
        JobGroup
            ``[train, promote, recomputes...]``: ``jobs[0]`` is the training job
            (metrics per step in its record; :meth:`plot_training` draws them).

        Examples
        --------
        >>> from sklearn.linear_model import LogisticRegression
        >>> docs.create_model("clf", LogisticRegression(max_iter=500))            # doctest: +SKIP
        >>> docs.create_validation_set("valid")                                   # doctest: +SKIP
        >>> jobs = docs.create_imputation("digits", "clf", key="img", target="label",
        ...                               metrics=["accuracy"], validation_sets=["valid"])  # doctest: +SKIP
        >>> jobs.wait()                                                           # doctest: +SKIP
        >>> docs.list_model_versions("clf")[-1]["metrics"]                        # doctest: +SKIP
        {'valid/accuracy': 0.96}
        """
        return self._services.training.create_imputation(
            name, model, key, target, filter=filter, features=features, loss=loss, metrics=metrics,
            validation_sets=validation_sets, watch=watch, fit_kwargs=fit_kwargs, **trainer)

    def train_imputation(self, name: str, **trainer: Any):
        """Train an imputation again (options override the stored ones); returns its :class:`JobGroup`."""
        return self._services.training.train_imputation(name, **trainer)

    def list_imputations(self) -> list[str]:
        return self._services.training.list_imputations()

    def delete_imputation(self, name: str) -> None:
        """Forget an imputation (its model, versions and watcher stay)."""
        self._services.training.delete_imputation(name)

    # -- learning tasks -------------------------------------------------------------
    def create_learning_task(self, identifier: str, models: list[str], keys: list[str], *,
                             task_type: str | None = None, objective: str | None = None, metrics: list[str] = (),
                             validation_sets: list[str] = (), trainer: Any = None, filter: Mapping | None = None,
                             features: Mapping[str, str] | None = None, splitter: str | None = None,
                             keys_to_watch: list[str] = (), options: dict | None = None, **trainer_kwargs: Any):
        """Train models on the collection, on the cluster: the original's general training entry point.

        Parameters
        ----------
        identifier : str
            The task's name (``list_learning_tasks``, ``delete_learning_task``).
        models, keys : list of str
            The models trained and the keys they read. ``task_type``
            ``'supervised'`` (one model, ``keys=[input, target]``),
            ``'representation'`` (``models=[target_encoder, query_encoder]``,
            ``keys=[target_key, query_key]``, or one model with a ``splitter``),
            or ``'custom'`` (a ``trainer``); inferred when not given.
        objective : str, optional
            The loss: a built-in (``mse``, ``cross_entropy``, ``contrastive``) or
            one registered with :meth:`create_loss`.
        metrics, validation_sets : list of str
            Metrics computed on the validation sets (default: the live ``valid`` fold).
        trainer : callable, optional
            A user trainer, called on a worker as ``trainer(models, train,
            validation, objective=, metrics=, log=, **options)`` with fresh
            copies of the models (``{name: object}``, trained in place) and the
            examples (``{key: input}`` per document); returns ``{metric: value}``.
            See :mod:`superduperdb.tasks.learning`. Stored with the task (dill).
        filter, features, splitter
            Which documents, model outputs read in place of raw fields, and
            the splitter of a self-supervised representation task.
        keys_to_watch : list of str
            Keys on which the first model gets a watcher, computed with the
            trained version once it serves.
        options : dict, optional
            Keyword arguments for a custom ``trainer``.
        **trainer_kwargs
            Settings of the built-in trainers (``n_epochs``, ``lr``, ``batch_size`` ...).

        Returns
        -------
        JobGroup
            Training, then promotion of the new versions, then what reads their outputs.

        Examples
        --------
        >>> def fit(models, train, validation, **_):
        ...     models["lin"].fit([[e["x"]] for e in train], [e["y"] for e in train])
        ...     return {}
        >>> docs.create_learning_task("fit_lin", ["lin"], ["x", "y"], trainer=fit).wait()   # doctest: +SKIP
        """
        return self._services.learning.create(
            identifier, models, keys, task_type=task_type, objective=objective, metrics=metrics,
            validation_sets=validation_sets, trainer=trainer, filter=filter, features=features, splitter=splitter,
            keys_to_watch=keys_to_watch, options=options, **trainer_kwargs)

    def train_learning_task(self, identifier: str):
        """Run a learning task again (new versions of its models, then promoted); its :class:`JobGroup`."""
        return self._services.learning.run(identifier)

    def list_learning_tasks(self) -> list[str]:
        return self._metadata.names("learning_tasks")

    def delete_learning_task(self, identifier: str) -> None:
        """Forget a learning task (the model versions it trained stay)."""
        self._services.learning.delete(identifier)

    def train_semantic_index(self, name: str, *, splitter: str | None = None, loss: str | None = None,
                             metrics: list[str] = ("recall@10", "mrr"), validation_sets: list[str] = (),
                             filter: Mapping | None = None, n_retrieve: int = 100, **trainer: Any):
        """Fine-tune a semantic index's encoders contrastively, on the cluster.

        Each training document gives a (query, target) pair: the index's second
        key (encoded by its second model) and its first key (encoded by the
        indexed model); or, with ``splitter``, the two halves the splitter makes
        of the document, both encoded by the indexed model. The trained models
        become new versions; the index switches to them once their outputs are
        recomputed, never mixing versions.

        Parameters
        ----------
        name : str
            The semantic index.
        splitter : str, optional
            A registered splitter (self-supervision from one key).
        loss : str, optional
            Default ``contrastive`` (InfoNCE with the index's measure).
        metrics : list of str
            Retrieval metrics on each validation set: ``recall@k``, ``mrr`` or registered ones.
        validation_sets : list of str
            Frozen validation sets; none: the live ``valid`` fold.
        filter : dict, optional
            Which documents to train on.
        n_retrieve : int
            How many results are ranked per validation query.
        **trainer
            ``batch_size``, ``lr``, ``n_epochs`` ... as for :meth:`create_imputation`.

        Returns
        -------
        JobGroup
            ``jobs[0]`` is the training job; its result's ``metrics`` include
            ``before/...``: the metrics of the serving version.

        Examples
        --------
        >>> docs.create_semantic_index("qa", models=["enc", "enc"], keys=["answer", "question"])  # doctest: +SKIP
        >>> docs.train_semantic_index("qa", validation_sets=["valid"], n_epochs=5).wait()  # doctest: +SKIP
        """
        return self._services.training.train_semantic_index(
            name, splitter=splitter, loss=loss, metrics=metrics, validation_sets=validation_sets, filter=filter,
            n_retrieve=n_retrieve, **trainer)

    def validate_semantic_index(self, name: str, validation_sets: list[str] = (),
                                metrics: list[str] = ("recall@10", "mrr"), *, splitter: str | None = None,
                                n_retrieve: int = 100, wait: bool = False, timeout: float | None = None):
        """Compute retrieval metrics of a semantic index's serving models, on the cluster (the original's call).

        Query ``i`` of a validation set (the index's second key, encoded by its
        second model, or a splitter's first half) should retrieve target ``i``
        (the first key, encoded by the indexed model) among all the set's
        targets, ranked with the index's measure.

        Parameters
        ----------
        name : str
            The semantic index.
        validation_sets : list of str
            Frozen validation sets (:meth:`create_validation_set`); none: the live ``valid`` fold.
        metrics : list of str
            ``recall@k``, ``mrr`` or registered metrics.
        splitter : str, optional
            For an index with one model/key: split each document into query and target.
        n_retrieve : int
            Results ranked per query.
        wait, timeout
            Wait for the job (raises as :meth:`Job.wait` does).

        Returns
        -------
        Job
            Its ``result()["metrics"]`` is ``{'<set>/<metric>': value}``, also
            stored on the index's row (``metrics``, ``validated_at``).

        Examples
        --------
        >>> docs.create_validation_set("valid")                              # doctest: +SKIP
        >>> job = docs.validate_semantic_index("qa", ["valid"], ["recall@1"], wait=True)   # doctest: +SKIP
        >>> job.result()["metrics"]                                           # doctest: +SKIP
        {'valid/recall@1': 0.93}
        """
        from ..services.maintenance import validate_semantic_index

        job = validate_semantic_index(self._services, name, validation_sets, metrics, splitter=splitter,
                                      n_retrieve=n_retrieve)
        if wait:
            job.wait(timeout)
        return job

    def list_model_versions(self, name: str) -> list[dict]:
        """A model's versions, oldest first: ``version``, ``serving``, ``created_at``, ``metrics``, ``job_id``.

        Examples
        --------
        >>> [(v["version"], v["serving"]) for v in docs.list_model_versions("clf")]   # doctest: +SKIP
        [(1, False), (2, True)]
        """
        return self._services.training.list_model_versions(name)

    def restore_model_version(self, name: str, version: int):
        """Serve an earlier (or any stored) version again: its outputs are recomputed, then its
        indexes switch, exactly as after a training. Returns the :class:`JobGroup`.

        Examples
        --------
        >>> docs.restore_model_version("clf", 1).wait()   # doctest: +SKIP
        """
        return self._services.training.restore_model_version(name, version)

    def plot_training(self, job: Any, metrics: list[str] | None = None, ax: Any = None):
        """Draw a training job's curves (loss per step, validation metrics) with matplotlib.

        ``job``: a :class:`Job`, its id, or a :class:`JobGroup` from a training.
        Returns the matplotlib ``Figure``.
        """
        from .plot import plot_training

        if hasattr(job, "ids") and not hasattr(job, "record"):
            job = job[0]
        return plot_training(job if hasattr(job, "record") else self.get_job(str(job)), metrics=metrics, ax=ax)
