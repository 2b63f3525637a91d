"""Registrations that span several services, all of it or none.

``create_model(..., key=..., semantic_index=...)`` registers a model, its
watcher, an index and neighbourhoods; ``create_semantic_index`` an index and,
if none exists, the watcher whose outputs it indexes. Each checks everything
before anything is stored, and a step that fails undoes the steps before it,
so nothing is left half registered. The facade only delegates here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import model_options as options

if TYPE_CHECKING:
    from ..jobs.handles import JobGroup
    from .indexes import IndexService
    from .measures import MeasureService
    from .models import ModelService
    from .watchers import WatcherService


class RegistrationService:
    """Registrations across models, watchers, indexes and measures (each given as the service it is)."""

    def __init__(self, models: ModelService, watchers: WatcherService, indexes: IndexService,
                 measures: MeasureService) -> None:
        self.models = models
        self.watchers = watchers
        self.indexes = indexes
        self.measures = measures

    def create_model(self, name: str, object: Any = None, *, key: str | None = None, filter: Mapping | None = None,
                     features: Mapping[str, str] | None = None, active: bool = True,
                     max_chunk_size: int | None = None, process_docs: bool = True,
                     loader_kwargs: Mapping[str, Any] | None = None, semantic_index: bool | str = False,
                     measure: str | None = None, neighbourhoods: Any = (), serializer: str | None = None,
                     batch_size: int = 32, on_error: str = "record", **model: Any) -> dict | JobGroup:
        """``Collection.create_model``: the model, and with ``key`` its watcher (and index, neighbourhoods).

        Returns the model's row, or with ``key`` the jobs (backfill, index load, neighbourhoods).
        """
        options.check_watch_options(key, max_chunk_size, process_docs)
        batch_size = options.loader_batch_size(loader_kwargs, batch_size)
        index, measure, hoods = options.check_index_options(self.measures, self.models.metadata, name, key,
                                                            semantic_index, measure, neighbourhoods)
        if index is not None:
            self.indexes.check_keys_present([key])  # a typo would give an index that stays empty
        wrapper, row = self.models.check_new(name, object, batch_size=batch_size, **model)
        watcher = None
        if key is not None:  # checked too before anything is stored: all of it is registered, or none
            watcher = self.watchers.check_new(name, key, filter=filter, features=features, active=active,
                                              model_row=row, model_object=object, chunk_size=max_chunk_size,
                                              on_error=on_error)
        stored = self.models.register(wrapper, row, serializer)
        if watcher is None:
            return stored
        try:
            jobs = self.watchers.register(watcher, backfill=process_docs)
        except BaseException:
            self.models.unregister(name)
            raise
        if index is not None:
            jobs += options.register_index(self.indexes, name, key, index, measure, hoods, after=jobs)
        return jobs

    def create_semantic_index(self, name: str, models: list[str], keys: list[str], measure: str = "cosine",
                              filter_fields: list[str] | None = None) -> JobGroup:
        """``Collection.create_semantic_index``: the index, after the watcher it needs (made if missing)."""
        models, keys = self.indexes.check_new(name, models, keys, measure)
        filter_fields = self.indexes.check_filter_fields(filter_fields)
        watcher = None
        if not self.indexes.metadata.exists("watchers", f"{models[0]}/{keys[0]}"):
            watcher = self.watchers.check_new(models[0], keys[0])  # checked before anything is stored
        backfill = self.watchers.register(watcher) if watcher is not None else self.watchers.ensure(models[0], keys[0])
        try:
            return backfill + self.indexes.create(name, models, keys, measure, after=backfill,
                                                  filter_fields=filter_fields)
        except BaseException:  # all of it, or none: the watcher made for this index goes too
            if watcher is not None:
                backfill.cancel()
                self.watchers.delete(watcher["name"], force=True)
            raise
