"""Dask preload that makes a scheduler or worker superduperdb-ready.

Use it with the standard Dask command lines::

    dask scheduler --preload superduperdb.cluster.preload
    dask worker tcp://127.0.0.1:8786 --preload superduperdb.cluster.preload
    dask worker tcp://127.0.0.1:8786 --preload superduperdb.cluster.preload --resources MASTER=1

(``superduperdb local-cluster`` and ``superduperdb scheduler|worker`` pass it
for you.) In a worker process it:

1. sets ``OMP_WAIT_POLICY=PASSIVE`` and a persistent ``NUMBA_CACHE_DIR``
   (:func:`superduperdb.index.env.configure_numba_env`) when the module is
   imported, before anything imports numba or pynndescent;
2. logs superduperdb's messages (job progress, index loads of the master) to
   the process's stderr next to Dask's own, at ``INFO``;
3. imports the job runner and the database driver once, so that the first job
   does not pay for it;
4. records that it ran, so that ``superduperdb info`` can tell a prepared
   worker from a bare one.

In the scheduler it serves superduperdb's Prometheus gauges on Dask's
``/metrics`` and adds the "superduperdb" page to the dashboard
(:mod:`superduperdb.cluster.observe`; ``docs/operations.md``).

Workers need nothing else: every job carries the client's config snapshot
and opens its own MongoDB connection from it. The code of user models must be
importable on the workers (``PYTHONPATH``), unless it was registered by value
(functions and classes defined in a notebook are, by ``dill``).

Environment variables are inherited by the worker processes that a nanny
starts, so ``--preload-nanny superduperdb.cluster.preload`` also works.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from ..index.env import configure_numba_env

NUMBA_ENV = configure_numba_env()  # at import: before anything in this process imports numba

logger = logging.getLogger("superduperdb.cluster")

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"

#: Set by :func:`dask_setup`: which kind of Dask process this module prepared, and when.
SETUP: dict = {}


def configure_logging(level: int = logging.INFO) -> None:
    """Send the ``superduperdb`` loggers to stderr (once), in Dask's format."""
    package = logging.getLogger("superduperdb")
    if not any(getattr(h, "_superduperdb_preload", False) for h in package.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._superduperdb_preload = True  # type: ignore[attr-defined]
        package.addHandler(handler)
    if package.level == logging.NOTSET or package.level > level:
        package.setLevel(level)


def _role(service: object) -> str:
    name = type(service).__name__
    if "Scheduler" in name:
        return "scheduler"
    if "Nanny" in name:
        return "nanny"
    return "worker"


def dask_setup(service: object) -> None:
    """Called by Dask with the :class:`~distributed.Scheduler`, ``Worker`` or ``Nanny`` it starts."""
    configure_numba_env()
    configure_logging()
    role = _role(service)
    if role == "worker":
        import pymongo  # noqa: F401

        from ..tasks import runner  # noqa: F401  (job kinds, records, contexts)
    if role == "scheduler":
        _observe(service)
    resources: dict = {}
    if role == "worker":
        resources = dict(getattr(getattr(service, "state", None), "total_resources", None) or {})
    SETUP.update({"role": role, "at": time.time(), "pid": os.getpid(), "resources": resources, **NUMBA_ENV})
    from ..version import __version__

    logger.info("superduperdb %s ready: %s (pid %d%s), OMP_WAIT_POLICY=%s, NUMBA_CACHE_DIR=%s", __version__, role,
                os.getpid(), f", resources {resources}" if resources else "", NUMBA_ENV["OMP_WAIT_POLICY"],
                NUMBA_ENV["NUMBA_CACHE_DIR"] or "(numba's default)")


def _observe(scheduler: object) -> None:
    """superduperdb's gauges on the scheduler's /metrics and its dashboard page (unless this
    process's config says ``metrics.enabled: false``)."""
    from ..config import resolve_config
    from .observe import install

    if resolve_config().metrics.enabled:
        install(scheduler)


def dask_teardown(service: object) -> None:
    logger.info("superduperdb %s stopping (pid %d)", _role(service), os.getpid())
