"""What the services of one collection share, and how they are wired together.

A :class:`Scope` holds plain handles (the raw collection, metadata and
artifact stores, the type registry, the config, the job :class:`Target` and
the cluster); services receive it, and the other services they use, when they
are made (:class:`Services`). No service holds the Collection facade.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..store import ArtifactStore, MetadataStore
from ..store.backends import uri_from_config
from ..store.context import Target
from ..types import TypeRegistry
from .checks import check_filter

if TYPE_CHECKING:
    from ..cluster.connection import Cluster
    from ..jobs.service import JobService
    from .downloads import DownloadService
    from .indexes import IndexService
    from .learning import LearningTaskService
    from .measures import MeasureService
    from .models import ModelService
    from .registrations import RegistrationService
    from .search import SearchService
    from .training import TrainingService
    from .watchers import WatcherService
    from .writes import WriteService


@dataclass
class Scope:
    """Plain handles on one collection, for the services that work on it.

    Parameters
    ----------
    raw : pymongo or mongomock Collection
        The data collection.
    metadata, artifacts : MetadataStore, ArtifactStore
    types : TypeRegistry
    config : Config
        The client's resolved config.
    target : Target
        What jobs receive to open the same collection on a worker.
    cluster_of : callable
        Returns the client's :class:`~superduperdb.cluster.connection.Cluster` (started lazily).
    """

    raw: Any
    metadata: MetadataStore
    artifacts: ArtifactStore
    types: TypeRegistry
    config: Config
    target: Target
    cluster_of: Callable[[], Cluster]

    @classmethod
    def open(cls, raw_database: Any, name: str, config: Config, cluster_of: Callable[[], Cluster]) -> Scope:
        metadata = MetadataStore(raw_database, name)
        artifacts = ArtifactStore(raw_database, name, key=config.security.artifact_key)
        types = TypeRegistry(metadata, artifacts, pickle_fallback=config.types.pickle_fallback)
        # The one place credentials leave the config in clear: the job's Target, whose URI and
        # config snapshot workers connect with (its repr redacts them; it is never stored).
        target = Target(uri_from_config(config), raw_database.name, name, config.to_dict(secrets=True))
        return cls(raw_database[name], metadata, artifacts, types, config, target, cluster_of)

    @property
    def name(self) -> str:
        return self.raw.name

    @property
    def full_name(self) -> str:
        return self.raw.full_name

    @property
    def database(self) -> Any:
        """The raw database (sub-collections such as ``<name>._imputations`` live there)."""
        return self.metadata.database

    @property
    def cluster(self) -> Cluster:
        return self.cluster_of()

    def table(self, suffix: str) -> Any:
        """The raw sub-collection ``<name>.<suffix>``."""
        return self.database[f"{self.name}.{suffix}"]

    def query(self, filter: Any, argument: str = "filter") -> dict:
        """A checked and encoded filter of a read (its types are not marked as in use)."""
        return self.types.encode(check_filter(filter, argument), argument, mark=False)


class Services:
    """The services of one collection, made on first use, each given what it needs."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def ensure_model(self, name: str) -> dict:
        """The row of model ``name`` (an attribute model ``parent.attr`` is registered on first use):
        what the watchers and indexes need of the models, without holding the model service."""
        return self.models.ensure(name)

    @cached_property
    def jobs(self) -> JobService:
        from ..jobs.service import JobService

        return JobService(self.scope)

    @cached_property
    def writes(self) -> WriteService:
        from .writes import WriteService

        return WriteService(self.scope, self.jobs, lambda: self.indexes.watch_collection())

    @cached_property
    def indexes(self) -> IndexService:
        from .indexes import IndexService

        return IndexService(self.scope, self.jobs, self.ensure_model)

    @cached_property
    def watchers(self) -> WatcherService:
        from .watchers import WatcherService

        return WatcherService(self.scope, self.jobs, self.indexes, self.ensure_model)

    @cached_property
    def models(self) -> ModelService:
        from .models import ModelService

        return ModelService(self.scope, self.watchers, self.indexes, self.jobs)

    @cached_property
    def registrations(self) -> RegistrationService:
        from .registrations import RegistrationService

        return RegistrationService(self.models, self.watchers, self.indexes, self.measures)

    @cached_property
    def search(self) -> SearchService:
        from .search import SearchService

        return SearchService(self.scope, self.indexes)

    @cached_property
    def training(self) -> TrainingService:
        from .training import TrainingService

        return TrainingService(self.scope, self.jobs, self.indexes)

    @cached_property
    def learning(self) -> LearningTaskService:
        from .learning import LearningTaskService

        return LearningTaskService(self.scope, self.training)

    @cached_property
    def measures(self) -> MeasureService:
        from .measures import MeasureService

        return MeasureService(self.scope, self.indexes)

    @cached_property
    def downloads(self) -> DownloadService:
        from .downloads import DownloadService

        return DownloadService(self.scope)
