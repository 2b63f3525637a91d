"""Prometheus metrics, recorded in the processes that know them (see ``docs/operations.md``).

Two kinds, both in :mod:`prometheus_client`'s default registry, so that they
appear on Dask's own ``/metrics`` endpoints (the scheduler's and every
worker's, served by Dask through ``prometheus_client``) and on the model
server's:

* **events**, recorded where they happen: :func:`observe_job` (the job
  runner, once per finished job), :func:`observe_query` (the master, once
  per query), :func:`observe_request` (the model server). Each is one
  labelled add on a ``prometheus_client`` counter or histogram: no I/O.
* **state**, computed when scraped: a *source* registered with
  :func:`register_source` is a function returning :class:`Sample` values
  (the scheduler's source reads what the master reports; see
  :mod:`superduperdb.cluster.observe`). Nothing is computed between scrapes.

``prometheus_client`` is imported on the first call, never by
``import superduperdb``; without it installed, every call here does nothing.
Every name is defined once, in :mod:`.definitions`.

Floor: a leaf (with ``errors``, ``config``, ``version``): the standard library and, lazily,
``prometheus_client`` only; imports no other part of the package.

Examples
--------
>>> from superduperdb import metrics
>>> metrics.observe_job("db", "docs", "model", "success", 0.25, watcher="m/x", documents=100)
>>> "superduperdb_job_duration_seconds" in metrics.exposition()
True
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from .definitions import BY_NAME, METRICS, PREFIX, Metric

__all__ = ["METRICS", "BY_NAME", "PREFIX", "Metric", "Sample", "observe_job", "observe_query", "observe_request",
           "register_source", "unregister_source", "exposition", "prometheus"]

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
_INSTRUMENTS: dict[str, Any] = {}
_NONE = object()  # prometheus_client is not installed: record nothing
_CLIENT: list[Any] = []  # [the prometheus_client module or None], once looked up


class Sample(NamedTuple):
    """One value of a state metric: ``Sample("superduperdb_jobs", {"kind": "model", ...}, 3)``."""

    name: str
    labels: dict
    value: float


def prometheus() -> Any:
    """The ``prometheus_client`` module, or None when it is not installed (imported once, here)."""
    if not _CLIENT:
        try:
            import prometheus_client
        except ImportError:
            prometheus_client = None  # type: ignore[assignment]
        _CLIENT.append(prometheus_client)
    return _CLIENT[0]


def _instrument(name: str) -> Any:
    found = _INSTRUMENTS.get(name)
    if found is not None:
        return found
    with _LOCK:
        if name not in _INSTRUMENTS:
            client, spec = prometheus(), BY_NAME[name]
            if client is None:
                _INSTRUMENTS[name] = _NONE
            elif spec.type == "counter":
                _INSTRUMENTS[name] = client.Counter(spec.name, spec.help, spec.labels)
            else:
                _INSTRUMENTS[name] = client.Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets)
        return _INSTRUMENTS[name]


def observe_job(database: str, collection: str, kind: str, status: str, seconds: float, *,
                watcher: str | None = None, documents: int = 0) -> None:
    """A job finished: its run time by kind and status, and (model jobs) the outputs it computed."""
    histogram = _instrument("superduperdb_job_duration_seconds")
    if histogram is _NONE:
        return
    histogram.labels(database, collection, kind, status).observe(seconds)
    if watcher is not None and documents:
        _instrument("superduperdb_job_documents_total").labels(database, collection, watcher).inc(documents)


def observe_query(database: str, collection: str, index: str, plan: str, seconds: float, count: int = 1) -> None:
    """The master answered ``count`` queries in ``seconds`` (each counted at the mean time)."""
    histogram = _instrument("superduperdb_query_duration_seconds")
    if histogram is _NONE or count <= 0:
        return
    child = histogram.labels(database, collection, index, plan)
    for _ in range(count):
        child.observe(seconds / count)


def observe_request(endpoint: str, code: int, seconds: float) -> None:
    """The model server answered a request to ``endpoint`` with HTTP status ``code``."""
    counter = _instrument("superduperdb_server_requests_total")
    if counter is _NONE:
        return
    counter.labels(endpoint, str(code)).inc()
    _instrument("superduperdb_server_request_duration_seconds").labels(endpoint).observe(seconds)


# -- state metrics, computed when scraped -----------------------------------------------------------
_SOURCES: dict[str, Callable[[], Iterable[Sample]]] = {}


class _SourceCollector:
    """The ``prometheus_client`` collector of every registered source (one per process)."""

    def describe(self) -> list:
        return []  # no describe-time registration checks: names come and go with the sources

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        by_name: dict[str, list[Sample]] = {}
        for key, source in list(_SOURCES.items()):
            try:
                for sample in source():
                    by_name.setdefault(sample.name, []).append(sample)
            except Exception:  # noqa: BLE001 - a failing source must not break Dask's /metrics
                logger.exception("metrics source %r failed", key)
        for name, samples in by_name.items():
            spec = BY_NAME[name]
            family = GaugeMetricFamily(name, spec.help, labels=spec.labels)
            for s in samples:
                family.add_metric([str(s.labels.get(label, "")) for label in spec.labels], float(s.value))
            yield family


_COLLECTOR: list[_SourceCollector] = []


def register_source(key: str, source: Callable[[], Iterable[Sample]]) -> bool:
    """Serve the samples ``source()`` returns at each scrape of this process's ``/metrics``
    (replacing the source registered under ``key``). False when ``prometheus_client`` is missing."""
    client = prometheus()
    if client is None:
        return False
    with _LOCK:
        _SOURCES[key] = source
        if not _COLLECTOR:
            _COLLECTOR.append(_SourceCollector())
            client.REGISTRY.register(_COLLECTOR[0])
    return True


def unregister_source(key: str) -> None:
    with _LOCK:
        _SOURCES.pop(key, None)


def exposition() -> str:
    """This process's metrics in Prometheus' text format (what ``/metrics`` serves); '' without the client."""
    client = prometheus()
    return client.generate_latest().decode() if client is not None else ""
