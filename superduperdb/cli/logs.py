"""Quiet by default: Dask's loggers at WARNING in the commands that start Dask, unless -v."""

from __future__ import annotations

import logging

import click

NOISY = ("distributed", "tornado", "bokeh", "asyncio")


def quiet_dask(verbose: int) -> dict[str, str]:
    """Dask's loggers at WARNING in this process unless ``verbose`` (-v); the environment that
    does the same for the Dask processes a command starts (empty when verbose)."""
    if verbose:
        return {}
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    return {"DASK_LOGGING__DISTRIBUTED": "warning", "DASK_LOGGING__TORNADO": "warning"}


def verbosity(ctx: click.Context, own: int = 0) -> int:
    """The -v count given to ``superduperdb`` or to the command itself."""
    root = ctx.find_root()
    return own + ((root.obj or {}).get("verbose", 0) if root is not ctx else 0)
