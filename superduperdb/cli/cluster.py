"""``superduperdb local-cluster``, ``superduperdb scheduler`` and ``superduperdb worker``.

``local-cluster`` starts a whole cluster on this machine and runs until
Ctrl-C. ``scheduler`` and ``worker`` run one component each, as
supervisord (``deploy/supervisord.conf``) or a shell on another machine
would: they replace themselves with ``dask scheduler`` / ``dask worker``
configured from the config (``config.json`` in the original layout, or
``superduperdb.yaml``) with the superduperdb preload. Extra arguments after
``--`` go to Dask unchanged.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

CONFIG_HELP = "A config.json (original layout) or superduperdb.yaml; default: the usual config layers."


def _spec(config: str | None, **overrides):
    from ..cluster.spec import ClusterSpec, load_config
    from ..errors import ConfigError

    try:
        cfg = load_config(config)
        return cfg, ClusterSpec.from_config(cfg, **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("local-cluster")
@click.option("--n-workers", "-n", type=int, default=None, help="Job workers (default: cluster.n_workers, 2).")
@click.option("--threads-per-worker", type=int, default=None, help="Threads per worker (default: cluster.threads_per_worker, 1).")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@click.option("--host", default=None, help="Scheduler host (default: jobs.host, else 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Scheduler port (default: jobs.port, else 8786; 0: any free port).")
@click.option("--dashboard-address", default=":8787", show_default=True, help="Scheduler dashboard (needs bokeh).")
@click.option("--no-master", is_flag=True, help="Start no master worker (the master then runs on the first worker).")
@click.option("--log-dir", type=click.Path(file_okay=False), default=None,
              help="Write each component's log to DIR/<name>.log (default: this terminal).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for the cluster to start.")
@click.option("-v", "--verbose", count=True, help="Show the components' Dask logs (INFO) in this terminal.")
@click.pass_context
def local_cluster(ctx, n_workers, threads_per_worker, config, host, port, dashboard_address, no_master, log_dir,
                  timeout, verbose):
    """Start a scheduler, N job workers and a master worker here; stop them on Ctrl-C.

    The processes are the ones a real deployment runs (`dask scheduler` and
    `dask worker` with `--preload superduperdb.cluster.preload`; the master
    worker has the resource MASTER=1). Clients connect with
    `superduperdb.connect(uri, cluster="tcp://HOST:PORT")`, or through a
    config.json with `"remote": true` and `"jobs": {"host": ..., "port": ...}`.
    """
    from ..cluster.local import ProcessCluster
    from ..cluster.spec import has_dashboard
    from ..config import redact
    from ..errors import ClusterError
    from ..store.backends import uri_from_config

    cfg, spec = _spec(config, host=host, port=port, n_workers=n_workers,
                      threads_per_worker=threads_per_worker, dashboard_address=dashboard_address)
    uri = redact(uri_from_config(cfg))  # printed only: the workers get the real one from each job
    from .logs import quiet_dask, verbosity

    # Quiet by default: Dask's INFO lines bury the summary. With --log-dir the files keep them all.
    env = quiet_dask(verbosity(ctx, verbose)) if log_dir is None else {}
    cluster = ProcessCluster(spec, log_dir=log_dir, env=env, master=not no_master)
    try:
        cluster.start(timeout=timeout)
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        cluster.stop()
        raise click.Abort() from None
    masters = f"{spec.shards} master workers, one per shard" if spec.shards > 1 else "master worker"
    master = f" + {masters} ({spec.resource}=1)" if not no_master else ""
    click.echo(f"scheduler: {cluster.address}")
    if cluster.dashboard_link:
        click.echo(f"dashboard: {cluster.dashboard_link}  (superduperdb's page: "
                   f"{cluster.dashboard_link.rsplit('/', 1)[0]}/superduperdb; metrics: .../metrics)")
    elif not has_dashboard():
        click.echo("dashboard: none (pip install 'superduperdb[dashboard]' for Dask's dashboard and its "
                   "superduperdb page)")
    click.echo(f"workers:   {spec.n_workers} x {spec.threads_per_worker} thread(s){master}")
    for c in cluster.components:
        click.echo(f"  {c.name:10} pid {c.pid}" + (f"  log {c.log_path}" if c.log_path else ""))
    embedded = uri.startswith(("mongomock://", "file://"))
    if embedded:
        click.echo(f"database:  none usable here: the config names the embedded store ({uri}), which lives inside "
                   "one process and cannot be shared with these worker processes; point clients at a MongoDB server")
    click.echo(f"connect:   superduperdb.connect({uri if not embedded else 'mongodb://HOST:27017/'!r}, "
               f"cluster={cluster.address!r})")
    click.echo("Press Ctrl-C to stop.", nl=True)
    sys.stdout.flush()
    code = cluster.run()
    click.echo("stopped.")
    sys.exit(code)


def _exec(command: list[str], dry_run: bool) -> None:
    if dry_run:
        click.echo(shlex.join(command))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # supervisord's signals then reach Dask directly


PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command("scheduler", context_settings=PASS_THROUGH)
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@click.option("--host", default=None, help="Default: from cluster.address or jobs.host, else 127.0.0.1.")
@click.option("--port", type=int, default=None, help="Default: from cluster.address or jobs.port, else 8786.")
@click.option("--dry-run", is_flag=True, help="Print the dask command instead of running it.")
@click.argument("dask_args", nargs=-1, type=click.UNPROCESSED)
def scheduler(config, host, port, dry_run, dask_args):
    """Run `dask scheduler` (the job-master) at the config's address, with the superduperdb preload."""
    _, spec = _spec(config, host=host, port=port)
    _exec(spec.scheduler_command(extra=dask_args), dry_run)


@click.command("worker", context_settings=PASS_THROUGH)
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)
@click.option("--master", is_flag=True, help="Be the master worker (resource MASTER=1, at master.host:master.port).")
@click.option("--name", default=None, help="Worker name (default: Dask's; 'master' with --master).")
@click.option("--nthreads", type=int, default=None, help="Threads (default: cluster.threads_per_worker).")
@click.option("--gpu", "gpu", is_flag=True, help="Offer the resource GPU=1: the jobs of models on a CUDA device run here.")
@click.option("--gpus", type=int, default=None, help="Offer GPU=N (implies --gpu).")
@click.option("--dry-run", is_flag=True, help="Print the dask command instead of running it.")
@click.argument("dask_args", nargs=-1, type=click.UNPROCESSED)
def worker(config, master, name, nthreads, gpu, gpus, dry_run, dask_args):
    """Run `dask worker` (a job-worker, or with --master the master) for the config's scheduler.

    With --gpu the worker offers the resource GPU=1, which the jobs of models on a CUDA device
    request (give it as many threads as GPU jobs should run at once: --nthreads 1 is usual).
    """
    if gpus is not None and gpus < 1:
        raise click.BadParameter("must be at least 1", param_hint="--gpus")
    _, spec = _spec(config, threads_per_worker=nthreads)
    _exec(spec.worker_command(master=master, name=name, gpu=gpus or int(gpu), extra=dask_args), dry_run)


COMMANDS = (local_cluster, scheduler, worker)
