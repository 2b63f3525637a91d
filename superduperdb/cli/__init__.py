"""The ``superduperdb`` command line (also ``python -m superduperdb``).

Floor: entry points (the top). May import anything; nothing in the package imports it.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from importlib import metadata

import click

PACKAGES = ("superduperdb", "pymongo", "mongomock", "dask", "distributed", "numpy", "scikit-learn",
            "pynndescent", "torch", "sentence-transformers", "pillow", "dill")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


class _Group(click.Group):
    """Reports superduperdb's errors (bad config, unreachable server ...) as one clear line."""

    def invoke(self, ctx: click.Context):
        from ..config import redact
        from ..errors import SuperDuperError

        try:
            return super().invoke(ctx)
        except SuperDuperError as exc:
            raise click.ClickException(redact(f"{type(exc).__name__}: {exc}")) from None


@click.group(cls=_Group)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """superduperdb: AI models on the data in MongoDB, computed on a Dask cluster."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = {"verbose": verbose}



@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(as_json: bool) -> None:
    """Versions, the config in force, and what it can reach."""
    from .status import format_sections, gather_info

    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        **gather_info(),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    click.echo(f"superduperdb {report['packages']['superduperdb']} on Python {report['python']} ({report['platform']})")
    click.echo("packages:")
    for name, ver in report["packages"].items():
        click.echo(f"  {name:22} {ver or '(not installed)'}")
    for line in format_sections(report):
        click.echo(line)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object; with --watch, one per line).")
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between refreshes with --watch.")
@click.option("-d", "--database", default=None, help="Only this database, or one collection as DB.COLLECTION.")
@click.option("--no-counts", is_flag=True,
              help="Do not count each watcher's documents and outputs (two counts over the documents per watcher).")
def status(as_json: bool, watch: bool, interval: float, database: str | None, no_counts: bool) -> None:
    """The cluster's work: jobs by kind and status, each watcher's lag, indexes, latest errors.

    The same summary as the "superduperdb" page of the Dask dashboard, for the
    configured cluster (cluster.address) and database (mongodb.uri).
    """
    import time

    from .status import format_status, gather_status

    while True:
        report = gather_status(database, counts=not no_counts)
        if as_json:
            click.echo(json.dumps(report, default=str, indent=None if watch else 2))
        else:
            if watch:
                click.clear()
            click.echo("\n".join(format_status(report)))
        if not watch:
            return
        time.sleep(interval)  # the refresh period of --watch, not a synchronisation


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def config_command(as_json: bool) -> None:
    """Every config value and where it came from (passwords in URIs shown as ***)."""
    from ..config import resolve_config

    cfg = resolve_config()
    if as_json:
        click.echo(json.dumps({p: {"value": v, "source": s} for p, v, s in cfg.items()}, indent=2, default=str))
        return
    width = max(len(p) for p, _, _ in cfg.items())
    for path, value, source in cfg.items():
        click.echo(f"{path:{width}}  {json.dumps(value, default=str):30}  ({source})")


@main.command("serve")
@click.option("--host", default=None, help="Interface to listen on (default: serve.host, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default: serve.port, 8181).")
@click.option("--uri", default=None, help="MongoDB URI of the models (default: mongodb.uri of the config).")
@click.option("--ssl-certfile", default=None, type=click.Path(dir_okay=False),
              help="Serve HTTPS with this PEM certificate (default: serve.ssl_certfile).")
@click.option("--ssl-keyfile", default=None, type=click.Path(dir_okay=False),
              help="The certificate's private key (default: serve.ssl_keyfile).")
@click.option("--insecure", is_flag=True, default=None,
              help="Allow basic auth over plain HTTP on a non-loopback address (default: serve.insecure).")
def serve_command(host: str | None, port: int | None, uri: str | None, ssl_certfile: str | None,
                  ssl_keyfile: str | None, insecure: bool | None) -> None:
    """Serve registered models over HTTP or HTTPS (POST /apply_model), with basic auth from
    serve.username / serve.password (set the password with SUPERDUPERDB_SERVE__PASSWORD)."""
    import signal
    import threading

    from ..config import redact, resolve_config
    from ..server import serve
    from ..store.backends import uri_from_config

    target = uri if uri is not None else uri_from_config(resolve_config())
    if target.startswith("mongomock://"):
        raise click.ClickException(
            f"{redact(target)} is the embedded store in memory: this new process would serve an empty store, "
            "not the one of your notebook or script. Serve a folder store (--uri ./my-data, the folder given to "
            "superduperdb.connect('./my-data'), once that client is closed) or a MongoDB server "
            "(--uri mongodb://host:27017/, or mongodb.uri in the config).")
    server = serve(uri, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                   insecure=insecure or None, block=False)
    assert server is not None
    click.echo(f"model server on {server.url} for {redact(uri) if uri else 'mongodb.uri of the config'}; "
               "Ctrl-C stops it")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if not server.running:
            raise click.ClickException("the model server stopped (see the log above)")
    server.stop()
    click.echo("stopped.")


from .cluster import COMMANDS as _CLUSTER_COMMANDS  # noqa: E402  (local-cluster, scheduler, worker)
from .security import COMMANDS as _SECURITY_COMMANDS  # noqa: E402  (sign-artifacts)

for _command in (*_CLUSTER_COMMANDS, *_SECURITY_COMMANDS):
    main.add_command(_command)


def _register() -> None:
    from .demo import demo

    main.add_command(demo)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
