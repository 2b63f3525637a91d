"""Which Dask command lines a superduperdb config implies.

The original SuperDuperDB cluster was configured by ``config.json``::

    {"remote": true,
     "master":  {"host": "localhost", "port": 5001},
     "jobs":    {"host": "localhost", "port": 5002},
     "redis":   {"host": "localhost", "port": 6379},
     "mongodb": {"host": "localhost", "port": 27017}}

Here the job-master is the Dask scheduler, the job-workers are Dask workers,
and the master is an actor on the worker that carries the resource
``MASTER=1``. So:

=====================  ==========================================================
config                 becomes
=====================  ==========================================================
``jobs.host/port``     the scheduler's address (``dask scheduler --host --port``);
                       with ``remote: true`` also the clients' ``cluster.address``
``cluster.address``    the same, in this package's own layout (``tcp://h:p``);
                       it wins over ``jobs`` when both are set
``master.host/port``   where the master worker listens (``dask worker --host
                       --worker-port --resources MASTER=1``)
``master.resource``    the resource name that marks the master worker
``cluster.job_resource`` a resource (e.g. ``JOBS``) the job workers offer and
                       ordinary jobs request, so none runs on the master worker
``cluster.n_workers``  how many job workers ``local-cluster`` starts
``security.tls_*``     ``--tls-ca-file --tls-cert --tls-key`` on every command, and
                       ``tls://`` addresses (see :mod:`superduperdb.cluster.security`)
``mongodb.host/port``  the database (clients and jobs; not the cluster's business)
``redis``              ignored, with a warning (Dask replaces rq and redis)
=====================  ==========================================================

Examples
--------
>>> from superduperdb.config import resolve_config
>>> cfg = resolve_config({"jobs": {"host": "localhost", "port": 5002}, "master": {"port": 5001}},
...                      home="/nonexistent", cwd="/nonexistent", environ={})
>>> spec = ClusterSpec.from_config(cfg, dashboard_address=None)
>>> spec.address
'tcp://localhost:5002'
>>> " ".join(spec.worker_command(master=True)[3:])
'worker tcp://localhost:5002 --preload superduperdb.cluster.preload --nthreads 1 --no-dashboard --host localhost --dashboard-address localhost:0 --name master --resources MASTER=1 --worker-port 5001'
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config import Config, resolve_config
from ..config.sources import read_original_json, read_yaml
from ..errors import ConfigError

PRELOAD = "superduperdb.cluster.preload"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8786
DEFAULT_DASHBOARD = ":8787"
ALL_INTERFACES = ("", "0.0.0.0", "::")


def has_dashboard() -> bool:
    """Whether Dask's dashboard can run here (it needs bokeh)."""
    return importlib.util.find_spec("bokeh") is not None


def load_config(path: str | Path | None = None) -> Config:
    """The layered config, with the file at ``path`` (if given) on top.

    ``path`` may be a ``config.json`` in the original layout or a YAML file in
    this package's layout (``superduperdb.yaml``).

    Raises
    ------
    ConfigError
        The file is missing, unreadable, or has an unknown key.
    """
    if path is None:
        return resolve_config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.", path=str(path))
    if path.name == "config.json" and path.resolve() == (Path.cwd() / "config.json").resolve():
        return resolve_config()  # already one of the layers
    layer = read_original_json(path) if path.suffix == ".json" else read_yaml(path)
    return resolve_config().replace(layer, source=str(path))


def split_address(address: Any) -> tuple[str | None, int | None]:
    """``("host", port)`` of ``tcp://host:port`` (``(None, None)`` for anything else)."""
    if not isinstance(address, str) or "://" not in address:
        return None, None
    parts = urlsplit(address)
    return parts.hostname, parts.port


@dataclass(frozen=True)
class ClusterSpec:
    """What to start: the scheduler's address, the workers, the master worker.

    Parameters
    ----------
    host, port : str, int
        Where the scheduler listens (port 0: any free port).
    n_workers, threads_per_worker : int
        Job workers (``local-cluster``) and threads per worker process.
    master_host, master_port : str or None, int or None
        Where the master worker listens (default: ``host``, any port).
    resource : str
        Worker resource that marks the master worker.
    dashboard_address : str or None
        The scheduler's dashboard (``":8787"``); None: no dashboard. It is
        only served when bokeh is installed.
    job_resource : str or None
        A resource the job workers (not the master worker) offer, one per
        thread, and ordinary jobs request (``cluster.job_resource``).
    shards : int
        How many master workers a local cluster starts (``master.shards``: one per shard).
    tls : (ca, cert, key) or None
        PEM files: every command talks TLS (``security.tls_*``).
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    n_workers: int = 2
    threads_per_worker: int = 1
    master_host: str | None = None
    master_port: int | None = None
    resource: str = "MASTER"
    dashboard_address: str | None = DEFAULT_DASHBOARD
    job_resource: str | None = None
    shards: int = 1
    tls: tuple[str, str, str] | None = None

    @classmethod
    def from_config(cls, cfg: Config, **overrides: Any) -> ClusterSpec:
        """The spec a config implies; keyword arguments that are not None win."""
        from .security import tls_files

        host, port = split_address(cfg.cluster.address)
        tls = tls_files(cfg)
        values: dict[str, Any] = {
            "host": host or cfg.jobs.host or DEFAULT_HOST,
            "port": port if port is not None else cfg.jobs.port or DEFAULT_PORT,
            "n_workers": cfg.cluster.n_workers,
            "threads_per_worker": cfg.cluster.threads_per_worker,
            "master_host": cfg.master.host,
            "master_port": cfg.master.port,
            "resource": cfg.master.resource,
            "job_resource": cfg.cluster.job_resource,
            "shards": cfg.master.shards,
            "tls": tuple(str(Path(p).resolve()) for p in tls) if tls else None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None or k == "dashboard_address"})
        spec = cls(**values)
        if spec.n_workers < 0 or spec.threads_per_worker < 1:
            raise ConfigError(f"n_workers must be >= 0 and threads_per_worker >= 1, got {spec.n_workers} and "
                              f"{spec.threads_per_worker}.", key="cluster.n_workers")
        return spec

    @property
    def scheme(self) -> str:
        """``tls`` when the cluster talks TLS, else ``tcp``."""
        return "tls" if self.tls else "tcp"

    @property
    def address(self) -> str:
        """The address clients connect to (``cluster="tcp://host:port"``, ``tls://`` with TLS)."""
        host = "127.0.0.1" if self.host in ALL_INTERFACES else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def _tls_args(self) -> list[str]:
        if not self.tls:
            return []
        ca, cert, key = self.tls
        return ["--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]

    # -- command lines ---------------------------------------------------------------------
    def _dask(self, command: str) -> list[str]:
        return [sys.executable, "-m", "dask", command]

    def scheduler_command(self, *, scheduler_file: str | None = None, extra: Sequence[str] = ()) -> list[str]:
        """``dask scheduler`` with the preload, at ``host:port``."""
        cmd = self._dask("scheduler") + ["--host", self.host, "--port", str(self.port), "--preload", PRELOAD]
        if self.tls:
            cmd += ["--protocol", "tls", *self._tls_args()]
        if self.dashboard_address is not None and has_dashboard():
            cmd += ["--dashboard", "--dashboard-address", self.dashboard_address]
        else:
            # No bokeh (or not wanted): Dask still serves /health and /metrics; keep it off fixed ports.
            cmd += ["--no-dashboard", "--dashboard-address", f"{self._bind_host(self.host)}:0"]
        if scheduler_file:
            cmd += ["--scheduler-file", scheduler_file]
        return cmd + list(extra)

    @staticmethod
    def _bind_host(host: str | None) -> str:
        return "" if host in ALL_INTERFACES or host is None else host

    def worker_command(self, *, master: bool = False, name: str | None = None, nworkers: int = 1,
                       scheduler_file: str | None = None, gpu: int = 0, extra: Sequence[str] = ()) -> list[str]:
        """``dask worker`` with the preload (``master``: the master worker, resource ``MASTER=1``;
        ``gpu``: offers ``GPU=<gpu>``, for the jobs of models on a CUDA device)."""
        cmd = self._dask("worker")
        cmd += ["--scheduler-file", scheduler_file] if scheduler_file else [self.address]
        cmd += ["--preload", PRELOAD, "--nthreads", str(self.threads_per_worker), "--no-dashboard"]
        if self.tls:
            cmd += ["--protocol", "tls", *self._tls_args()]
        host = (self.master_host or self.host) if master else self.host
        if host not in ALL_INTERFACES:
            cmd += ["--host", host, "--dashboard-address", f"{host}:0"]
        if nworkers != 1:
            cmd += ["--nworkers", str(nworkers)]
        name = name or ("master" if master else None)
        if name:
            cmd += ["--name", name]
        resources = [f"{self.resource}=1"] if master else []
        if self.job_resource and not master:
            resources.append(f"{self.job_resource}={self.threads_per_worker}")
        if gpu:
            resources.append(f"GPU={int(gpu)}")
        if resources:
            cmd += ["--resources", " ".join(resources)]
        if master and self.master_port:  # several master workers (shards): a range of ports
            port = str(self.master_port) if nworkers == 1 else f"{self.master_port}:{self.master_port + nworkers - 1}"
            cmd += ["--worker-port", port]
        return cmd + list(extra)
