"""A worker's view of one collection, opened from a job's plain-data :class:`Target`.

Shared by both sides: the client builds a :class:`Target` (see
``superduperdb.services.scope``), jobs and the master open a :class:`Context`
from it, with their own database handle.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..config import Config, redact, resolve_config
from ..errors import JobCancelledError
from ..types import TypeRegistry
from . import records
from .artifacts import ArtifactStore
from .backends import open_client
from .metadata import MetadataStore

logger = logging.getLogger(__name__)
_CLIENTS: dict[str, Any] = {}
_LOCK = threading.Lock()


def raw_client(uri: str, config: Config) -> Any:
    """One raw client per URI per worker process (mongomock: the shared store)."""
    with _LOCK:
        if uri not in _CLIENTS:
            _CLIENTS[uri] = open_client(uri, config)
        return _CLIENTS[uri]


@dataclass(frozen=True, repr=False)
class Target:
    """Which collection a job works on: plain data that travels with the job.

    ``uri`` and ``config`` (``Config.to_dict(secrets=True)``) hold the credentials in
    clear: workers connect with them. So a Target is never logged or stored as it
    is; its ``repr`` shows the URI redacted and leaves the config out.
    """

    uri: str
    database: str
    collection: str
    config: dict

    def __repr__(self) -> str:
        return f"Target({redact(self.uri)!r}, {self.database!r}, {self.collection!r})"

    @property
    def key(self) -> str:
        """``uri|database|collection``: the collection, as the master and its reconciler key it."""
        return f"{self.uri}|{self.database}|{self.collection}"


class Context:
    """Stores of one collection, opened on a worker from a :class:`Target`."""

    def __init__(self, target: Target, job_id: str | None = None) -> None:
        self.target = target
        self.job_id = job_id

    def log(self, message: str) -> None:
        """Append a line to the job's record now (``Job.logs()``, ``watch_job`` stream it)."""
        logger.debug(message)
        if self.job_id is not None:
            records.log(self.jobs, self.job_id, [f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"])

    def cancelled(self) -> bool:
        """Whether the job's record says ``cancelled`` (checked between steps of long jobs)."""
        return self.job_id is not None and records.is_cancelled(self.jobs, self.job_id)

    def check_cancelled(self, error: type[JobCancelledError] = JobCancelledError) -> None:
        """Raise ``error`` (a :class:`JobCancelledError`) if the job was cancelled."""
        if self.cancelled():
            raise error(f"Job {self.job_id} was cancelled.", job_id=self.job_id)

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
        return ArtifactStore(self.db, self.target.collection, key=self.config.security.artifact_key)

    @cached_property
    def types(self) -> TypeRegistry:
        return TypeRegistry(self.metadata, self.artifacts, pickle_fallback=self.config.types.pickle_fallback)

    @property
    def jobs(self) -> Any:
        return self.metadata.table("jobs")


def worker_dask_client() -> Any:
    """The Dask client of the worker this code runs on (None outside a worker: inline, a client's process)."""
    try:
        from distributed import get_client, get_worker

        get_worker()
        return get_client()
    except (ImportError, ValueError):
        return None
