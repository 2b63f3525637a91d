"""A worker's view of one collection, opened from a job's plain-data spec."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..backends import open_client
from ..config import Config, resolve_config
from ..store import ArtifactStore, MetadataStore
from ..types import TypeRegistry

logger = logging.getLogger(__name__)
_CLIENTS: dict[str, Any] = {}
_LOCK = threading.Lock()


def raw_client(uri: str, config: Config) -> Any:
    """One raw client per URI per worker process (mongomock: the shared store)."""
    with _LOCK:
        if uri not in _CLIENTS:
            _CLIENTS[uri] = open_client(uri, config)
        return _CLIENTS[uri]


@dataclass(frozen=True)
class Target:
    """Which collection a job works on: plain data that travels with the job."""

    uri: str
    database: str
    collection: str
    config: dict

    @classmethod
    def of(cls, collection: Any) -> Target:
        client = collection.database.client
        return cls(client.uri, collection.database.name, collection.name, client.config.to_dict())


class Context:
    """Stores of one collection, opened on a worker from a :class:`Target`."""

    def __init__(self, target: Target, job_id: str | None = None) -> None:
        self.target = target
        self.job_id = job_id

    def log(self, message: str) -> None:
        """Append a line to the job's record now (``Job.logs()``, ``watch_job`` stream it)."""
        logger.debug(message)
        if self.job_id is not None:
            from ..jobs import records

            records.log(self.jobs, self.job_id, [f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"])

    def cancelled(self) -> bool:
        """Whether the job's record says ``cancelled`` (checked between steps of long jobs)."""
        if self.job_id is None:
            return False
        from ..jobs import records

        record = self.jobs.find_one({"_id": records.oid(self.job_id)}, {"status": 1})
        return record is not None and record.get("status") == "cancelled"

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelledError` if the job was cancelled."""
        if self.cancelled():
            from ..errors import JobCancelledError

            raise JobCancelledError(f"Job {self.job_id} was cancelled.", job_id=self.job_id)

    @cached_property
    def config(self) -> Config:
        return resolve_config(self.target.config, home="/nonexistent", cwd="/nonexistent", environ={})

    @cached_property
    def db(self) -> Any:
        return raw_client(self.target.uri, self.config)[self.target.database]

    @cached_property
    def collection(self) -> Any:
        return self.db[self.target.collection]

    @cached_property
    def metadata(self) -> MetadataStore:
        return MetadataStore(self.db, self.target.collection)

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.db, self.target.collection)

    @cached_property
    def types(self) -> TypeRegistry:
        return TypeRegistry(self.metadata, self.artifacts, pickle_fallback=bool(self.config.types.pickle_fallback))

    @property
    def jobs(self) -> Any:
        return self.metadata.table("jobs")

    @property
    def is_mongomock(self) -> bool:
        return self.target.uri.startswith("mongomock://")
