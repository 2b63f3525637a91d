"""The Dask cluster that runs jobs (the original design's job-master and job-workers).

``cluster.address`` selects it:

* ``None``: no cluster; jobs run inline in the calling process (debugging).
* ``"local"``: a :class:`distributed.LocalCluster` owned by the client and
  closed with it. With the embedded store (``mongomock://`` in memory, or a
  ``file://`` folder) its workers are threads of this process (they must share
  the store); with a server URI they are separate processes.
* ``"tcp://host:8786"``: an existing scheduler (``dask scheduler`` CLI).

At interpreter exit (a script that never called ``client.close()``), a local
cluster first gets up to ``jobs.exit_timeout`` seconds to finish the jobs
this process submitted (:meth:`Cluster.drain`), then closes with Dask's
shutdown chatter silenced (:func:`quiet_distributed`). Jobs on a remote
scheduler need no wait: they run on whether or not this process lives.

With the config's TLS settings (``security.tls_*``, :mod:`superduperdb.cluster.security`)
the client connects over ``tls://`` with its certificate (a ``tcp://`` address is
reached as ``tls://``), and a local cluster's scheduler and workers talk TLS too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..config import Config
from ..errors import ClusterError
from ..store.backends import in_process_uri, storage_of

logger = logging.getLogger(__name__)

OBSERVE = "superduperdb.cluster.observe"  # the scheduler's preload of a local cluster
RESOURCES_TTL = 10.0  # seconds a look at which resources the workers offer is reused


@contextlib.contextmanager
def quiet_distributed(restore: bool = True) -> Iterator[None]:
    """Dask's loggers silenced inside the block: closing a cluster whose workers hold results or
    run actors logs warnings ("Removing worker ... lose already computed task(s)", "Async
    instruction ... ended with CancelledError") and, when the script ends on an error, the
    client's failed reconnections: none of it says anything to the user of a script ending.
    ``restore=False`` (at interpreter exit) leaves them silenced: the cluster's comms finish
    closing in the background after the block ("Batched Comm Closed ...")."""
    loggers = [logging.getLogger("distributed")] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
        if name.startswith(("distributed.", "tornado"))]
    levels = [(lg, lg.level) for lg in loggers]
    for lg, _ in levels:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in levels if restore else ():
            lg.setLevel(level)


class Cluster:
    """Client-side handle on the Dask cluster (started on first use).

    Parameters
    ----------
    config : Config
    uri : str
        The database URI, which decides whether local workers are threads (only its
        scheme is read: the client passes it redacted).
    """

    def __init__(self, config: Config, uri: str) -> None:
        self.config = config
        self.uri = uri
        self.address = config.cluster.address
        self._client = None
        self._local = None
        self._offered: tuple[float, bool] | None = None  # (until, whether a worker offers job_resource)
        self._inflight: set = set()  # futures of jobs submitted to the local cluster, until they finish
        self._inflight_lock = threading.Lock()

    @property
    def inline(self) -> bool:
        """Whether jobs run inline in this process (``cluster=None``)."""
        return self.address is None

    @property
    def processes(self) -> bool:
        configured = self.config.cluster.processes
        if configured is not None:
            return configured
        return not in_process_uri(self.uri)

    @property
    def client(self):
        """The :class:`distributed.Client` (starts the local cluster if needed)."""
        if self.inline:
            raise ClusterError("This client runs jobs inline (cluster=None); it has no Dask cluster.")
        if self._client is None:
            self._client = self._connect()
        return self._client

    @property
    def connected(self) -> bool:
        """Whether this handle has connected to its cluster (never connects)."""
        return self._client is not None

    @property
    def scheduler_address(self) -> str:
        """The address of the scheduler (connects first)."""
        return self.client.scheduler.address

    def _connect(self):
        import dask
        import distributed

        from .security import dask_security, with_scheme

        timeout = self.config.cluster.timeout
        security = dask_security(self.config)  # ConfigError now for half-set or missing TLS files
        if self.address == "local":
            if self.processes and in_process_uri(self.uri):
                raise ClusterError(
                    f"A local cluster with worker processes cannot share the embedded store ({storage_of(self.uri)}): "
                    "it lives in this process. Use cluster.processes: false (worker threads), or a MongoDB "
                    "server (mongodb://...) for worker processes.",
                )
            job_resource = self.config.cluster.job_resource
            self._local = distributed.LocalCluster(
                n_workers=self.config.cluster.n_workers,
                threads_per_worker=self.config.cluster.threads_per_worker,
                processes=self.processes,
                dashboard_address=":0",
                resources={job_resource: self.config.cluster.threads_per_worker} if job_resource else None,
                security=security,
                # superduperdb's gauges on the scheduler's /metrics and its dashboard page (docs/operations.md)
                scheduler_kwargs={"preload": [*dask.config.get("distributed.scheduler.preload", []), OBSERVE]}
                if self.config.metrics.enabled else None,
            )
            logger.info("started a local Dask cluster at %s (processes=%s)", self._local.scheduler_address, self.processes)
            client = distributed.Client(self._local, timeout=timeout, set_as_default=False, security=security)
            self._add_master_workers(client)
            return client
        address = with_scheme(self.address, self.config)
        if security is None and address.startswith("tls://"):
            raise ClusterError(
                f"The scheduler at {address!r} talks TLS, and this config has no certificate: set "
                "security.tls_ca_file, security.tls_cert_file and security.tls_key_file (docs/security.md).",
                address=address,
            )
        try:
            return distributed.Client(address, timeout=timeout, set_as_default=False, security=security)
        except (OSError, TimeoutError) as exc:
            hint = (" With TLS, check that the scheduler's certificate is signed by security.tls_ca_file and this "
                    "one by the scheduler's CA." if security is not None else
                    " If the scheduler requires TLS, set security.tls_ca_file, tls_cert_file and tls_key_file.")
            raise ClusterError(
                f"Could not reach the Dask scheduler at {address!r} within {timeout:g} s: {exc}. "
                "Start one with `dask scheduler` (or `superduperdb local-cluster`), or use cluster='local'." + hint,
                address=address,
            ) from exc

    def _add_master_workers(self, client: Any) -> None:
        """With ``master.shards > 1``: one more local worker per shard, offering the master resource
        (``master.resource``), so that each shard has a worker of its own."""
        import copy

        shards = self.config.master.shards
        if shards <= 1:
            return
        local = self._local
        for i in range(shards):
            spec = copy.deepcopy(local.new_spec)
            spec.setdefault("options", {})["resources"] = {self.config.master.resource: 1}
            spec["options"]["name"] = f"master-{i}"
            local.worker_spec[f"master-{i}"] = spec
        local.sync(local._correct_state)
        client.wait_for_workers(self.config.cluster.n_workers + shards, timeout=self.config.cluster.timeout)

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard's address (``.../status``; the superduperdb page is ``.../superduperdb``),
        None when jobs run inline or the scheduler serves no dashboard."""
        if self.inline:
            return None
        return self.client.dashboard_link if self.client.scheduler_info().get("services", {}).get("dashboard") \
            else None

    def job_resources(self) -> dict | None:
        """What an ordinary job requests: ``{cluster.job_resource: 1}`` while some worker offers it, else None."""
        name = self.config.cluster.job_resource
        if not name:
            return None
        now = time.monotonic()
        if self._offered is None or self._offered[0] < now:
            workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
            offered = any((w.get("resources") or {}).get(name) for w in workers)
            if not offered:
                logger.warning("no worker offers the resource %s (cluster.job_resource): jobs run on any worker",
                               name)
            self._offered = (now + RESOURCES_TTL, offered)
        return {name: 1} if self._offered[1] else None

    def submit(self, fn: Callable, *args: Any, key: str, dependencies: Sequence[Any] = (),
               resources: dict | None = None, **kwargs: Any):
        """Submit ``fn(*args, *dependency_results)`` under ``key`` (never cached: ``pure=False``).

        The task starts only after every dependency succeeded, and runs to the
        end whether or not anyone keeps the returned future (``fire_and_forget``):
        a write whose result is dropped still gets its jobs done. It runs on a
        worker that offers ``resources`` (default: :meth:`job_resources`).
        """
        import distributed

        from ..store.dispatch import submit

        resources = resources or self.job_resources()
        if resources:
            kwargs["resources"] = resources
        future = submit(self.client, fn, *args, *dependencies, key=key, pure=False, **kwargs)
        distributed.fire_and_forget(future)
        if self._local is not None:  # drained before the local cluster closes at exit
            with self._inflight_lock:
                self._inflight.add(future)
            future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Any) -> None:
        with self._inflight_lock:
            self._inflight.discard(future)

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the jobs submitted to the local cluster from this process;
        return how many are still unfinished (they stop with the cluster; the reconciler redoes their work)."""
        import distributed

        with self._inflight_lock:
            pending = [f for f in self._inflight if not f.done()]
        if not pending or timeout <= 0:
            return len(pending)
        try:
            distributed.wait(pending, timeout=timeout)
        except (distributed.TimeoutError, TimeoutError):
            pass
        return sum(1 for f in pending if not f.done())

    def workers(self) -> list[str]:
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def close(self) -> None:
        client, self._client = self._client, None
        local, self._local = self._local, None
        with self._inflight_lock:
            self._inflight.clear()
        if client is not None:
            client.close()
        if local is not None:
            local.close()

    def __repr__(self) -> str:
        state = "inline" if self.inline else ("connected" if self._client is not None else "not started")
        return f"Cluster({self.address!r}, {state})"
